"""Errors raised by the QA building blocks.

Both sit under `RadbridgeError` (see `radbridge.errors` for the whole tree) and are also
`ValueError`s, since each means "this value cannot be used as given"::

    RadbridgeError
    └── QaError
        ├── QaConfigError   a setting (thresholds, strata, reading rules, bins, confidence)
        │                   is wrong: names the field and what was expected
        └── QaInputError    data handed to a metric cannot be used (lengths differ, a
                            negative count, a missing class): names the argument

Messages never quote report text or patient data: they end up in logs.
"""

from __future__ import annotations

from radbridge.errors import RadbridgeError


class QaError(RadbridgeError, ValueError):
    """Root of the QA errors."""


class QaConfigError(QaError):
    """A QA setting is invalid; fixing the configuration is the only cure."""

    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"{field}: expected {expected}")


class QaInputError(QaError):
    """Data given to a QA computation cannot produce a meaningful number."""

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument}: {problem}")
