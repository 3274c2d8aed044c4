"""DICOM Structured Reports and Segmentations of AI results (pure functions, highdicom).

`render_sr` makes the TID 1500 Comprehensive 3D SR of an `AiResult`; `render_seg` a
Segmentation of one finding from a mask or heat map on the source images;
`render_rejection` the IOCM rejection note that withdraws them. All take the headers
they need from the caller (this package reads nothing) and derive their UIDs from the
result id and revision, so a resend carries the same SOP Instance UIDs.
"""

from radbridge.mappings.sr.errors import SrRenderError
from radbridge.mappings.sr.rejection import render_rejection
from radbridge.mappings.sr.seg import render_seg
from radbridge.mappings.sr.tid1500 import render_sr

__all__ = ["SrRenderError", "render_rejection", "render_seg", "render_sr"]
