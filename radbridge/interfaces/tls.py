"""SSL contexts from a channel's `tls` block, for listeners (MLLP, DICOM) and clients.

Paths are resolved against the data directory. A listener with `ca` and
`require_client_cert` is mutual TLS: a client without a certificate from that CA is
refused during the handshake, before a single byte of a message is read.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from radbridge.engine.config import TlsConfig
from radbridge.errors import AdapterSetupError

Resolve = Callable[[str], Path]


def server_context(config: TlsConfig, resolve: Resolve) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.cert is None or config.key is None:
        raise AdapterSetupError("a TLS listener needs tls.cert and tls.key")
    _load(context, config, resolve)
    if config.ca is not None:
        _load_ca(context, config.ca, resolve)
        context.verify_mode = (ssl.CERT_REQUIRED if config.require_client_cert
                               else ssl.CERT_OPTIONAL)
    return context


def client_context(config: TlsConfig, resolve: Resolve) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.ca is not None:
        _load_ca(context, config.ca, resolve)
    if not config.verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert is not None:
        _load(context, config, resolve)
    return context


def _load(context: ssl.SSLContext, config: TlsConfig, resolve: Resolve) -> None:
    cert, key = resolve(config.cert or ""), resolve(config.key or "")
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise AdapterSetupError(f"tls.cert {cert} / tls.key {key}: cannot load: {exc}") from exc


def _load_ca(context: ssl.SSLContext, ca: str, resolve: Resolve) -> None:
    path = resolve(ca)
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise AdapterSetupError(f"tls.ca {path}: cannot load: {exc}") from exc
