"""The `qa-monitor` source: a channel whose messages are drift alerts, made on a schedule.

Every `interval` it runs one monitor pass (monitor.run_pass) over the store, which
receives each new alert on this same channel; the channel's destinations then deliver
it like any message (retries, dead letters, audit). A pass that fails (the store down)
is logged and tried again at the next interval; the monitor's own ledger and the alert's
dedup key keep one incident one message across passes, restarts and nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from radbridge.engine.adapters import AdapterContext, Source, source_type
from radbridge.engine.config import QaMonitorSource
from radbridge.engine.qa.monitor import MonitorSettings, run_pass
from radbridge.qa.drift import DriftThresholds

log = logging.getLogger(__name__)


class DriftWatch:
    def __init__(self, channel: str, config: QaMonitorSource, context: AdapterContext) -> None:
        self._channel = channel
        self._config = config
        self._context = context
        self._settings = MonitorSettings(
            period_days=config.period_days, baseline_days=config.baseline_days,
            bins=config.bins, min_group=config.min_group,
            thresholds=DriftThresholds(config.psi_warn, config.psi_alert, config.ks_alpha))
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"qa-monitor:{self._channel}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def check(self) -> int:
        """One pass now; how many new alerts it received on the channel."""
        done = await run_pass(self._context.database, settings=self._settings,
                              receive=self._context.receive, alert_channel=self._channel,
                              chain=f"{self._context.node_id}/qa-monitor")
        return len(done.raised)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                raised = await self.check()
                if raised:
                    log.info("qa-monitor %s: %d new drift alert(s)", self._channel, raised)
            except Exception:  # the store is down or a bug: keep the node alive, try again
                log.exception("qa-monitor %s: the drift check failed; next at the interval",
                              self._channel)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._config.interval)


@source_type("qa-monitor")
def _build(channel: str, config: QaMonitorSource, context: AdapterContext) -> Source:
    return DriftWatch(channel, config, context)
