"""A circuit breaker for a remote inference server.

When Triton is down, every study would otherwise wait out its connect timeout and
retries. After `failures` transient failures in a row the breaker opens: calls fail at
once with CircuitOpen (a BackendUnavailable, so the engine retries the study later)
without touching the network. After `reset_after` seconds one trial call goes through
(half-open); its success closes the breaker, its failure opens it for another period.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from radbridge.inference.backends import BackendUnavailable

T = TypeVar("T")


class CircuitOpen(BackendUnavailable):
    """The breaker is open: the call was refused without reaching the server."""


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Thread-safe; `clock` (monotonic seconds) is injectable so tests need not sleep."""

    def __init__(self, name: str, *, failures: int = 5, reset_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or reset_after <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset_after > 0")
        self.name = name
        self.failures = failures
        self.reset_after = reset_after
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._count = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> State:
        with self._lock:
            if self._state is State.OPEN and self._cooled_down():
                return State.HALF_OPEN
            return self._state

    def call(self, action: Callable[[], T]) -> T:
        """Run `action` unless the breaker is open. A BackendUnavailable it raises counts
        as a failure (unless the server answered); a result or any other error, as a
        success: the server is up."""
        self.before()
        try:
            result = action()
        except BackendUnavailable as exc:
            self.record(success=exc.server_answered)
            raise
        except Exception:
            self.record(success=True)
            raise
        except BaseException:  # interrupted: no verdict on the server
            with self._lock:
                self._trial_running = False
            raise
        self.record(success=True)
        return result

    def before(self) -> None:
        """Admit a call or raise CircuitOpen; once cooled down, admit one trial at a time."""
        with self._lock:
            if self._state is State.CLOSED:
                return
            if self._state is State.OPEN and self._cooled_down():
                self._state = State.HALF_OPEN
            if self._state is State.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return
            wait = max(0.0, self._opened_at + self.reset_after - self._clock())
            raise CircuitOpen(f"{self.name}: circuit open after {self.failures} failures "
                              f"in a row; next trial in {wait:.1f} s")

    def record(self, *, success: bool) -> None:
        with self._lock:
            self._trial_running = False
            if success:
                self._state, self._count = State.CLOSED, 0
                return
            self._count += 1
            if self._state is State.HALF_OPEN or self._count >= self.failures:
                self._state, self._opened_at = State.OPEN, self._clock()

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_after
