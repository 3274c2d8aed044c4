"""The MLLP destination: persistent connections, one message at a time on each, ACK awaited.

The outbox decides retries; this module only says what the peer answered:
AA/CA returns (the delivery is recorded sent, so it is never sent again); AE/CE, AR/CR
and a missing ACK raise TransientDeliveryError or PermanentDeliveryError as the
destination's `on_ae`, `on_ar` and `on_timeout` say. After a timeout or an ACK that
names another message the connection is dropped, so a late ACK can never be taken for
the next message's. A resend carries the same MSH-10, so a receiver that deduplicates
(as Radbridge's own listener does) sees it once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from radbridge.engine.adapters import AdapterContext, Destination, SendResult, destination_type
from radbridge.engine.config import AckAction, MllpDestination
from radbridge.engine.outbox import OutboundDelivery
from radbridge.errors import PermanentDeliveryError, TransientDeliveryError
from radbridge.interfaces.mllp.framing import Frame, FrameDecoder, frame
from radbridge.interfaces.tls import client_context
from radbridge.mappings.hl7.header import Hl7Rejection, read_header, split_segments

log = logging.getLogger(__name__)


class AckTimeout(TransientDeliveryError):
    """No acknowledgement arrived within ack_timeout."""


class MllpConnection:
    """One client connection; `exchange` sends a frame and returns the next frame back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_size: int) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_size)
        self._pending: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int, *, tls: ssl.SSLContext | None, timeout: float,
                   max_size: int) -> MllpConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, limit=256 * 1024), timeout)
        return cls(reader, writer, max_size)

    async def send(self, content: bytes) -> None:
        self._writer.write(frame(content))
        await self._writer.drain()

    async def receive(self) -> bytes:
        """The next complete frame from the peer (ConnectionError when it closes)."""
        while not self._pending:
            data = await self._reader.read(256 * 1024)
            if not data:
                raise ConnectionResetError("the peer closed the connection")
            self._pending += [e.content for e in self._decoder.feed(data) if isinstance(e, Frame)]
        return self._pending.pop(0)

    def close(self) -> None:
        self._writer.close()


class MllpSender:
    """Destination of type 'mllp'; up to `queue.concurrency` connections to one peer."""

    def __init__(self, config: MllpDestination, context: AdapterContext) -> None:
        self._config = config
        self._tls = (client_context(config.tls, context.resolve) if config.tls is not None
                     else None)
        self._context = context
        self._idle: list[MllpConnection] = []
        self._where = f"{config.host}:{config.port}"

    async def send(self, delivery: OutboundDelivery) -> SendResult:
        content = b"".join(self._context.content_chunks(delivery))
        try:
            header = read_header(content.decode("latin-1"))
        except Hl7Rejection as exc:
            raise PermanentDeliveryError(f"not an HL7 v2 message: {exc.reason}") from exc
        connection = await self._connection()
        try:
            await connection.send(content)
            if header.enhanced_mode and header.accept_ack_type == "NE":
                self._idle.append(connection)
                return SendResult(detail="sent; MSH-15 NE asks for no acknowledgement")
            ack = await asyncio.wait_for(connection.receive(), self._config.ack_timeout)
        except TimeoutError:
            connection.close()
            raise _by_policy(self._config.on_timeout,
                             f"no ACK from {self._where} within {self._config.ack_timeout:g}s"
                             f" for MSH-10 {header.control_id}", timeout=True) from None
        except (ConnectionError, OSError) as exc:
            connection.close()
            raise TransientDeliveryError(
                f"MLLP connection to {self._where} failed: {exc}") from exc
        return self._judge(ack, header.control_id, connection)

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connection(self) -> MllpConnection:
        if self._idle:
            return self._idle.pop()
        try:
            return await MllpConnection.open(
                self._config.host, self._config.port, tls=self._tls,
                timeout=self._config.connect_timeout, max_size=self._config.max_message_size)
        except TimeoutError:
            raise TransientDeliveryError(
                f"could not connect to {self._where} within"
                f" {self._config.connect_timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise TransientDeliveryError(f"could not connect to {self._where}: {exc}") from exc

    def _judge(self, ack: bytes, control_id: str, connection: MllpConnection) -> SendResult:
        code, acked_id, text = read_msa(ack)
        if acked_id != control_id:
            connection.close()
            raise TransientDeliveryError(
                f"ACK from {self._where} names MSH-10 {acked_id!r}, expected {control_id!r}")
        self._idle.append(connection)
        if code in ("AA", "CA"):
            return SendResult(response=ack, detail=code)
        reason = f"{self._where} answered {code}" + (f": {text}" if text else "")
        if code in ("AE", "CE"):
            raise _by_policy(self._config.on_ae, reason)
        if code in ("AR", "CR"):
            raise _by_policy(self._config.on_ar, reason)
        raise TransientDeliveryError(f"{self._where} answered an unknown MSA-1 code {code!r}")


def read_msa(ack: bytes) -> tuple[str, str, str]:
    """MSA-1, MSA-2 and the error text (MSA-3 or ERR-8/ERR-1) of an acknowledgement."""
    text = ack.decode("latin-1")
    try:
        header = read_header(text)
    except Hl7Rejection as exc:
        raise TransientDeliveryError(f"the answer is not an HL7 ACK: {exc.reason}") from exc
    sep, component = header.field_separator, header.encoding_characters[0]
    msa: list[str] = []
    reason = ""
    for segment in split_segments(text):
        fields = segment.split(sep)
        if fields[0] == "MSA":
            msa = fields
            reason = reason or (fields[3] if len(fields) > 3 else "")
        elif fields[0] == "ERR":
            detail = fields[8] if len(fields) > 8 and fields[8] else ""
            if not detail and len(fields) > 1:
                detail = fields[1].split(component)[-1]
            reason = detail or reason
    if len(msa) < 3:
        raise TransientDeliveryError("the answer has no MSA segment with MSA-1 and MSA-2")
    return msa[1].strip(), msa[2].strip(), reason


def _by_policy(action: AckAction, reason: str, *, timeout: bool = False) -> Exception:
    if action == "dead-letter":
        return PermanentDeliveryError(reason)
    return AckTimeout(reason) if timeout else TransientDeliveryError(reason)


@destination_type("mllp")
def _mllp(config: MllpDestination, context: AdapterContext) -> Destination:
    return MllpSender(config, context)
