"""Errors raised while reading HL7 v2 content.

`Hl7ContentError` sits under `RadbridgeError` (see `radbridge.errors` for the tree). It
names the segment and field that is missing or wrong ("PID-3 (patient identifier) is
empty") and never quotes a value, since values may be names or birth dates: the text
ends up in delivery errors and its head in logs.
"""

from __future__ import annotations

from radbridge.errors import RadbridgeError


class Hl7ContentError(RadbridgeError):
    """The message cannot be read as what it claims to be; retrying cannot help."""

    def __init__(self, location: str, problem: str) -> None:
        self.location = location
        self.problem = problem
        super().__init__(f"{location} {problem}" if location else problem)
