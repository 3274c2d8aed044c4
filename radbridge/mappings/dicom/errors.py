"""Errors raised while reading DICOM content.

`DicomContentError` sits under `RadbridgeError` (see `radbridge.errors` for the tree) and
is also a `ValueError`, since it always means "this value cannot be what it claims". It
names the attribute (keyword, or a path into sequences such as
``PerformedSeriesSequence[0].SeriesInstanceUID``) and the problem, and never quotes the
value: values may be names, IDs or birth dates, and the text ends up in rejection
reasons, DIMSE error comments and the head of log lines.
"""

from __future__ import annotations

from radbridge.errors import RadbridgeError


class DicomContentError(RadbridgeError, ValueError):
    """A dataset cannot be read as what it claims to be; resending it cannot help."""

    def __init__(self, attribute: str, problem: str) -> None:
        self.attribute = attribute
        self.problem = problem
        super().__init__(f"{attribute} {problem}" if attribute else problem)
