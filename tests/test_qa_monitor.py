"""The drift monitor on SQLite and PostgreSQL: alerts as audit events and as messages on an
internal channel, one per incident however many passes see it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from radbridge.engine import audit
from radbridge.engine.blobstore import BlobStore
from radbridge.engine.db import Database
from radbridge.engine.models import AuditEvent, Message, MessageStage
from radbridge.engine.qa import monitor
from radbridge.engine.qa.monitor import MonitorSettings
from radbridge.engine.qa.queries import Finding, Window
from radbridge.engine.receiver import GroupCommitter
from radbridge.qa.drift import DriftThresholds
from radbridge.qa.errors import QaConfigError
from tests.test_qa_queries import SHIFTED, add_rows, drift_rows

TODAY = date(2026, 3, 20)
SETTINGS = MonitorSettings(period_days=30, baseline_days=60, min_group=30)
CHANNEL = "qa-alerts"
EXPECTED = {"input:slice_thickness", "input:kernel", f"scanner:{SHIFTED}"}
"""What drift_rows shifts: 5 mm slices and kernel BONE on Shift-2, whose scores move up."""


@pytest.fixture
def drifted(database: Database) -> Database:
    add_rows(database, drift_rows(*SETTINGS.windows(TODAY)))
    add_rows(database, drift_rows(*SETTINGS.windows(TODAY), model="pe-ctpa")[:440])
    return database


@pytest.fixture
def receiver(database: Database, tmp_path: Path) -> Iterator[GroupCommitter]:
    committer = GroupCommitter(database, BlobStore(tmp_path / "blobs"), inline_limit=65536)
    committer.start()
    yield committer
    committer.stop()


def _alert_events(database: Database) -> list[AuditEvent]:
    with database.read() as session:
        return audit.query(session, audit.AuditQuery(action=monitor.ACTION))


def _messages(database: Database) -> list[tuple[Message, bytes]]:
    with database.read() as session:
        return [(m, s.content) for m, s in session.execute(
            select(Message, MessageStage).join(MessageStage, MessageStage.message_id == Message.id)
            .where(Message.channel == CHANNEL).order_by(Message.id)).all()]


async def test_two_passes_raise_each_alert_once(drifted: Database,
                                                receiver: GroupCommitter) -> None:
    first = await monitor.run_pass(drifted, settings=SETTINGS, today=TODAY,
                                   receive=receiver.receive, alert_channel=CHANNEL)
    second = await monitor.run_pass(drifted, settings=SETTINGS, today=TODAY + timedelta(days=3),
                                    receive=receiver.receive, alert_channel=CHANNEL)
    assert first.checked == (("ich-ct", "1.0"), ("pe-ctpa", "1.0"))
    assert {a.measure for a in first.raised} == EXPECTED
    assert {a.model for a in first.alerts} == {"ich-ct"}
    assert second.raised == () and second.alerts == first.alerts
    messages = _messages(drifted)
    assert len(messages) == 3
    bodies = {json.loads(content)["measure"]: (message, json.loads(content))
              for message, content in messages}
    message, body = bodies[f"scanner:{SHIFTED}"]
    baseline, current = SETTINGS.windows(TODAY)
    assert message.dedup_key == (f"qa-drift/ich-ct/1.0/SCT/274100004/scanner:{SHIFTED}/"
                                 f"{current}")
    assert body["type"] == "qa.drift.alert" and body["verdict"] == "alert"
    assert body["psi"] > 0.25 and (body["n_baseline"], body["n_current"]) == (40, 40)
    assert body["current"] == current.as_json() and body["baseline"] == baseline.as_json()
    events = _alert_events(drifted)
    assert len(events) == 3
    detail = json.loads(events[0].detail)
    assert detail["key"] in {m.dedup_key for m, _ in messages} and "reason" not in detail
    assert events[0].channel == CHANNEL and events[0].message_id in {m.id for m, _ in messages}
    assert all(e.patient_id is None and e.study_uid is None for e in events)


async def test_without_a_channel_alerts_are_audited_once(drifted: Database) -> None:
    first = await monitor.run_pass(drifted, settings=SETTINGS, today=TODAY)
    second = await monitor.run_pass(drifted, settings=SETTINGS, today=TODAY)
    assert {a.measure for a in first.raised} == EXPECTED and second.raised == ()
    events = _alert_events(drifted)
    assert len(events) == 3 and all(e.channel is None for e in events)
    assert _messages(drifted) == []


async def test_a_pass_cut_off_before_its_audit_sends_no_second_message(
        drifted: Database, receiver: GroupCommitter, monkeypatch: pytest.MonkeyPatch) -> None:
    await monitor.run_pass(drifted, settings=SETTINGS, today=TODAY,
                           receive=receiver.receive, alert_channel=CHANNEL)
    monkeypatch.setattr(monitor, "raised_keys", lambda database: set())  # as if never audited
    again = await monitor.run_pass(drifted, settings=SETTINGS, today=TODAY,
                                   receive=receiver.receive, alert_channel=CHANNEL)
    assert len(again.raised) == 3
    assert len(_messages(drifted)) == 3  # the receiver's dedup key held


async def test_small_windows_and_higher_thresholds_raise_nothing(drifted: Database) -> None:
    small = MonitorSettings(period_days=30, baseline_days=60, min_group=41)
    found = await monitor.run_pass(drifted, settings=small, today=TODAY)
    assert {a.measure for a in found.raised} == EXPECTED - {f"scanner:{SHIFTED}"}
    by_default = MonitorSettings(period_days=30, baseline_days=60)  # min_group 200
    assert {a.measure for a in (await monitor.run_pass(drifted, settings=by_default,
                                                       today=TODAY)).alerts} == (
        EXPECTED - {f"scanner:{SHIFTED}"})
    lenient = MonitorSettings(period_days=30, baseline_days=60,
                              thresholds=DriftThresholds(psi_warn=5.0, psi_alert=10.0))
    assert (await monitor.run_pass(drifted, settings=lenient, today=TODAY)).alerts == ()


def test_current_windows_are_periods_from_1970() -> None:
    weekly = MonitorSettings(period_days=7, baseline_days=28)
    baseline, current = weekly.windows(date(2026, 3, 20))
    assert current == Window(date(2026, 3, 19), date(2026, 3, 25))  # 1970-01-01: a Thursday
    assert baseline == Window(date(2026, 2, 19), date(2026, 3, 18))
    assert weekly.windows(date(2026, 3, 25)) == (baseline, current)
    assert weekly.windows(date(2026, 3, 26))[1].start == date(2026, 3, 26)


def test_settings_refuse_bad_values_by_name() -> None:
    assert MonitorSettings.from_config(
        {"period_days": 7, "thresholds": {"psi_alert": 0.3}}).thresholds.psi_alert == 0.3
    with pytest.raises(QaConfigError, match="period"):
        MonitorSettings.from_config({"period": 7})
    with pytest.raises(QaConfigError, match="baseline_days"):
        MonitorSettings(baseline_days=0)
    with pytest.raises(QaConfigError, match="psi_wrn"):
        MonitorSettings.from_config({"thresholds": {"psi_wrn": 0.1}})


def test_a_long_alert_key_becomes_a_digest() -> None:
    window = Window(date(2026, 3, 1), date(2026, 3, 30))
    short = monitor.alert_key("ich", "1", Finding("SCT", "1"), "score", window)
    long = monitor.alert_key("m" * 64, "v" * 32, Finding("S" * 32, "c" * 64),
                             "scanner:" + "x" * 64, window)
    assert short == "qa-drift/ich/1/SCT/1/score/2026-03-01..2026-03-30"
    assert long.startswith("qa-drift/") and len(long) == 9 + 64
