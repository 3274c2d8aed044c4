"""FHIR REST to the EHR: a small client and the `fhir` destination type."""
