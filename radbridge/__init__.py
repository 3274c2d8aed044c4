"""Radbridge: an HL7/FHIR integration engine with an imaging-AI extension."""

__version__ = "0.1.0"
