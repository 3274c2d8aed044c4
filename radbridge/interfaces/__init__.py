"""Protocol adapters: the wire formats (HTTP, files, later MLLP, DIMSE, FHIR) and the CLI."""
