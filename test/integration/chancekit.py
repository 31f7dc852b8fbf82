"""Helpers for tests that drive the chance role over NestJS TCP."""

import time


def wait_batch(c, batch, timeout=120):
    """Polls chance.batch until the batch is no longer generating; returns its final state."""
    deadline = time.time() + timeout
    while batch["state"] == "generating":
        assert time.time() < deadline, "batch %d still generating: %r" % (batch["id"], batch)
        time.sleep(0.05)
        batch = c.call("chance.batch", {"id": batch["id"]})["batch"]
    return batch


def generate_ready(c, req, timeout=120):
    """chance.generate answers at once; this waits until the batch is ready and returns it."""
    batch = wait_batch(c, c.call("chance.generate", req, timeout=30)["batch"], timeout)
    assert batch["state"] == "ready", batch
    return batch
