"""DICOMweb: the STOW-RS endpoint on the API server, and a QIDO/WADO/STOW-RS client."""
