from __future__ import annotations

import time

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    RedisClusterException,
)

from quotas.engine import CountersUnavailable, Limit, Policy, QuotaEngine, connect

from .policies import FULL, NOW, PARIS

NY = "America/New_York"


def rate(amount, *, burst=None, interval=60.0, code="rr"):
    return Policy((Limit("rate", code, amount, burst=burst, interval=interval),), track_usage=False)


class TestRate:
    def test_burst_passes_at_once_then_one_per_emission_interval(self, engine):
        policy = rate(10, burst=5)  # one every 6 s, 5 at once
        assert all(engine.reserve("u", policy, now=NOW).allowed for _ in range(5))

        denied = engine.reserve("u", policy, now=NOW)
        assert not denied.allowed
        assert denied.denied_by == "rate"
        assert denied.retry_after == 6.0
        assert denied.reservation is None

        assert not engine.reserve("u", policy, now=NOW + 5.999).allowed
        assert engine.reserve("u", policy, now=NOW + 6).allowed
        again = engine.reserve("u", policy, now=NOW + 6)
        assert not again.allowed
        assert again.retry_after == 6.0

    def test_refill_is_capped_at_the_burst(self, engine):
        policy = rate(10, burst=5)
        for _ in range(5):
            engine.reserve("u", policy, now=NOW)
        later = NOW + 3600
        assert [engine.reserve("u", policy, now=later).allowed for _ in range(6)] == [True] * 5 + [
            False
        ]

    def test_partial_refill(self, engine):
        policy = rate(10, burst=5)
        for _ in range(5):
            engine.reserve("u", policy, now=NOW)
        # 13 s later two slots came back (one per 6 s); the third is 5 s away.
        assert engine.reserve("u", policy, now=NOW + 13).allowed
        assert engine.reserve("u", policy, now=NOW + 13).allowed
        third = engine.reserve("u", policy, now=NOW + 13)
        assert not third.allowed
        assert third.retry_after == 5.0

    def test_without_burst_the_amount_passes_at_once(self, engine):
        policy = rate(3)
        assert [engine.reserve("u", policy, now=NOW).allowed for _ in range(4)] == [True] * 3 + [
            False
        ]

    def test_remaining_and_reset_count_down(self, engine):
        policy = rate(10, burst=4)
        states = [engine.reserve("u", policy, now=NOW).state("rr") for _ in range(4)]
        assert [(s.limit, s.used, s.remaining) for s in states] == [
            (4, 1, 3),
            (4, 2, 2),
            (4, 3, 1),
            (4, 4, 0),
        ]
        # The bucket is full again one emission interval per slot taken.
        assert [s.reset_after for s in states] == [6.0, 12.0, 18.0, 24.0]

    def test_fractional_emission_interval_keeps_the_whole_burst(self, engine):
        policy = rate(7)  # 7 a minute: one every 8.571428... s
        decisions = [engine.reserve("u", policy, now=NOW) for _ in range(8)]
        assert [d.allowed for d in decisions] == [True] * 7 + [False]
        assert [d.state("rr").remaining for d in decisions[:7]] == [6, 5, 4, 3, 2, 1, 0]
        assert decisions[-1].retry_after == pytest.approx(60 / 7, abs=1e-4)
        wait = decisions[-1].retry_after
        assert engine.reserve("u", policy, now=NOW + wait).allowed
        assert not engine.reserve("u", policy, now=NOW + wait).allowed

    def test_token_rate_charges_the_tokens_asked(self, engine):
        policy = rate(6_000, code="rt")  # 100 tokens a second
        assert engine.reserve("u", policy, tokens=4_000, now=NOW).allowed
        denied = engine.reserve("u", policy, tokens=3_000, now=NOW)
        assert not denied.allowed
        assert denied.retry_after == 10.0  # 1,000 tokens short at 100 a second
        assert engine.reserve("u", policy, tokens=2_000, now=NOW).allowed
        assert engine.reserve("u", policy, tokens=1_000, now=NOW + 10).allowed

    def test_subjects_have_separate_buckets(self, engine):
        policy = rate(10, burst=1)
        assert engine.reserve("u:1", policy, now=NOW).allowed
        assert engine.reserve("u:2", policy, now=NOW).allowed
        assert not engine.reserve("u:1", policy, now=NOW).allowed


WINDOW_CASES = [
    ("dr", {"requests": 1}),
    ("dt", {"tokens": 400}),
    ("ds", {"spend": 250_000}),
    ("mr", {"requests": 1}),
    ("mt", {"tokens": 400}),
    ("ms", {"spend": 250_000}),
]


class TestWindows:
    @pytest.mark.parametrize(("code", "ask"), WINDOW_CASES)
    def test_last_minute_of_the_month_then_local_midnight(self, engine, local_time, code, ask):
        amount = 3 * max(ask.values())
        policy = Policy((Limit("budget", code, amount),), time_zone=NY)
        last_minute = local_time(NY, 2024, 1, 31, 23, 59)

        granted = [engine.reserve("u", policy, now=last_minute, **ask) for _ in range(3)]
        assert all(d.allowed for d in granted)
        assert granted[-1].state(code).remaining == 0

        denied = engine.reserve("u", policy, now=last_minute, **ask)
        assert not denied.allowed
        assert denied.denied_by == "budget"
        assert denied.retry_after == 60.0  # until local midnight
        # 04:59:59 UTC on 1 February: still 31 January in New York.
        assert not engine.reserve("u", policy, now=last_minute + 59.999, **ask).allowed

        midnight = local_time(NY, 2024, 2, 1)
        fresh = engine.reserve("u", policy, now=midnight, **ask)
        assert fresh.allowed
        assert fresh.state(code).used == max(ask.values())

    @pytest.mark.parametrize(("code", "ask"), WINDOW_CASES[3:])
    def test_month_budget_outlives_the_day(self, engine, local_time, code, ask):
        policy = Policy((Limit("budget", code, max(ask.values())),), time_zone=PARIS)
        assert engine.reserve("u", policy, now=local_time(PARIS, 2024, 3, 15, 9), **ask).allowed
        for day in (16, 31):
            later = local_time(PARIS, 2024, 3, day, 23, 59, 59)
            assert not engine.reserve("u", policy, now=later, **ask).allowed
        assert engine.reserve("u", policy, now=local_time(PARIS, 2024, 4, 1), **ask).allowed

    @pytest.mark.parametrize(("code", "ask"), WINDOW_CASES[:3])
    def test_day_budget_renews_at_local_midnight_not_utc(self, engine, local_time, code, ask):
        policy = Policy((Limit("budget", code, max(ask.values())),), time_zone=PARIS)
        late = local_time(PARIS, 2024, 6, 12, 23, 30)
        assert engine.reserve("u", policy, now=late, **ask).allowed
        paris_midnight = local_time(PARIS, 2024, 6, 13)  # 22:00 UTC
        assert not engine.reserve("u", policy, now=paris_midnight - 1, **ask).allowed
        assert engine.reserve("u", policy, now=paris_midnight, **ask).allowed

    @pytest.mark.parametrize(
        ("day", "hours"), [((2024, 3, 10), 23), ((2024, 11, 3), 25), ((2024, 11, 4), 24)]
    )
    def test_dst_day_lasts_its_real_length(self, engine, local_time, day, hours):
        policy = Policy((Limit("requests per day", "dr", 1),), time_zone=NY)
        start = local_time(NY, *day)
        assert engine.reserve("u", policy, now=start).allowed
        denied = engine.reserve("u", policy, now=start + 1)
        assert denied.retry_after == hours * 3600 - 1
        end_of_day = start + hours * 3600
        assert not engine.reserve("u", policy, now=end_of_day - 0.001).allowed
        assert engine.reserve("u", policy, now=end_of_day).allowed

    def test_zero_amount_blocks(self, engine):
        policy = Policy((Limit("tokens per day", "dt", 0),))
        assert engine.reserve("u", policy, now=NOW).allowed  # asks no tokens
        assert not engine.reserve("u", policy, tokens=1, now=NOW).allowed

    def test_state_reports_usage_and_reset(self, engine, local_time):
        policy = Policy((Limit("tokens per day", "dt", 1_000),), time_zone=PARIS)
        now = local_time(PARIS, 2024, 6, 12, 18)
        state = engine.reserve("u", policy, tokens=300, now=now).state("dt")
        assert (state.limit, state.used, state.remaining) == (1_000, 300, 700)
        assert state.reset_after == 6 * 3600


class TestConcurrency:
    policy = Policy((Limit("concurrent requests", "cc", 2),))

    def test_n_in_flight_then_denied_until_one_settles(self, engine):
        first = engine.reserve("u", self.policy, lease=True, now=NOW)
        second = engine.reserve("u", self.policy, lease=True, now=NOW)
        assert first.allowed and second.allowed
        assert second.state("cc").used == 2

        third = engine.reserve("u", self.policy, lease=True, now=NOW + 1)
        assert not third.allowed
        assert third.denied_by == "concurrent requests"
        assert 0 < third.retry_after <= 1.0

        assert engine.settle(first.reservation, tokens=0, spend=0)
        assert engine.reserve("u", self.policy, lease=True, now=NOW + 1).allowed
        assert not engine.reserve("u", self.policy, lease=True, now=NOW + 1).allowed

    def test_refund_releases_the_slot(self, engine):
        leases = [engine.reserve("u", self.policy, lease=True, now=NOW) for _ in range(2)]
        assert engine.refund(leases[1].reservation)
        assert engine.peek("u", self.policy, now=NOW).state("cc").used == 1
        assert engine.reserve("u", self.policy, lease=True, now=NOW).allowed

    def test_an_unsettled_lease_expires_by_itself(self, engine):
        policy = Policy((Limit("concurrent requests", "cc", 1),))
        assert engine.reserve("u", policy, lease=True, lease_seconds=30, now=NOW).allowed
        almost = engine.reserve("u", policy, lease=True, lease_seconds=30, now=NOW + 29.5)
        assert not almost.allowed
        assert almost.retry_after == 0.5  # the lease's expiry is nearer than a second
        assert engine.peek("u", policy, now=NOW + 30).state("cc").used == 0
        assert engine.reserve("u", policy, lease=True, lease_seconds=30, now=NOW + 30).allowed

    def test_a_request_without_lease_takes_no_slot(self, engine):
        policy = Policy((Limit("concurrent requests", "cc", 1),))
        assert all(engine.reserve("u", policy, now=NOW).allowed for _ in range(3))
        assert engine.reserve("u", policy, lease=True, now=NOW).allowed
        assert engine.reserve("u", policy, now=NOW).allowed
        assert not engine.reserve("u", policy, lease=True, now=NOW).allowed

    def test_zero_blocks_every_lease(self, engine):
        policy = Policy((Limit("concurrent requests", "cc", 0),))
        denied = engine.reserve("u", policy, lease=True, now=NOW)
        assert not denied.allowed
        assert denied.retry_after == 1.0


def test_every_key_of_a_subject_hashes_to_one_slot(engine):
    engine.reserve("u:42", FULL, tokens=10, spend=10, lease=True, now=NOW)
    engine.reserve("u:42", FULL, tokens=5_000, now=NOW)  # denied: counts a denial
    engine.reserve("u:4", FULL, lease=True, now=NOW)
    keys = engine.subject_keys("u:42")
    assert sorted(keys) == ["test:{u:42}:lease", "test:{u:42}:state"]
    assert {key_slot(key.encode()) for key in keys} == {key_slot(b"u:42")}
    assert all("{u:4}" in key for key in engine.subject_keys("u:4"))


@pytest.mark.parametrize("ask", [{"requests": -1}, {"tokens": -5}, {"spend": -1}])
def test_negative_asks_are_refused(engine, ask):
    with pytest.raises(ValueError, match="negative"):
        engine.reserve("u", FULL, now=NOW, **ask)
    assert engine.subject_keys("u") == []


def test_real_clock_when_no_time_is_given(engine):
    decision = engine.reserve("u", FULL, tokens=1)
    assert decision.allowed
    assert decision.now_us > NOW * 1_000_000
    assert engine.peek("u", FULL).state("dt").used == 1


def test_policy_version(engine):
    assert engine.policy_version() == 0
    assert engine.bump_policy_version() == 1
    assert engine.policy_version() == 1


class TestRedisUnavailable:
    @pytest.mark.parametrize(
        "error",
        [
            # As redis-py raises them: the reply's code is stripped from the message.
            ClusterDownError("The cluster is down"),
            MasterDownError("Link with MASTER is down and replica-serve-stale-data is no"),
            BusyLoadingError("Redis is loading the dataset in memory"),
            RedisClusterException("Redis Cluster cannot be connected."),
            redis.TimeoutError("Timeout reading from socket"),
        ],
        ids=type,
    )
    def test_outage_errors_become_counters_unavailable(self, engine, monkeypatch, error):
        granted = engine.reserve("u", FULL, tokens=10, lease=True, now=NOW)

        def fail(*args, **kwargs):
            raise error

        monkeypatch.setattr(engine.client, "evalsha", fail)
        with pytest.raises(CountersUnavailable):
            engine.reserve("u", FULL, now=NOW)
        with pytest.raises(CountersUnavailable):
            engine.peek("u", FULL, now=NOW)
        with pytest.raises(CountersUnavailable):
            engine.settle(granted.reservation, tokens=5, spend=0)

    def test_unreachable_server(self):
        engine = QuotaEngine(connect("redis://127.0.0.1:1/0"), prefix="test")
        with pytest.raises(CountersUnavailable):
            engine.reserve("u", FULL, now=NOW)
        with pytest.raises(CountersUnavailable):
            engine.policy_version()

    def test_other_errors_are_not_disguised(self, engine, redis_client):
        redis_client.set("test:{u}:state", "not a hash")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            engine.reserve("u", FULL, now=NOW)


def test_a_hold_refuses_every_reservation_until_it_expires(engine):
    policy = Policy((Limit("per_day", "dr", 100),), time_zone="UTC")
    engine.hold("held", 0.3)
    engine.hold("held", 0.1)  # a shorter hold does not cut the longer one
    denied = engine.reserve("held", policy)
    assert not denied.allowed
    assert denied.denied_by == "hold"
    assert 0.1 < denied.retry_after <= 0.3
    assert engine.peek("held", policy).day_usage.requests == 0  # nothing charged
    assert engine.reserve("other", policy).allowed  # only that subject is held
    time.sleep(0.35)
    assert engine.hold_remaining("held") == 0
    assert engine.reserve("held", policy).allowed


def test_holds_of_watched_subjects_come_back_with_the_decision(engine):
    policy = Policy((Limit("per_day", "dr", 100),), time_zone="UTC")
    engine.hold("provider", 0.5)
    decision = engine.reserve("u", policy, watch=("provider", "idle"))
    assert decision.allowed  # the caller's own limits decide; the caller reads the hold
    assert 0.3 < decision.watched_hold <= 0.5
    assert engine.reserve("u", policy, watch=("idle",)).watched_hold == 0
    assert engine.reserve("u", policy).watched_hold == 0
    assert engine.peek("u", policy).day_usage.requests == 3


def test_a_watching_reservation_loads_its_script_again_after_a_flush(engine):
    policy = Policy((Limit("per_day", "dr", 2),), time_zone="UTC")
    assert engine.reserve("u", policy, watch=("provider",)).allowed
    engine.client.script_flush()
    assert engine.reserve("u", policy, watch=("provider",)).allowed
    assert not engine.reserve("u", policy, watch=("provider",)).allowed  # charged once each


def test_a_hold_that_cannot_be_read_leaves_the_reservation_standing(engine, monkeypatch):
    if isinstance(engine.client, redis.cluster.RedisCluster):  # read after, on its own
        monkeypatch.setattr(engine.client, "pttl", _node_down)
    else:
        real = engine.client.pipeline

        def pipeline(*args, **kwargs):
            pipe = real(*args, **kwargs)
            execute = pipe.execute

            def answers(raise_on_error=True):
                reply, *ttls = execute(raise_on_error=raise_on_error)
                return [reply, *(redis.ConnectionError("node down") for _ in ttls)]

            pipe.execute = answers
            return pipe

        monkeypatch.setattr(engine.client, "pipeline", pipeline)
    policy = Policy((Limit("per_day", "dr", 5), Limit("slots", "cc", 1)), time_zone="UTC")
    decision = engine.reserve("u", policy, lease=True, watch=("provider",))
    assert decision.allowed
    assert decision.watched_hold is None  # unknown: the caller checks the provider itself
    monkeypatch.undo()
    assert engine.settle(decision.reservation, tokens=0, spend=0)
    assert engine.peek("u", policy).state("cc").used == 0


def _node_down(*args):
    raise redis.ConnectionError("node down")


class TestState:
    """A subject's rate, day and month live in one hash, for as long as they are needed."""

    def test_it_lives_until_the_month_ends_plus_the_grace(self, engine, redis_client, local_time):
        now = local_time(PARIS, 2024, 6, 12, 10)
        engine.reserve("u", FULL, tokens=10, now=now)
        month_end = local_time(PARIS, 2024, 7, 1)
        lives = redis_client.pttl(engine.state_key("u")) / 1000
        assert month_end + 86_400 - now - 1 <= lives <= month_end + 86_400 - now + 1

    def test_a_rate_alone_lives_until_its_bucket_is_full_again(self, engine, redis_client):
        engine.reserve("u", rate(10, interval=60.0), requests=3, now=NOW)
        assert 17_000 <= redis_client.pttl(engine.state_key("u")) <= 18_002

    def test_a_rate_does_not_cut_the_life_of_the_months_counters(self, engine, redis_client):
        engine.reserve("u", FULL, tokens=10, now=NOW)
        engine.reserve("u", rate(10), now=NOW)
        assert redis_client.pttl(engine.state_key("u")) > 86_400_000
        assert engine.peek("u", FULL, now=NOW).state("mt").used == 10

    def test_a_new_day_counts_from_zero_and_keeps_the_month(self, engine, local_time):
        policy = Policy(FULL.limits, time_zone=PARIS, rehydrate=False)
        engine.reserve("u", policy, tokens=700, now=local_time(PARIS, 2024, 6, 12, 23, 59))
        engine.reserve("u", policy, tokens=800, now=local_time(PARIS, 2024, 6, 12, 23, 59))  # no
        fresh = engine.reserve("u", policy, tokens=800, now=local_time(PARIS, 2024, 6, 13))
        assert fresh.allowed
        assert (fresh.state("dt").used, fresh.state("mt").used) == (800, 1_500)
        assert fresh.day_usage.requests == 1

    def test_a_late_settle_corrects_the_month_and_leaves_the_new_day_alone(
        self, engine, local_time
    ):
        before = engine.reserve(
            "u", FULL, tokens=900, lease=True, now=local_time(PARIS, 2024, 6, 12, 23, 59)
        )
        after = local_time(PARIS, 2024, 6, 13, 0, 1)
        engine.reserve("u", FULL, tokens=50, now=after)
        assert engine.settle(before.reservation, tokens=300, spend=0)
        peeked = engine.peek("u", FULL, now=after)
        assert (peeked.state("dt").used, peeked.state("mt").used) == (50, 350)
        assert peeked.state("cc").used == 0


@pytest.mark.parametrize("tokens", [10, 5_000])  # granted, refused by the day
def test_a_decision_carries_every_field(engine, tokens):
    from dataclasses import fields

    from quotas.engine import Decision, Level, Reservation

    team = Level("team", "u:9/t", Policy((Limit("tokens per day", "dt", 100_000),)))
    decision = engine.reserve("u:9", FULL, tokens=tokens, lease=True, now=NOW, levels=(team,))
    # Every field is there (the states worked out when read), as the constructor makes it.
    assert Decision(**{f.name: getattr(decision, f.name) for f in fields(Decision)}) == decision
    assert decision.allowed == (tokens == 10)
    if decision.reservation is not None:
        assert set(vars(decision.reservation)) == {f.name for f in fields(Reservation)}
        assert decision.reservation.levels == (("u:9/t", ()),)
    else:
        assert decision.denied_by == "tokens per day"
    assert decision.state("mt").used == (10 if decision.allowed else 0)
    assert [s.name for s in decision.states][-1] == "team.tokens per day"
    assert decision.level_subjects == {"team": "u:9/t"}
