"""The patient/encounter/order registry, kept up to date from HL7 ADT and order messages.

`apply.apply_event` applies one parsed message (radbridge.mappings.hl7.inbound) in the
caller's transaction, with an audit event per change; `destination` is the `registry`
destination type that channels deliver to; `queries` reads the registry back.
"""
