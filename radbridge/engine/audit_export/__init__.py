"""Audit for compliance: queries, the study-to-report cycle, and exports of the ledger.

    queries.py     filters over the ledger, keyset pages, streaming in either order
    cycle.py       one study's received instances, orders, inference, outputs with their
                   deliveries, and human views, in time order
    events.py      a ledger event as every exporter sees it
    codes.py       the coded values (DICOM DCM, RFC 3881, our private scheme)
    event_map.py   our actions in the standards' terms, and who took part
    atna.py        DICOM audit message XML (PS3.15 A.5.1), as IHE ATNA sends it
    fhir_audit.py  FHIR R4 AuditEvent (IHE BALP)
    formats.py     CSV, JSON, NDJSON, FHIR and ATNA streams for the API and the CLI
    syslog.py      RFC 5424 messages over UDP (RFC 5426) and TLS (RFC 5425)
    forwarder.py   store-and-forward: follows the ledger with a cursor per destination
"""
