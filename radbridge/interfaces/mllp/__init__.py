"""MLLP (HL7 v2 minimal lower layer protocol): framing, the listener, the sender."""
