"""HL7 v2: reading what arrives and building what we send, as pure functions."""
