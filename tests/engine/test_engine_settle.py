from __future__ import annotations

import pytest

from quotas.engine import Limit, Policy, Usage

from .policies import FULL, NOW, PARIS


def snapshot(engine, subject, policy, now=NOW):
    """Every limit's state as a caller would see it."""
    return engine.peek(subject, policy, now=now).states


class TestDenialChargesNothing:
    def hold(self, engine):
        granted = engine.reserve("u", FULL, tokens=900, spend=1_000_000, lease=True, now=NOW)
        assert granted.allowed
        return snapshot(engine, "u", FULL)

    @pytest.mark.parametrize(
        ("ask", "denied_by"),
        [
            ({"tokens": 200}, "tokens per day"),
            ({"spend": 4_500_000}, "spend per day"),
            ({"requests": 11}, "requests per minute"),
        ],
    )
    def test_one_limit_short(self, engine, ask, denied_by):
        before = self.hold(engine)
        denied = engine.reserve("u", FULL, lease=True, now=NOW, **ask)
        assert not denied.allowed
        assert denied.denied_by == denied_by
        assert denied.reasons == (denied_by,)
        assert snapshot(engine, "u", FULL) == before

    def test_leases_full(self, engine):
        self.hold(engine)
        for _ in range(2):
            assert engine.reserve("u", FULL, lease=True, now=NOW).allowed
        before = snapshot(engine, "u", FULL)
        denied = engine.reserve("u", FULL, tokens=50, spend=10, lease=True, now=NOW)
        assert denied.denied_by == "concurrent requests"
        assert denied.reasons == ("concurrent requests",)
        assert snapshot(engine, "u", FULL) == before

    def test_rate_bucket_empty(self, engine):
        self.hold(engine)
        for _ in range(9):
            assert engine.reserve("u", FULL, now=NOW).allowed
        before = snapshot(engine, "u", FULL)
        denied = engine.reserve("u", FULL, tokens=10, now=NOW)
        assert denied.denied_by == "requests per minute"
        assert snapshot(engine, "u", FULL) == before

    def test_every_short_limit_is_named_and_the_longest_wait_decides(self, engine):
        self.hold(engine)
        denied = engine.reserve("u", FULL, tokens=9_500, now=NOW)
        assert denied.reasons == ("tokens per day", "tokens per month")
        assert denied.denied_by == "tokens per month"
        assert denied.retry_after == denied.state("mt").reset_after

    def test_denied_state_shows_the_limits_as_they_stand(self, engine):
        self.hold(engine)
        denied = engine.reserve("u", FULL, tokens=200, now=NOW)
        assert denied.state("dt").used == 900
        assert denied.state("dr").used == 1
        assert denied.state("cc").used == 1


class TestSettle:
    def test_settle_moves_counters_by_actual_minus_reserved(self, engine):
        granted = engine.reserve("u", FULL, tokens=800, spend=4_000, lease=True, now=NOW)
        assert engine.settle(granted.reservation, tokens=300, spend=1_500)
        states = {s.code: s for s in snapshot(engine, "u", FULL)}
        assert {code: states[code].used for code in ("dr", "dt", "ds", "mr", "mt", "ms", "cc")} == {
            "dr": 1,
            "dt": 300,
            "ds": 1_500,
            "mr": 1,
            "mt": 300,
            "ms": 1_500,
            "cc": 0,
        }
        assert states["rt"].used == 300  # the token bucket got the 500 unused tokens back
        assert states["rr"].used == 1

    def test_settle_above_the_reservation_charges_the_excess(self, engine):
        granted = engine.reserve("u", FULL, tokens=800, lease=True, now=NOW)
        engine.settle(granted.reservation, tokens=950, spend=0)
        assert engine.peek("u", FULL, now=NOW).state("dt").used == 950
        assert not engine.reserve("u", FULL, tokens=100, lease=True, now=NOW).allowed
        assert engine.reserve("u", FULL, tokens=50, lease=True, now=NOW).allowed

    def test_settle_frees_budget_for_the_next_request(self, engine):
        granted = engine.reserve("u", FULL, tokens=1_000, lease=True, now=NOW)
        assert not engine.reserve("u", FULL, tokens=100, now=NOW).allowed
        engine.settle(granted.reservation, tokens=400, spend=0)
        assert engine.reserve("u", FULL, tokens=600, now=NOW).allowed

    def test_settle_can_uncount_the_request(self, engine):
        granted = engine.reserve("u", FULL, tokens=10, lease=True, now=NOW)
        engine.settle(granted.reservation, tokens=0, spend=0, requests=0)
        decision = engine.peek("u", FULL, now=NOW)
        assert decision.state("dr").used == 0
        assert decision.state("rr").used == 0

    def test_refund_gives_everything_back(self, engine):
        before = snapshot(engine, "u", FULL)
        granted = engine.reserve("u", FULL, tokens=700, spend=3_000_000, lease=True, now=NOW)
        assert snapshot(engine, "u", FULL) != before
        assert engine.refund(granted.reservation)
        assert snapshot(engine, "u", FULL) == before

    def test_refund_of_a_plain_request(self, engine):
        policy = Policy((Limit("rpm", "rr", 10, burst=1), Limit("requests per day", "dr", 5)))
        granted = engine.reserve("u", policy, now=NOW)
        assert granted.reservation.member == ""
        assert not engine.reserve("u", policy, now=NOW).allowed
        assert engine.refund(granted.reservation)
        assert engine.peek("u", policy, now=NOW).state("dr").used == 0
        assert engine.reserve("u", policy, now=NOW).allowed

    def test_reservation_records_what_it_holds(self, engine):
        decision = engine.reserve("u:7", FULL, requests=2, tokens=50, spend=9, lease=True, now=NOW)
        reservation = decision.reservation
        assert (reservation.subject, reservation.requests, reservation.tokens) == ("u:7", 2, 50)
        assert reservation.spend == 9
        assert (reservation.day.label, reservation.month.label) == ("20240612", "202406")
        assert reservation.day == decision.day
        assert reservation.id and reservation.member.startswith(reservation.id)


class TestPeek:
    def test_peek_charges_nothing(self, engine):
        for _ in range(20):
            peeked = engine.peek("u", FULL, now=NOW)
            assert peeked.allowed
            assert peeked.reservation is None
        assert all(state.used == 0 for state in peeked.states)
        assert [engine.reserve("u", FULL, now=NOW).allowed for _ in range(11)] == [True] * 10 + [
            False
        ]

    def test_peek_sees_what_reserve_charged(self, engine):
        engine.reserve("u", FULL, tokens=123, spend=456, lease=True, now=NOW)
        peeked = engine.peek("u", FULL, now=NOW)
        assert [peeked.state(code).used for code in ("dt", "ds", "mt", "ms", "cc")] == [
            123,
            456,
            123,
            456,
            1,
        ]
        assert peeked.state("dt").remaining == 877
        assert snapshot(engine, "u", FULL) == peeked.states


class TestUsageTotals:
    def test_totals_include_a_granted_ask(self, engine):
        policy = Policy((Limit("rpm", "rr", 60),), time_zone=PARIS)  # no window limit
        engine.reserve("u", policy, tokens=100, spend=7, now=NOW)
        decision = engine.reserve("u", policy, requests=2, tokens=50, spend=3, now=NOW)
        assert decision.day_usage == Usage(requests=3, tokens=150, spend=10)
        assert decision.month_usage == Usage(requests=3, tokens=150, spend=10)
        assert engine.peek("u", policy, now=NOW).day_usage == decision.day_usage

    def test_totals_exclude_a_denied_ask(self, engine):
        engine.reserve("u", FULL, tokens=900, now=NOW)
        denied = engine.reserve("u", FULL, tokens=200, now=NOW)
        assert not denied.allowed
        assert denied.day_usage == Usage(requests=1, tokens=900)

    def test_month_totals_span_days(self, engine):
        engine.reserve("u", FULL, tokens=10, now=NOW)
        decision = engine.reserve("u", FULL, tokens=20, now=NOW + 86_400)
        assert decision.day_usage.tokens == 20
        assert decision.month_usage.tokens == 30
