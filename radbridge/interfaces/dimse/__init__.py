"""DICOM upper layer and DIMSE: our SCP (C-ECHO, C-STORE, MPPS, Storage Commitment) and
the SCU side (C-STORE destination, C-FIND, C-MOVE, C-GET)."""
