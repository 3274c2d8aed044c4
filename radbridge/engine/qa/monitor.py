"""Drift monitoring: one pass checks every model version with observations and raises an
alert for each measure judged "alert" (score, an input, the score on one scanner).

An alert is an audit event `qa.drift.alert` (identifiers and figures only) and, when an
alert channel is given, a JSON message received on that internal channel, so that it
is routed, retried and audited like any message. Its key names the model, version,
finding, measure and current window: one incident is one alert. Current windows are
periods of `period_days` counted from 1970-01-01 (the period holding today, filled as
the days pass), so the key stays the same through a period and a drift that lasts
into the next period is raised again there, once.

Each new alert is received first, then audited: a pass cut off in between sends the
same key again next time, which the receiver's dedup answers as a duplicate, and the
audit event follows. The ledger is what a pass checks for alerts already raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from radbridge.engine import audit
from radbridge.engine.db import Database
from radbridge.engine.qa import queries
from radbridge.engine.qa.queries import DriftOptions, DriftReport, Window
from radbridge.engine.receiver import Inbound, Receipt
from radbridge.qa.drift import DriftThresholds, DriftVerdict
from radbridge.qa.errors import QaConfigError

ACTION = "qa.drift.alert"
ACTOR = "qa.monitor"
CHAIN = "qa-monitor"
CONTENT_TYPE = "application/json"
EPOCH = date(1970, 1, 1)
ALERT_MIN_GROUP = 200
"""Fewer results in either window raise no alert: by chance alone PSI over k bins comes
to about (k - 1)(1/n1 + 1/n2), 0.12 for 10 bins and 150 results a window, so small
groups (one scanner, one month) would cross the alert mark on noise."""
_SETTING_NAMES = ("period_days", "baseline_days", "bins", "min_group", "thresholds")
Receive = Callable[[Inbound], Awaitable[Receipt]]


@dataclass(frozen=True)
class MonitorSettings:
    """How a pass compares: current period, baseline length before it, bins, the size
    below which a window is too small to alert on, and the PSI/KS thresholds."""

    period_days: int = 30
    baseline_days: int = 90
    bins: int = 10
    min_group: int = ALERT_MIN_GROUP
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    def __post_init__(self) -> None:
        for name in ("period_days", "baseline_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3650:
                raise QaConfigError(name, "a whole number of days from 1 to 3650")
        DriftOptions(self.bins, self.thresholds, self.min_group)

    @classmethod
    def from_config(cls, obj: Mapping[str, Any]) -> MonitorSettings:
        """From a config mapping; unknown keys are refused, named."""
        unknown = sorted(set(obj) - set(_SETTING_NAMES))
        if unknown:
            raise QaConfigError(unknown[0], "one of " + ", ".join(_SETTING_NAMES))
        values = dict(obj)
        if "thresholds" in values:
            values["thresholds"] = DriftThresholds.from_config(values["thresholds"])
        return cls(**values)

    @property
    def options(self) -> DriftOptions:
        return DriftOptions(self.bins, self.thresholds, self.min_group)

    def windows(self, today: date) -> tuple[Window, Window]:
        """(baseline, current): the period holding `today` and the days before it."""
        start = EPOCH + timedelta(days=(today - EPOCH).days // self.period_days
                                  * self.period_days)
        current = Window(start, start + timedelta(days=self.period_days - 1))
        return Window.last(self.baseline_days, start - timedelta(days=1)), current


@dataclass(frozen=True)
class Alert:
    """One measure judged "alert": who, what, which windows and the figures."""

    key: str
    model: str
    version: str
    finding: queries.Finding
    measure: str
    verdict: str
    reason: str
    psi: float | None
    ks_statistic: float | None
    ks_p_value: float | None
    n_baseline: int
    n_current: int
    baseline: Window
    current: Window

    def as_json(self) -> dict[str, Any]:
        return {"type": ACTION, "key": self.key, "model": self.model, "version": self.version,
                "finding": self.finding.as_json(), "measure": self.measure,
                "verdict": self.verdict, "reason": self.reason, "psi": _finite(self.psi),
                "ks_statistic": self.ks_statistic, "ks_p_value": self.ks_p_value,
                "n_baseline": self.n_baseline, "n_current": self.n_current,
                "baseline": self.baseline.as_json(), "current": self.current.as_json()}


@dataclass(frozen=True)
class MonitorPass:
    """What one pass found: the versions checked, the alerts standing now and those of
    them raised by this pass (the rest were raised before)."""

    checked: tuple[tuple[str, str], ...]
    alerts: tuple[Alert, ...]
    raised: tuple[Alert, ...]

    def as_json(self) -> dict[str, Any]:
        raised = {alert.key for alert in self.raised}
        return {"checked": [{"model": m, "version": v} for m, v in self.checked],
                "alerts": [{**alert.as_json(), "new": alert.key in raised}
                           for alert in self.alerts]}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def alert_key(model: str, version: str, finding: queries.Finding, measure: str,
              current: Window) -> str:
    """Readable when it fits a dedup key's 255 characters, else a digest of the same."""
    key = f"qa-drift/{model}/{version}/{finding.system}/{finding.code}/{measure}/{current}"
    if len(key) <= 255:
        return key
    return "qa-drift/" + hashlib.sha256(key.encode()).hexdigest()


def alerts_of(report: DriftReport, settings: MonitorSettings) -> list[Alert]:
    """The report's measures at or above "alert" whose windows are both big enough."""
    found = []
    for measure, item in report.measures():
        judgement = item.judgement
        if judgement is None or judgement.verdict is not DriftVerdict.ALERT or item.small:
            continue
        n_baseline, n_current = item.sizes
        found.append(Alert(
            key=alert_key(report.model, report.version, report.finding, measure,
                          report.current),
            model=report.model, version=report.version, finding=report.finding,
            measure=measure, verdict=judgement.verdict.value, reason=judgement.reason,
            psi=item.psi, ks_statistic=None if item.ks is None else item.ks.statistic,
            ks_p_value=None if item.ks is None else item.ks.p_value, n_baseline=n_baseline,
            n_current=n_current, baseline=report.baseline, current=report.current))
    return found


def assess(database: Database, settings: MonitorSettings, today: date
           ) -> tuple[tuple[tuple[str, str], ...], list[Alert]]:
    """Every model version with observations, and the alerts standing for them today."""
    baseline, current = settings.windows(today)
    with database.read() as session:
        checked = tuple(queries.model_versions(session))
        alerts = [alert for model, version in checked
                  for report in queries.drift(session, model, version, baseline, current,
                                              settings.options)
                  for alert in alerts_of(report, settings)]
    return checked, alerts


def raised_keys(database: Database, limit: int = 10_000) -> set[str]:
    """Keys of the alerts already in the ledger (the newest `limit`), by the monitor's
    actor, which its (actor, seq) index finds without reading other events."""
    with database.read() as session:
        events = audit.query(session, audit.AuditQuery(actor=ACTOR, action=ACTION,
                                                       limit=limit))
    return {str(json.loads(event.detail or "{}").get("key")) for event in events}


async def run_pass(database: Database, *, settings: MonitorSettings | None = None,
                   today: date | None = None, receive: Receive | None = None,
                   alert_channel: str | None = None, chain: str = CHAIN) -> MonitorPass:
    """Check drift for every model version; raise each new alert (see the module
    docstring). `receive` stores a message, as AdapterContext.receive does."""
    if (alert_channel is None) != (receive is None):
        raise QaConfigError("alert_channel", "given together with a receive callable")
    chosen = settings or MonitorSettings()
    day = today or datetime.now(UTC).date()
    checked, alerts = await asyncio.to_thread(assess, database, chosen, day)
    known = await asyncio.to_thread(raised_keys, database)
    raised = []
    for alert in alerts:
        if alert.key in known:
            continue
        receipt = None
        if receive is not None and alert_channel is not None:
            receipt = await receive(_inbound(alert, alert_channel))
        await asyncio.to_thread(audit.append_now, database, [_event(alert, alert_channel,
                                                                    receipt)], chain)
        known.add(alert.key)
        raised.append(alert)
    return MonitorPass(checked, tuple(alerts), tuple(raised))


def _inbound(alert: Alert, channel: str) -> Inbound:
    body = json.dumps(alert.as_json(), sort_keys=True, separators=(",", ":"))
    return Inbound(channel=channel, content_type=CONTENT_TYPE, source=f"internal:{ACTOR}",
                   content=body.encode(), dedup_key=alert.key,
                   metadata={"event": ACTION, "model": alert.model,
                             "version": alert.version, "measure": alert.measure})


def _event(alert: Alert, channel: str | None, receipt: Receipt | None) -> audit.AuditRecord:
    detail = alert.as_json()
    del detail["type"], detail["reason"]
    return audit.AuditRecord(action=ACTION, actor=ACTOR, channel=channel,
                             message_id=None if receipt is None else receipt.message_id,
                             detail=detail)
