"""The circuit breaker opens after N transient failures in a row, fails fast while open,
lets one trial through after the cool-down, and ignores errors the server answered."""

from __future__ import annotations

import pytest

from radbridge.inference.backends import BackendError, BackendUnavailable
from radbridge.inference.breaker import CircuitBreaker, CircuitOpen, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def down() -> None:
    raise BackendUnavailable("connection refused")


def test_opens_after_consecutive_transient_failures_and_fails_fast():
    clock = Clock()
    breaker = CircuitBreaker("triton", failures=3, reset_after=10.0, clock=clock)
    calls = []

    def counted() -> str:
        calls.append(1)
        return "ok"

    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            breaker.call(down)
    assert breaker.state is State.CLOSED
    with pytest.raises(BackendUnavailable):
        breaker.call(down)
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpen, match=r"next trial in 10\.0 s"):
        breaker.call(counted)
    assert calls == []  # failing fast: the action never ran


def test_a_success_resets_the_count_and_answered_errors_are_not_failures():
    breaker = CircuitBreaker("triton", failures=2, clock=Clock())
    with pytest.raises(BackendUnavailable):
        breaker.call(down)
    assert breaker.call(lambda: 7) == 7
    with pytest.raises(BackendUnavailable):
        breaker.call(down)

    def refused() -> None:
        raise BackendError("400: bad input")  # the server answered: it is up

    with pytest.raises(BackendError):
        breaker.call(refused)
    with pytest.raises(BackendUnavailable):
        breaker.call(down)
    assert breaker.state is State.CLOSED


def test_half_open_trial_closes_on_success_and_reopens_on_failure():
    clock = Clock()
    breaker = CircuitBreaker("triton", failures=1, reset_after=5.0, clock=clock)
    with pytest.raises(BackendUnavailable):
        breaker.call(down)
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: None)
    clock.now += 0.1
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(BackendUnavailable):
        breaker.call(down)  # the trial failed: open for another period
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: None)
    clock.now += 5.0
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state is State.CLOSED


def test_only_one_trial_at_a_time_while_half_open():
    clock = Clock()
    breaker = CircuitBreaker("triton", failures=1, reset_after=1.0, clock=clock)
    with pytest.raises(BackendUnavailable):
        breaker.call(down)
    clock.now += 1.0
    breaker.before()  # the trial is admitted and still running
    with pytest.raises(CircuitOpen):
        breaker.before()
    breaker.record(success=True)
    breaker.before()
    assert breaker.state is State.CLOSED


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="failures >= 1"):
        CircuitBreaker("x", failures=0)


def test_a_server_that_answers_model_not_ready_is_not_a_failure():
    class Loading(BackendUnavailable):
        server_answered = True

    def loading() -> None:
        raise Loading("model still loading")

    breaker = CircuitBreaker("triton", failures=1, clock=Clock())
    with pytest.raises(Loading):
        breaker.call(loading)
    assert breaker.state is State.CLOSED
