"""DICOM translations without I/O: datasets to index records, checks, de-identification."""
