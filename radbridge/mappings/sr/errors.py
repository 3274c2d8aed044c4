"""The one error DICOM SR and SEG rendering raises.

`SrRenderError` sits under `RadbridgeError` (see `radbridge.errors`) and is a
`ValueError`: the result and the images it is rendered against do not fit together (a
finding placed on an image the model did not read, a mask of the wrong size, no evidence
at all), so resending cannot help. Messages name UIDs and fields, never patient data.
"""

from __future__ import annotations

from radbridge.errors import RadbridgeError


class SrRenderError(RadbridgeError, ValueError):
    """An AI result cannot be rendered as DICOM SR or SEG against these images."""
