"""Retry policy of one destination: when to try again, and when to give up.

The waits come from tenacity's strategies (exponential backoff plus random jitter);
the decision to dead-letter combines the attempt bound with the maximum age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import RetryCallState, wait_exponential, wait_random

from radbridge.engine.config import QueuePolicy


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    next_attempt_at: datetime | None
    reason: str


class RetryPolicy:
    """Backoff and dead-letter rules built from a destination's QueuePolicy."""

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy = policy
        backoff = policy.backoff
        self._wait = wait_exponential(
            multiplier=backoff.initial, exp_base=backoff.multiplier, max=backoff.max
        ) + wait_random(0, backoff.jitter)

    def wait_seconds(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempt)
        return float(self._wait(state))

    def after_failure(
        self, *, attempt: int, created_at: datetime, now: datetime, permanent: bool
    ) -> RetryDecision:
        """Retry later, or dead-letter: permanent errors, attempts used up, or too old."""
        if permanent:
            return RetryDecision(False, None, "permanent failure")
        if attempt >= self.policy.max_attempts:
            return RetryDecision(False, None, f"{attempt} attempts used (max_attempts)")
        next_at = now + timedelta(seconds=self.wait_seconds(attempt))
        if self.policy.max_age is not None and next_at - created_at > timedelta(
            seconds=self.policy.max_age
        ):
            return RetryDecision(False, None, "older than max_age")
        return RetryDecision(True, next_at, "will retry")
