"""Defects the proof suite found, each pinned by a test that failed before its fix.

The fixtures are test/integration/conftest.py's (shared_fixtures.export_fixtures re-exports them
here).
"""

import threading

import cluster  # noqa: F401  (puts test/integration on sys.path)
from gwclient import Stack, pg_query, redis_codes
from shared_fixtures import export_fixtures

export_fixtures(globals(), "output_dir", "test_output_dir", "chanced_bin", "redis_url",
                "postgres_url", "redis_client", "fresh_postgres_url", "amqp_queue", "chanced")


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
