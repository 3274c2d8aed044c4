"""Inference in the engine: each ready study through the models that apply to it, the
runs recorded with their findings and provenance, failures marked retryable or final."""
