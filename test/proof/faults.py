"""The faults of the proof suite, one per scenario: inject() while the load runs, heal() after
`hold` seconds.  FAULTS lists them all (`make proof`); SHORT is the subset `make test` runs.

Roles are killed (SIGKILL) and restarted, or stopped (SIGSTOP) and continued, one instance at a
time: its twin keeps serving.  They are also crashed at failpoints: the gateway between chance's
assignment and the credit, chance's relay between the broker's confirm and XACK, the logger
between MongoDB's insert and the broker ack.  Servers: Redis killed
(it reloads its AOF, appendfsync everysec) or rolled back to a snapshot taken seconds earlier
(what a crash losing its last second of writes, or a failover to a lagging replica, leaves);
PostgreSQL shut down immediately (SIGQUIT: no checkpoint, crash recovery on start); RabbitMQ
killed; Redis stopped.  The logger is killed ten times in a row over a standing backlog.  The
proxy (proxy.py) sits on gateway→chance A, gateway→logger A and chance A→RabbitMQ.
"""

import os
import signal
import time

from cluster import integration_conftest


class Fault:
    def __init__(self, name, inject, heal, hold=3.0, what=""):
        self.name = name
        self.inject = inject
        self.heal = heal
        self.hold = hold
        self.what = what

    def __repr__(self):
        return self.name


def _server(name):
    return integration_conftest().Server(name)


def _alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


# -- roles ----------------------------------------------------------------------------------

def kill_role(name):
    def inject(c):
        c.daemons[name].kill(signal.SIGKILL)

    def heal(c):
        c.daemons[name].start()
    return Fault("kill %s" % name, inject, heal, what="SIGKILL, restart")


def stop_role(name):
    def inject(c):
        c.pause(c.daemons[name].pid)

    def heal(c):
        c.resume(c.daemons[name].pid)
    return Fault("stop %s" % name, inject, heal, what="SIGSTOP, SIGCONT")


def failpoint(name, point):
    """Restart the instance armed with CHANCED_FAILPOINT=point: it crashes when it gets there
    (gateway: roles/gateway/gw.c; relay and logger: src/failpoint.c), stays down for the hold,
    then comes back unarmed."""
    def inject(c):
        d = c.daemons[name]
        d.stop()
        d.extra_env = {"CHANCED_FAILPOINT": point}
        d.start()

    def heal(c):
        d = c.daemons[name]
        crashed = not d.running()
        if crashed:
            d.wait_exit()
        else:
            d.kill(signal.SIGKILL)  # it never got there: crash it anyway
        d.extra_env = {}
        d.start()
        if not crashed:
            raise AssertionError("%s never reached failpoint %s" % (name, point))
    return Fault("%s at failpoint %s" % (name, point), inject, heal,
                 what="crash at the failpoint, restart")


def logger_crash_loop(times=10):
    """Both loggers down while the load runs (a backlog in the queue and the outbox), then
    logger A started and killed `times` times while it drains, then both back."""
    def inject(c):
        c.daemons["logger-b"].kill(signal.SIGKILL)
        c.daemons["logger-a"].kill(signal.SIGKILL)
        time.sleep(2.0)  # the backlog builds
        d = c.daemons["logger-a"]
        d.keys["test_ack_delay_ms"] = 300  # so that a kill lands between insert and ack
        for _ in range(times):
            d.start()
            time.sleep(0.6)
            d.kill(signal.SIGKILL)
        d.keys["test_ack_delay_ms"] = None

    def heal(c):
        c.daemons["logger-a"].start()
        c.daemons["logger-b"].start()
    return Fault("logger killed %d times over a backlog" % times, inject, heal, hold=0.5,
                 what="both down, then A killed %d times while draining" % times)


# -- servers --------------------------------------------------------------------------------

def redis_kill():
    def inject(c):
        c.redis.proc.kill()
        c.redis.proc.wait(10)

    def heal(c):
        c.restart_redis()
    return Fault("kill redis", inject, heal, what="SIGKILL, restart from its AOF")


def redis_stop():
    def inject(c):
        c.pause(c.redis.proc.pid)

    def heal(c):
        c.resume(c.redis.proc.pid)
    return Fault("stop redis", inject, heal, what="SIGSTOP, SIGCONT")


def redis_lost_writes():
    """An atomic snapshot of every chance key (MULTI of DUMPs), and `hold` seconds later an
    atomic return to it (MULTI of DELs and RESTOREs): the last seconds of writes are lost, as
    after a crash with appendfsync everysec or a failover to a lagging replica."""
    snap = {}

    def inject(c):
        r = c.redis_client(decode=False)
        keys = list(r.scan_iter(match=b"chance:*", count=1000))
        p = r.pipeline(transaction=True)
        for k in keys:
            p.dump(k)
        snap.clear()
        snap.update((k, v) for k, v in zip(keys, p.execute()) if v is not None)

    def heal(c):
        r = c.redis_client(decode=False)
        now = list(r.scan_iter(match=b"chance:*", count=1000))
        p = r.pipeline(transaction=True)
        for k in now:
            if k not in snap:
                p.delete(k)
        for k, v in snap.items():
            p.restore(k, 0, v, replace=True)
        p.execute()
    return Fault("redis loses its last 2 s", inject, heal, hold=2.0,
                 what="snapshot, then the snapshot restored")


def postgres_immediate():
    def inject(c):
        pid = _server("postgres").pid()
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown: no checkpoint
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def heal(c):
        _server("postgres").start()
    return Fault("postgres immediate shutdown", inject, heal, what="SIGQUIT, start")


def rabbitmq_kill():
    def inject(c):
        _server("rabbitmq").kill()

    def heal(c):
        _server("rabbitmq").start()
    return Fault("kill rabbitmq", inject, heal, what="SIGKILL, start")


def proxy(link, mode, arg=None, hold=3.0):
    def inject(c):
        c.proxy.set(link, mode, arg)

    def heal(c):
        c.proxy.set(link, "pass")
    label = mode if arg is None else "%s %d ms" % (mode, arg)
    return Fault("proxy %s: %s" % (link, label), inject, heal, hold=hold,
                 what="TCP proxy on the link")


FAULTS = [
    failpoint("gateway-a", "after_assign_before_credit"),
    failpoint("chance-a", "relay_after_publish_before_xack@3"),
    failpoint("logger-a", "logger_after_insert_before_ack@2"),
    kill_role("gateway-a"), kill_role("chance-a"), kill_role("logger-a"),
    stop_role("gateway-a"), stop_role("chance-a"), stop_role("logger-a"),
    redis_kill(), redis_lost_writes(), redis_stop(),
    postgres_immediate(), rabbitmq_kill(),
    logger_crash_loop(10),
    proxy("chance-a", "delay", 300), proxy("chance-a", "slice"), proxy("chance-a", "cut"),
    proxy("chance-a", "reset"), proxy("chance-a", "blackhole"),
    proxy("logger-a", "cut"), proxy("logger-a", "blackhole"),
    proxy("amqp-a", "slice"), proxy("amqp-a", "cut"), proxy("amqp-a", "reset"),
    proxy("amqp-a", "blackhole", hold=4.0),
]

# `make test`: every invariant through a crash at a failpoint, a dead chance, lost Redis
# writes, a link cut mid-frame and the logger crash loop
SHORT = ["gateway-a at failpoint after_assign_before_credit", "kill chance-a",
         "redis loses its last 2 s", "proxy chance-a: cut", "logger killed 10 times over a backlog"]
