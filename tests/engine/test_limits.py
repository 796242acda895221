from __future__ import annotations

import pytest

from quotas.engine import Decision, Limit, LimitState, Policy


class TestLimit:
    def test_unknown_code(self):
        with pytest.raises(ValueError, match="Unknown limit code 'dx'"):
            Limit("tokens", "dx", 10)

    @pytest.mark.parametrize("code", ["rr", "rt", "dr", "dt", "ds", "mr", "mt", "ms", "cc"])
    def test_negative_amount(self, code):
        with pytest.raises(ValueError, match="must not be negative"):
            Limit("limit", code, -1)

    @pytest.mark.parametrize("code", ["dr", "dt", "ds", "mr", "mt", "ms", "cc"])
    def test_zero_blocks_but_is_valid_for_windows_and_concurrency(self, code):
        assert Limit("blocked", code, 0).amount == 0

    def test_rate_needs_an_amount(self):
        with pytest.raises(ValueError, match="at least 1"):
            Limit("rpm", "rr", 0)

    @pytest.mark.parametrize("burst", [0, -3])
    def test_rate_burst_below_one(self, burst):
        with pytest.raises(ValueError, match="burst of at least 1"):
            Limit("rpm", "rr", 10, burst=burst)

    @pytest.mark.parametrize("interval", [0, -60.0])
    def test_rate_interval_must_be_positive(self, interval):
        with pytest.raises(ValueError, match="positive interval"):
            Limit("rpm", "rt", 10, interval=interval)

    def test_rate_capacity_is_the_burst_or_the_amount(self):
        assert Limit("rpm", "rr", 10).capacity == 10
        assert Limit("rpm", "rr", 10, burst=25).capacity == 25
        assert Limit("rpm", "rr", 10, burst=1).capacity == 1

    def test_emission_interval(self):
        assert Limit("rpm", "rr", 60).emission_interval_us == 1_000_000
        assert Limit("rph", "rr", 10, interval=3600).emission_interval_us == 360_000_000
        assert Limit("tpm", "rt", 7).emission_interval_us == pytest.approx(60e6 / 7)

    def test_is_rate(self):
        assert Limit("a", "rr", 1).is_rate
        assert Limit("b", "rt", 1).is_rate
        assert not any(Limit("c", code, 1).is_rate for code in ("dr", "mt", "ms", "cc"))

    def test_immutable(self):
        limit = Limit("rpm", "rr", 10)
        with pytest.raises(AttributeError):
            limit.amount = 20  # type: ignore[misc]


class TestPolicy:
    def test_duplicate_codes(self):
        with pytest.raises(ValueError, match=r"repeated: \['dt'\]"):
            Policy((Limit("a", "dt", 10), Limit("b", "dr", 5), Limit("c", "dt", 20)))

    def test_limit_by_code(self):
        day = Limit("tokens per day", "dt", 1000)
        policy = Policy((Limit("rpm", "rr", 10), day))
        assert policy.limit("dt") is day
        assert policy.limit("mt") is None

    def test_uses_windows(self):
        rate_only = (Limit("rpm", "rr", 10),)
        assert Policy(rate_only).uses_windows  # usage is tracked by default
        assert not Policy(rate_only, track_usage=False).uses_windows
        assert Policy((Limit("mt", "mt", 10),), track_usage=False).uses_windows
        assert Policy((Limit("dr", "dr", 10),), track_usage=False).uses_windows

    def test_defaults(self):
        policy = Policy()
        assert policy.limits == ()
        assert policy.time_zone == "UTC"
        assert policy.rehydrate


def test_decision_state_by_code():
    state = LimitState("tokens per day", "dt", 100, 40, 60, 3600.0)
    decision = Decision(allowed=True, denied_by=None, retry_after=0, now_us=0, states=(state,))
    assert decision.state("dt") is state
    assert decision.state("rr") is None


def test_made_is_the_frozen_instance_the_constructor_makes():
    from dataclasses import FrozenInstanceError

    from quotas.engine.limits import Usage, made

    usage = made(Usage, {"requests": 1, "tokens": 2, "spend": 3})
    assert usage == Usage(1, 2, 3)
    assert hash(usage) == hash(Usage(1, 2, 3))
    with pytest.raises(FrozenInstanceError):
        usage.tokens = 5  # type: ignore[misc]


def test_a_decisions_states_are_as_given_or_worked_out_once_when_read():
    from quotas.engine.limits import made

    state = LimitState("rpm", "rr", 10, 1, 9, 6.0)
    calls = []

    def work(*args):
        calls.append(args)
        return [state]

    given = Decision(True, None, 0.0, 1, states=(state,))
    lazy = made(Decision, {**vars(Decision(True, None, 0.0, 1)), "_states_from": (work, (1, 2))})
    lazy.__dict__.pop("_states")
    assert calls == []
    assert lazy.states == (state,) and lazy.state("rr") == state
    assert lazy == given
    assert calls == [(1, 2)]  # once
