"""The `alerts` source: a channel whose messages are alert raises and resolutions.

Every `interval` it evaluates the rules (radbridge.engine.alerts.rules), settles the
incidents in the store and receives each new raise and resolution on this channel
(radbridge.engine.alerts.incidents), so the channel's destinations deliver them like
any message: an http destination is a webhook, with retries, dead letters and audit.
A pass that fails (the store down) is logged and tried again at the next interval.
The node starts this source where its delivery workers run, since the peer-down rule
reads the peers those workers reached (radbridge.engine.peers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from radbridge.engine.adapters import AdapterContext, Source, source_type
from radbridge.engine.alerts.incidents import Settled, announce, settle
from radbridge.engine.alerts.rules import Scope, evaluate
from radbridge.engine.config import AlertsSource
from radbridge.engine.models import utcnow
from radbridge.engine.peers import PEERS, PeerTracker

log = logging.getLogger(__name__)

SOURCE_TYPE = "alerts"


class AlertWatch:
    """Runs the rules of one alerts channel on a schedule (see the module docstring)."""

    def __init__(self, channel: str, config: AlertsSource, context: AdapterContext, *,
                 peers: PeerTracker = PEERS) -> None:
        self._config = config
        self._context = context
        self._peers = peers
        self.scope = Scope(channel, frozenset(config.channels), context.node_id)
        self._chain = f"{context.node_id}/alerts"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=f"alerts:{self.scope.alert_channel}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def check(self, now: datetime | None = None) -> Settled:
        """One pass now: evaluate, settle, announce."""
        moment = now or utcnow()
        database = self._context.database

        def judge() -> Settled:
            with database.read() as session:
                conditions = evaluate(session, self._config, self.scope, moment,
                                      self._peers.snapshot())
            return settle(database, self.scope, conditions, moment, self._chain)

        settled = await asyncio.to_thread(judge)
        await announce(database, self.scope.alert_channel, self._context.receive)
        return settled

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                settled = await self.check()
                if settled.raised or settled.resolved:
                    log.info("alerts %s: %d raised, %d resolved, %d open",
                             self.scope.alert_channel, len(settled.raised),
                             len(settled.resolved), settled.still_open)
            except Exception:  # the store is down or a bug: keep the node alive, try again
                log.exception("alerts %s: the rules failed; next at the interval",
                              self.scope.alert_channel)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._config.interval)


@source_type(SOURCE_TYPE)
def _build(channel: str, config: AlertsSource, context: AdapterContext) -> Source:
    return AlertWatch(channel, config, context)
