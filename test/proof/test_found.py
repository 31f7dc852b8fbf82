"""Defects the proof suite found, each pinned by a test that failed before its fix.

The fixtures are test/integration/conftest.py's (loaded by cluster.integration_conftest under a
module name of their own, re-exported here).
"""

import threading

from cluster import integration_conftest
from gwclient import Stack, pg_query, redis_codes

_it = integration_conftest()
output_dir = _it.output_dir
test_output_dir = _it.test_output_dir
chanced_bin = _it.chanced_bin
redis_url = _it.redis_url
postgres_url = _it.postgres_url
redis_client = _it.redis_client
fresh_postgres_url = _it.fresh_postgres_url
amqp_queue = _it.amqp_queue
chanced = _it.chanced


def test_same_key_at_the_limit_is_one_claim_not_a_refusal(chanced, chanced_bin,
                                                          fresh_postgres_url, redis_client):
    """The same Idempotency-Key sent several times at once by a user one below the limit: one
    claim, so every answer is 201 with the same code.  Before the fix, the credits raced: the
    first took the last slot of claim_counts, the others' statement (whose ledger guard had
    looked before that commit) saw the user at the limit, gave the credited code back to Redis's
    free set and answered 409 user_limit_reached for a claim that was credited."""
    s = Stack(chanced, chanced_bin, fresh_postgres_url, with_logger=False,
              reconcile_verify_delay_ms=600000)  # Redis must be right without the tail check
    cat = s.generate(1, 200, per_user_limit=1)["categories"][0]
    answers = []
    for u in range(12):
        user = s.signup()
        got = []

        def claim():
            r = user.claim(cat, key="same")
            got.append((r.status, (r.json or {}).get("code"), r.code))
        threads = [threading.Thread(target=claim) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        answers.append(got)
    for got in answers:
        assert len(set(got)) == 1 and got[0][0] == 201, got
    ledger = pg_query(s.postgres_url, "SELECT code, claim_id FROM ledger")
    codes = redis_codes(redis_client)
    for code, claim in ledger:
        assert (codes[code]["status"], codes[code]["claim_id"]) == ("assigned", claim)
