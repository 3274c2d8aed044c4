"""Model cards, DICOM preprocessing and inference backends (issue 6 fills this package).

Nothing here may import `radbridge.engine` or `radbridge.interfaces`.
"""
