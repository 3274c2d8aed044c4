"""The rules of an `alerts` channel source, as its YAML writes them.

Each rule has defaults that suit a small site, and `enabled: false` to turn it off
(its open incidents then resolve). Figures are what people read on a dashboard:
seconds and counts, no scores that need explaining.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from radbridge.engine.units import Duration


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class ErrorRateRule(_Rule):
    """Failed share of a destination's delivery attempts (or of a channel's processed
    messages: filter and transformer errors) over the last `window`."""

    window: Duration = Field(default=300.0, gt=0)
    threshold: float = Field(default=0.5, gt=0, le=1)
    """Failed / all, from 0 to 1: 0.5 raises when half the attempts failed."""
    min_attempts: int = Field(default=10, ge=1)
    """Fewer attempts in the window raise nothing (one failure of two is not a rate)."""


class QueueAgeRule(_Rule):
    """A destination's oldest pending delivery waits longer than `max_age`."""

    max_age: Duration = Field(default=600.0, gt=0)


class DeadLettersRule(_Rule):
    """A destination dead-lettered deliveries in the last `window`. New dead letters
    while the incident is open are part of it; a `window` without any resolves it."""

    window: Duration = Field(default=3600.0, gt=0)


class PeerDownRule(_Rule):
    """`failures` delivery attempts in a row could not connect to a peer (as this node
    sees it: the incident names the node)."""

    failures: int = Field(default=3, ge=1, le=10_000)


class DriftRule(_Rule):
    """Each drift alert of the QA monitor (`qa.drift.alert` in the audit ledger) is an
    incident until the period it was found in has ended."""
