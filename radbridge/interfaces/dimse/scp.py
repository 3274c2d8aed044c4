"""The `dimse` source: an asyncio DICOM SCP for C-ECHO, C-STORE, MPPS, Storage Commitment.

One task per association runs the acceptor side of the upper layer state machine
(PS3.8 9.2): A-ASSOCIATE-RQ -> AC or RJ, then P-DATA-TF until A-RELEASE-RQ (-> RP),
an A-ABORT, or a protocol error (-> A-ABORT). Data PDVs of a C-STORE go straight into
the instance's blob file; every message is answered only after `receive` returned.
An association quiet for `idle_timeout` is aborted; one over `max_associations` is
rejected (transient, local limit exceeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass

from radbridge.engine import audit
from radbridge.engine.adapters import AdapterContext, source_type
from radbridge.engine.blobstore import BlobWriter
from radbridge.engine.config import DimseSource
from radbridge.errors import AdapterSetupError, StoreError, StoreUnavailable
from radbridge.interfaces.dimse import commands, pdu
from radbridge.interfaces.dimse.association import (
    AcceptedContext,
    Association,
    Policy,
    Rejection,
    busy,
    negotiate,
)
from radbridge.interfaces.dimse.commands import Command, Status
from radbridge.interfaces.dimse.normalized import Normalized, NormalizedReply
from radbridge.interfaces.dimse.pdu import AbortReason, AbortSource, PeerClosed, UpperLayerError
from radbridge.interfaces.dimse.storage import InstanceUpload, Sender
from radbridge.interfaces.tls import server_context

log = logging.getLogger(__name__)

SOCKET_BUFFER = 4 * 1024 * 1024
REJECT_LINGER = 2.0
"""Seconds to wait for the requester to close after an A-ASSOCIATE-RJ."""
MAX_BUFFERED_DATA_SET = 64 * 1024 * 1024
"""Largest N-CREATE/N-SET/N-ACTION data set kept in memory (they are a few kB)."""


class DimseScp:
    """One channel's SCP; `port` is the bound port once started (0 picks one)."""

    def __init__(self, channel: str, config: DimseSource, context: AdapterContext) -> None:
        self.channel = channel
        self.config = config
        self.context = context
        self.policy = Policy(config.ae_title, frozenset(config.allowed_calling_aes),
                             tuple(config.transfer_syntaxes), config.max_pdu)
        self.normalized = Normalized(channel, context,
                                     {peer.ae_title: peer for peer in config.commitment_peers})
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._associations: set[asyncio.Task[None]] = set()
        self._spares: set[asyncio.Future[BlobWriter]] = set()

    @property
    def associations(self) -> int:
        return len(self._associations)

    async def start(self) -> None:
        tls: ssl.SSLContext | None = None
        if self.config.tls is not None:
            tls = server_context(self.config.tls, self.context.resolve)
        try:
            sock = _listening_socket(self.config.host, self.config.port)
            self._server = await asyncio.start_server(
                self._accept, sock=sock, ssl=tls, limit=max(self.config.max_pdu, 1 << 20) * 2)
        except OSError as exc:
            raise AdapterSetupError(
                f"channel {self.channel}: cannot listen on {self.config.host}:"
                f"{self.config.port}: {exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("channel %s: DICOM SCP %s listening on %s:%d%s", self.channel,
                 self.config.ae_title, self.config.host, self.port, " (TLS)" if tls else "")

    async def stop(self) -> None:
        """Stop accepting and end the open associations (their unfinished stores are lost,
        and were never acknowledged)."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._associations):
            task.cancel()
        await asyncio.gather(*self._associations, return_exceptions=True)
        await asyncio.gather(*self._spares, return_exceptions=True)
        await self.normalized.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    def discard_when_made(self, spare: asyncio.Future[BlobWriter]) -> None:
        """Remove a blob file opened ahead for an association that ended, once the worker
        thread has made it (stop waits for these, so none is left behind)."""
        self._spares.add(spare)
        spare.add_done_callback(self._discard)

    def _discard(self, spare: asyncio.Future[BlobWriter]) -> None:
        self._spares.discard(spare)
        if not spare.cancelled() and spare.exception() is None:
            spare.result().abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:  # not reachable: the server runs each connection as a task
            return
        raw = writer.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        peer_ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        full = len(self._associations) >= self.config.max_associations
        self._associations.add(task)
        try:
            await AssociationTask(self, reader, writer, peer_ip, full).run()
        except asyncio.CancelledError:
            pass
        finally:
            self._associations.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening socket with large buffers (set before listen, so the TCP
    window of accepted connections scales to them)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Pending:
    """A request whose data set is arriving."""

    command: Command
    context: AcceptedContext
    upload: InstanceUpload | None = None
    buffered: bytearray | None = None


class AssociationTask:
    """One association, acceptor side; see the module docstring."""

    def __init__(self, scp: DimseScp, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer_ip: str, full: bool) -> None:
        self.scp = scp
        self.reader = reader
        self.writer = writer
        self.peer_ip = peer_ip
        self._full = full
        self._max_read = scp.config.max_pdu + pdu.PDU_SLACK if scp.config.max_pdu else 0
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._busy = False
        self._idle = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._command = bytearray()
        self._command_context = 0
        self._pending: _Pending | None = None
        self._spare: asyncio.Future[BlobWriter] | None = None
        """The next instance's blob file, opened in a worker thread ahead of its C-STORE
        (creating a file can wait on the journal while another thread fsyncs)."""
        self.association: Association | None = None
        self.sender: Sender | None = None

    async def run(self) -> None:
        channel = self.scp.channel
        self._arm(self.scp.config.idle_timeout)
        try:
            if await self._associate():
                await self._serve()
        except UpperLayerError as exc:
            log.warning("channel %s: aborting association from %s: %s", channel,
                        self.peer_ip, exc)
            self.writer.write(pdu.a_abort(AbortSource.SERVICE_PROVIDER, exc.reason))
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.drain()
        except PeerClosed:
            if self._idle:
                log.info("channel %s: aborted idle association from %s", channel, self.peer_ip)
            else:
                log.info("channel %s: association from %s closed without release", channel,
                         self.peer_ip)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("channel %s: association from %s ended: %s", channel, self.peer_ip,
                     type(exc).__name__)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self._pending is not None and self._pending.upload is not None:
                self._pending.upload.abort()
            if self._spare is not None:
                self.scp.discard_when_made(self._spare)
                self._spare = None

    def _arm(self, delay: float) -> None:
        self._watchdog = self._loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        """Abort an association without a PDU for idle_timeout (not while we work)."""
        timeout = self.scp.config.idle_timeout
        quiet = self._loop.time() - self._last
        if self._busy or quiet < timeout:
            self._arm(max(timeout - quiet, 0.05) if not self._busy else timeout)
            return
        self._idle = True
        with contextlib.suppress(Exception):
            self.writer.write(pdu.a_abort(AbortSource.SERVICE_PROVIDER))
        transport = self.writer.transport
        transport.abort()
        self.reader.feed_eof()

    async def _associate(self) -> bool:
        pdu_type, body = await pdu.read_pdu(self.reader, pdu.ASSOCIATE_LIMIT)
        if pdu_type != pdu.A_ASSOCIATE_RQ:
            raise UpperLayerError(f"expected A-ASSOCIATE-RQ, got PDU type {pdu_type}",
                                  AbortReason.UNEXPECTED_PDU)
        outcome: tuple[Association, bytes] | Rejection
        if self._full:
            outcome = busy(self.scp.config.max_associations)
        else:
            outcome = negotiate(pdu.pdu(pdu_type, body), self.scp.policy)
        if isinstance(outcome, Rejection):
            log.warning("channel %s: association from %s rejected: %s", self.scp.channel,
                        self.peer_ip, outcome.why)
            self.writer.write(outcome.encode())
            await self.writer.drain()
            await self._audit_rejection(outcome, body)
            await self._await_close()
            return False
        self.association, accept = outcome
        self.sender = Sender(self.scp.channel, self.association.calling_ae, self.peer_ip)
        self.writer.write(accept)
        await self.writer.drain()
        log.info("channel %s: association from %s (%s) accepted, %d contexts",
                 self.scp.channel, self.association.calling_ae, self.peer_ip,
                 len(self.association.contexts))
        if self.association.refused:
            await self._audit(audit.AuditRecord(
                action="dicom.contexts-refused", outcome="failure", channel=self.scp.channel,
                actor=f"dimse:{self.association.calling_ae}@{self.peer_ip}",
                detail={"refused": [{"abstract_syntax": syntax, "result": result}
                                    for syntax, result in self.association.refused]}))
        return True

    async def _audit_rejection(self, rejection: Rejection, body: bytes) -> None:
        """A refused association is an audit event (who tried, why); a store that cannot
        record it does not change the answer."""
        calling = body[20:36].decode("ascii", "replace").strip() if len(body) >= 36 else "?"
        await self._audit(audit.AuditRecord(
            action="dicom.association-rejected", actor=f"dimse:{calling}@{self.peer_ip}",
            outcome="failure", channel=self.scp.channel,
            detail={"reason": rejection.why, "result": rejection.result,
                    "source": rejection.source, "diagnostic": rejection.reason}))

    async def _audit(self, event: audit.AuditRecord) -> None:
        """Append an event of the association itself (not of a message)."""
        try:
            await asyncio.to_thread(audit.append_now, self.scp.context.database, [event],
                                    f"{self.scp.context.node_id}/dimse")
        except StoreError as exc:
            log.warning("channel %s: could not record %s: %s", self.scp.channel,
                        event.action, type(exc).__name__)

    async def _await_close(self) -> None:
        """After A-ASSOCIATE-RJ the requester closes the connection (PS3.8 9.2.3): closing
        first can lose the RJ in flight, and the peer then sees an abort instead."""
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(self.reader.read(4096), timeout=REJECT_LINGER)

    async def _serve(self) -> None:
        reader, max_read = self.reader, self._max_read
        while True:
            pdu_type, body = await pdu.read_pdu(reader, max_read)
            self._last = self._loop.time()
            if pdu_type == pdu.P_DATA_TF:
                for pdv in pdu.iter_pdvs(body):
                    if pdv.is_command:
                        await self._command_fragment(pdv)
                    else:
                        await self._data_fragment(pdv)
            elif pdu_type == pdu.A_RELEASE_RQ:
                self.writer.write(pdu.a_release_rp())
                await self.writer.drain()
                return
            elif pdu_type == pdu.A_ABORT:
                log.info("channel %s: association from %s aborted by the peer",
                         self.scp.channel, self.peer_ip)
                return
            else:
                raise UpperLayerError(f"unexpected PDU type {pdu_type} in an association",
                                      AbortReason.UNEXPECTED_PDU)

    def _context(self, context_id: int) -> AcceptedContext:
        assert self.association is not None
        context = self.association.contexts.get(context_id)
        if context is None:
            raise UpperLayerError(f"PDV on presentation context {context_id}, not accepted")
        return context

    async def _command_fragment(self, pdv: pdu.Pdv) -> None:
        if self._pending is not None:
            raise UpperLayerError("a command fragment arrived inside a data set",
                                  AbortReason.UNEXPECTED_PDU)
        if self._command and pdv.context_id != self._command_context:
            raise UpperLayerError("command fragments on two presentation contexts")
        self._command_context = pdv.context_id
        self._command += pdv.data
        if not pdv.is_last:
            return
        command = commands.decode(bytes(self._command))
        self._command.clear()
        context = self._context(pdv.context_id)
        if command.command_field & 0x8000 or command.command_field == commands.C_CANCEL_RQ:
            return  # a response (to our N-EVENT-REPORT) or a cancel: nothing to answer
        if not command.has_data_set:
            await self._dispatch(command, context, None)
        elif command.command_field == commands.C_STORE_RQ:
            assert self.sender is not None
            upload = InstanceUpload(command, context, self.sender, self.scp.context,
                                    self.scp.config.max_instance_size,
                                    writer=await self._next_writer())
            self._pending = _Pending(command, context, upload=upload)
        else:
            self._pending = _Pending(command, context, buffered=bytearray())

    async def _next_writer(self) -> BlobWriter | StoreUnavailable:
        """This C-STORE's blob file (the spare), and the next one started."""
        blobs = self.scp.context.blobs
        spare = self._spare or asyncio.ensure_future(asyncio.to_thread(blobs.writer))
        self._spare = asyncio.ensure_future(asyncio.to_thread(blobs.writer))
        try:
            # Shielded: cancelling the association (node stop) must not cancel the
            # worker's task, whose file would then be made with nobody left to remove it.
            return await asyncio.shield(spare)
        except StoreUnavailable as exc:
            return exc
        except asyncio.CancelledError:
            self.scp.discard_when_made(spare)
            raise

    async def _data_fragment(self, pdv: pdu.Pdv) -> None:
        pending = self._pending
        if pending is None or pdv.context_id != pending.context.context_id:
            raise UpperLayerError("a data fragment without its command",
                                  AbortReason.UNEXPECTED_PDU)
        if pending.upload is not None:
            pending.upload.feed(pdv.data)
        elif pending.buffered is not None:
            if len(pending.buffered) + len(pdv.data) > MAX_BUFFERED_DATA_SET:
                raise UpperLayerError("an N-service data set larger than "
                                      f"{MAX_BUFFERED_DATA_SET} bytes")
            pending.buffered += pdv.data
        if pdv.is_last:
            self._pending = None
            await self._dispatch(pending.command, pending.context, pending)

    async def _dispatch(self, command: Command, context: AcceptedContext,
                        pending: _Pending | None) -> None:
        """Handle one complete request and send its response; a handler that fails
        unexpectedly costs the peer a failure status, not the association."""
        self._busy = True
        try:
            try:
                await self._handle(command, context, pending)
            except Exception:
                log.exception("channel %s: request %d from %s failed", self.scp.channel,
                              command.message_id, self.peer_ip)
                self._reply(context, commands.response(
                    command, Status.PROCESSING_FAILURE, comment="internal error"))
            await self.writer.drain()
        finally:
            self._busy = False
            self._last = self._loop.time()

    async def _handle(self, command: Command, context: AcceptedContext,
                      pending: _Pending | None) -> None:
        field = command.command_field
        if pending is not None and pending.upload is not None:
            status, comment = await pending.upload.finish()
            self._reply(context, commands.response(command, status, comment=comment))
        elif field == commands.C_ECHO_RQ:
            self._reply(context, commands.response(command, Status.SUCCESS))
        elif field in (commands.N_CREATE_RQ, commands.N_SET_RQ, commands.N_ACTION_RQ):
            data = bytes(pending.buffered or b"") if pending is not None else b""
            assert self.sender is not None and self.association is not None
            reply = await self.scp.normalized.handle(command, context, data, self.sender,
                                                     self.association)
            self._send_normalized(context, command, reply)
        else:
            self._reply(context, commands.response(
                command, Status.UNRECOGNIZED_OPERATION,
                comment="operation not supported by this SCP"))

    def _send_normalized(self, context: AcceptedContext, command: Command,
                         reply: NormalizedReply) -> None:
        self._reply(context, reply.response)
        if reply.event is not None:
            event_command, event_data = reply.event
            self._reply(context, event_command)
            self._reply(context, event_data, is_command=False)

    def _reply(self, context: AcceptedContext, message: bytes, *, is_command: bool = True
               ) -> None:
        assert self.association is not None
        for fragment in pdu.fragment_message(context.context_id, is_command, message,
                                             self.association.peer_max_pdu):
            self.writer.write(fragment)


@source_type("dimse")
def _dimse(channel: str, config: DimseSource, context: AdapterContext) -> DimseScp:
    return DimseScp(channel, config, context)
