"""The engine on a Redis Cluster: run with QUOTAS_TEST_REDIS_URL=redis+cluster://...

`python -m tests.redis_cluster start` starts one on loopback; elsewhere these tests skip.
"""

from __future__ import annotations

import pytest

from quotas.engine import CountersUnavailable, Limit, Policy, Usage, connect, current_windows

POLICY = Policy(
    (
        Limit("requests per day", "dr", 100),
        Limit("tokens per day", "dt", 1_000),
        Limit("concurrent", "cc", 2),
    )
)
NOW = 1_718_186_400.0  # 2024-06-12 10:00 UTC


@pytest.fixture
def cluster(redis_url):
    if not (redis_url or "").split("://")[0].endswith("+cluster"):
        pytest.skip("needs QUOTAS_TEST_REDIS_URL=redis+cluster://...")


def subjects_on_every_node(engine) -> list[str]:
    """User subjects whose keys live on different masters, one per master."""
    found: dict[str, str] = {}
    for i in range(1, 200):
        node = engine.client.get_node_from_key(engine.state_key(f"u:{i}")).name
        found.setdefault(node, f"u:{i}")
    assert len(found) >= 3
    return list(found.values())


def test_every_subject_lives_in_one_slot_on_any_node(cluster, engine):
    for subject in subjects_on_every_node(engine):
        first = engine.reserve(subject, POLICY, tokens=600, lease=True, now=NOW)
        second = engine.reserve(subject, POLICY, tokens=300, lease=True, now=NOW)
        assert not engine.reserve(subject, POLICY, tokens=100, lease=True, now=NOW).allowed
        assert engine.settle(first.reservation, tokens=200, spend=5)
        assert engine.refund(second.reservation)
        peeked = engine.peek(subject, POLICY, now=NOW)
        assert peeked.day_usage == Usage(requests=1, tokens=200, spend=5)
        assert peeked.state("cc").used == 0

        keys = engine.subject_keys(subject)
        assert [key.rsplit(":", 1)[-1] for key in keys] == ["state"]  # every lease given back
        assert len({engine.client.keyslot(key) for key in keys}) == 1


def test_missing_windows_are_seeded_on_the_subjects_node(cluster, engine):
    day, _ = current_windows(int(NOW * 1_000_000), "UTC")
    ledger = {"d": Usage(requests=4, tokens=950), "m": Usage(requests=9, tokens=5_000)}
    for subject in subjects_on_every_node(engine):
        denied = engine.reserve(
            subject, POLICY, tokens=100, now=NOW, seeder=lambda _s, w: ledger[w.kind]
        )
        assert denied.denied_by == "tokens per day"
        assert denied.month_usage.tokens == 5_000
        assert engine.seed(subject, day, Usage(tokens=1)) is False


def test_scripts_are_loaded_again_on_nodes_that_lost_them(cluster, engine):
    subjects = subjects_on_every_node(engine)
    engine.client.script_flush()  # as after a failover to a replica with an empty cache
    for subject in subjects:
        assert engine.reserve(subject, POLICY, tokens=10, now=NOW).allowed


def test_the_policy_version_is_shared(cluster, engine):
    before = engine.policy_version()
    assert engine.bump_policy_version() == before + 1
    assert engine.policy_version() == before + 1


def test_an_unreachable_cluster_means_counters_unavailable():
    # A cluster client connects at once; FAIL_OPEN needs the same error a plain client gives.
    with pytest.raises(CountersUnavailable, match="Redis Cluster cannot be connected"):
        connect("redis+cluster://127.0.0.1:1/0")


def test_many_first_reservations_at_once_on_a_new_async_client(cluster, redis_url):
    import asyncio

    from quotas.engine.aio import AsyncQuotaEngine, connect_async
    from tests.event_loop import run_in_fresh_loop

    async def run():
        engine = AsyncQuotaEngine(connect_async(redis_url), prefix="test")
        try:
            return await asyncio.gather(
                *(
                    engine.reserve(f"u:{i % 7}", POLICY, tokens=1, now=NOW, watch=("upstream:m",))
                    for i in range(80)
                ),
                return_exceptions=True,
            )
        finally:
            await engine.close()

    answers = run_in_fresh_loop(run())
    assert [a for a in answers if isinstance(a, BaseException)] == []
