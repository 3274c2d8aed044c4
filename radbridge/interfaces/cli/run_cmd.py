"""`radbridge run`: deploy channels and serve the API until SIGTERM/SIGINT.

With no --config it deploys the channels shipped in radbridge/channels/default. On a
signal it stops accepting, drains deliveries in flight and exits 0; a second SIGINT
stops at once (what was acknowledged is still safe in the store).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from radbridge.channels import DEFAULT_DIR
from radbridge.engine.config import ChannelConfig
from radbridge.engine.config_loader import load_channels
from radbridge.engine.node_control import NodeControl
from radbridge.engine.runtime import Node, Role
from radbridge.engine.settings import OidcSettings, Settings
from radbridge.errors import AdapterSetupError, ConfigError
from radbridge.interfaces.api import create_app
from radbridge.interfaces.api_support import ApiContext
from radbridge.interfaces.auth.bootstrap import check_api_security, prepare_auth
from radbridge.interfaces.auth.errors import AuthError
from radbridge.interfaces.cli.audit_cmd import add_syslog_options_to, with_syslog
from radbridge.interfaces.cli.common import add_store_options_to
from radbridge.interfaces.cli.json_logs import use_json_logs
from radbridge.interfaces.cli.split import ProcessingChild, exit_with_parent

log = logging.getLogger("radbridge")

PROCESS_ROLE_POLL = 0.02
"""Seconds between looks for new messages in a node that does not receive them itself."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="deploy channels and serve the API")
    parser.add_argument("--config", "-c", action="append", type=Path, default=[],
                        metavar="PATH", help="channel file or folder (repeatable; default: "
                        "the shipped default channels)")
    add_store_options_to(parser)
    parser.add_argument("--host", help="API bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="API port (default 8080)")
    parser.add_argument("--node-id", help="this node's name in leases and the audit ledger "
                        "(default host:port; keep it stable across restarts)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds to let sends in flight finish at shutdown")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="json: one JSON object per line (time, level, logger, "
                        "message, node); default text")
    parser.add_argument("--role", choices=["all", "ingest", "process"], default="all",
                        help="all (default); ingest: sources and the API only; process: "
                        "pipelines and deliveries only, no API")
    parser.add_argument("--split", action="store_true",
                        help="use two cores: sources and the API here, pipelines and "
                        "deliveries in a supervised child process on the same store")
    _add_api_security_options(parser)
    add_syslog_options_to(parser)
    parser.set_defaults(handler=_run)


def _add_api_security_options(parser: argparse.ArgumentParser) -> None:
    """TLS for the API and OIDC bearer tokens (API tokens are always on)."""
    parser.add_argument("--api-tls-cert", metavar="PEM", help="serve the API over HTTPS with "
                        "this certificate chain (default $RADBRIDGE_API_TLS_CERT)")
    parser.add_argument("--api-tls-key", metavar="PEM", help="its private key "
                        "(default $RADBRIDGE_API_TLS_KEY)")
    parser.add_argument("--oidc-issuer", help="accept OIDC bearer JWTs from this issuer "
                        "(default $RADBRIDGE_OIDC_ISSUER; none: API tokens only)")
    parser.add_argument("--oidc-audience", help="the audience they must name "
                        "($RADBRIDGE_OIDC_AUDIENCE)")
    parser.add_argument("--oidc-jwks-url", metavar="URL", help="the issuer's JWKS "
                        "($RADBRIDGE_OIDC_JWKS_URL)")
    parser.add_argument("--oidc-public-key", metavar="PEM", help="or its public key "
                        "($RADBRIDGE_OIDC_PUBLIC_KEY)")
    parser.add_argument("--oidc-role-claim", metavar="CLAIM", help="the claim with the "
                        "role(s), a dotted path for nested ones (default radbridge_role)")


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = tuple(args.config) or (DEFAULT_DIR,)
    try:
        channels = load_channels(list(paths))
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"radbridge run: {len(exc.issues)} config problem(s); nothing started",
              file=sys.stderr)
        return 1
    settings = Settings.resolve(
        data_dir=args.data_dir, database_url=args.database_url, api_host=args.host,
        api_port=args.port, node_id=args.node_id,
        api_tls_cert=args.api_tls_cert, api_tls_key=args.api_tls_key,
        oidc=OidcSettings.resolve(
            issuer=args.oidc_issuer, audience=args.oidc_audience, jwks_url=args.oidc_jwks_url,
            public_key=args.oidc_public_key, role_claim=args.oidc_role_claim),
    )
    if args.log_format == "json":
        use_json_logs(settings.node_id)
    try:
        check_api_security(settings)
    except (AuthError, AdapterSetupError) as exc:
        print(f"radbridge run: {exc}; nothing started", file=sys.stderr)
        return 1
    settings = with_syslog(settings, args)
    import radbridge.interfaces.adapters  # noqa: F401  (registers file, http, directory)

    if args.role == "process":
        asyncio.run(_serve_processing(settings, channels, args.drain_timeout))
        return 0
    child = (ProcessingChild(settings, list(paths), args.drain_timeout, args.log_level,
                             args.log_format) if args.split else None)
    role: Role = "ingest" if child is not None else args.role
    asyncio.run(_serve(settings, channels, args.drain_timeout, role, child, paths))
    return 0


async def _serve_processing(settings: Settings, channels: list[ChannelConfig],
                            drain_timeout: float) -> None:
    """Role "process": no API, no sources; runs until SIGTERM/SIGINT."""
    node = Node(settings, channels, drain_timeout=drain_timeout, role="process",
                poll_interval=PROCESS_ROLE_POLL)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    log.info("processing node %s on store %s", settings.node_id, node.database.dialect)
    watchdog = asyncio.create_task(exit_with_parent(stop))
    try:
        await stop.wait()
    finally:
        watchdog.cancel()
        await node.stop()


async def _serve(settings: Settings, channels: list[ChannelConfig], drain_timeout: float,
                 role: Role, child: ProcessingChild | None,
                 config_paths: tuple[Path, ...] = ()) -> None:
    node = Node(settings, channels, drain_timeout=drain_timeout, role=role)
    await node.start()
    if child is not None:
        child.start()
    context = ApiContext(
        database=node.database, blobs=node.blobs, channels=node.channels,
        node_id=settings.node_id, inline_limit=settings.inline_limit,
        is_ready=lambda: node.ready, receive=node.receive, wake=node.wake,
        control=NodeControl(node, config_paths),
        auth=await asyncio.to_thread(prepare_auth, settings, node.database,
                                     chain=f"{settings.node_id}/api"),
    )
    server = _Server(uvicorn.Config(
        create_app(context), host=settings.api_host, port=settings.api_port,
        log_level="warning", lifespan="on", log_config=None,
        ssl_certfile=settings.api_tls_cert, ssl_keyfile=settings.api_tls_key,
    ))
    scheme = "https" if settings.api_tls_cert is not None else "http"
    log.info("API on %s://%s:%d, data in %s, store %s", scheme, settings.api_host,
             settings.api_port, settings.data_dir, node.database.dialect)
    try:
        await server.serve()
    finally:
        await node.stop()
        if child is not None:
            await child.stop()


class _Server(uvicorn.Server):
    """uvicorn re-raises the signal after serving, which would kill the drain: not here."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Over TLS, idle keep-alive connections are dropped at once: closing one waits for
        the client's close_notify, which an idle client never sends (30 s of drain lost)."""
        if self.config.is_ssl:
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                transport = getattr(connection, "transport", None)
                if transport is not None and (cycle is None or cycle.response_complete):
                    transport.abort()
        await super().shutdown(sockets)
