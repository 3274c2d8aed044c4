"""Runtime control: deploy, undeploy, pause, resume and reload on a running node, over its
API (authentication on) and the `radbridge channels` CLI, with messages flowing to a
real HTTP peer: nothing lost or sent twice across a pause, every change an audit event
naming the token and carrying the YAML diff with secrets masked."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

import radbridge.interfaces.adapters  # noqa: F401  (registers the wire adapters)
from radbridge.engine import audit
from radbridge.engine.config_diff import channel_diff, channel_texts, mask_secrets
from radbridge.engine.config_loader import load_channels
from radbridge.engine.control import ControlUnavailable
from radbridge.engine.db import Database
from radbridge.engine.lifecycle import DeliveryStatus
from radbridge.engine.models import Delivery
from radbridge.engine.node_control import NodeControl
from radbridge.engine.runtime import Node
from radbridge.engine.settings import Settings
from radbridge.interfaces.api import ApiContext, create_app
from radbridge.interfaces.auth.authenticator import Authenticator
from radbridge.interfaces.auth.bootstrap import BOOTSTRAP_NAME
from radbridge.interfaces.auth.identity import Role
from radbridge.interfaces.auth.tokens import TokenVerifier, create_token
from radbridge.interfaces.cli import main
from radbridge.interfaces.mllp.listener import MllpListener
from tests.e2e.conftest import RadbridgeNode, RecordingReceiver, free_port, wait_until
from tests.hl7_support import adt_a01, frame, msa, read_frames

RELAY = """\
name: relay
description: hand-overs from intake, sent to the peer
source: {{type: channel}}
destinations:
  - name: peer
    type: http
    url: {url}
    headers:
      Authorization: Bearer first-secret-123
    queue:
      concurrency: 4
      lease: 5s
      backoff: {{initial: 0.1, max: 0.5, jitter: 0.05}}
"""
INTAKE = """\
name: intake
source: {type: http}
destinations:
  - {name: handover, type: channel, channel: relay}
"""

NULL_INTAKE = "name: intake\nsource: {type: http}\ndestinations: [{name: handover, type: null}]\n"


@dataclass
class Running:
    node: Node
    control: NodeControl
    client: httpx.AsyncClient
    tokens: dict[Role, str]

    def as_(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(self, method: str, path: str, *, role: Role = Role.ADMIN,
                   body: str | bytes | None = None, **params: str) -> httpx.Response:
        return await self.client.request(method, path, content=body, params=params,
                                         headers=self.as_(role))

    async def deploy(self, text: str, **params: str) -> httpx.Response:
        return await self.call("POST", "/api/channels", body=text, **params)

    def events(self, action: str) -> list[dict[str, Any]]:
        with self.node.database.read() as session:
            return [audit.event_as_dict(e) for e in
                    audit.query(session, audit.AuditQuery(action=action))]

    def deliveries(self, channel: str, status: str) -> int:
        with self.node.database.read() as session:
            return int(session.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.channel == channel, Delivery.status == status)) or 0)


@asynccontextmanager
async def running(tmp_path: Path, url: str, files: list[Path] | None = None,
                  drain_timeout: float = 10.0) -> AsyncIterator[Running]:
    """A started node on `files`, its NodeControl, and an API client (auth on)."""
    settings = Settings.resolve(data_dir=str(tmp_path / "data"), database_url=url,
                                node_id="node-a", api_port=0, environ={})
    node = Node(settings, load_channels(files) if files else [], poll_interval=0.1,
                drain_timeout=drain_timeout)
    await node.start()
    control = NodeControl(node, files or [])
    with node.database.write() as session:
        tokens = {role: create_token(session, name=f"{role.value}-token", role=role,
                                     created_by="test").secret for role in Role}
    context = ApiContext(
        database=node.database, blobs=node.blobs, channels=node.channels, node_id="node-a",
        inline_limit=settings.inline_limit, receive=node.receive, wake=node.wake,
        registry=CollectorRegistry(), store_metrics=False,
        auth=Authenticator(TokenVerifier(node.database)), control=control)
    transport = httpx.ASGITransport(app=create_app(context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                     timeout=30) as client:
            yield Running(node, control, client, tokens)
    finally:
        await node.stop()


async def until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    await asyncio.to_thread(wait_until, predicate, timeout, what)


@pytest.fixture
def receiver() -> Any:
    peer = RecordingReceiver()
    yield peer
    peer.close()


# --- the whole cycle, with traffic ----------------------------------------------------


async def test_deploy_pause_resume_undeploy_with_messages_flowing(
        database_url: str, tmp_path: Path, receiver: RecordingReceiver) -> None:
    async with running(tmp_path, database_url) as run:
        answer = await run.deploy(RELAY.format(url=receiver.url), file="relay.yaml")
        assert answer.status_code == 201, answer.text
        [change] = answer.json()["changes"]
        assert (change["channel"], change["action"]) == ("relay", "deployed")
        assert "+name: relay" in change["diff"].splitlines()
        # intake names relay, which is only deployed, not in this body: still valid
        assert (await run.deploy(INTAKE)).status_code == 201

        async def post(i: int) -> None:
            answer = await run.call("POST", "/api/channels/intake/messages",
                                    body=f"message {i}".encode())
            assert answer.status_code == 202, answer.text

        receiver.set_delay(0.2)  # sends stay in flight while the pause comes
        for i in range(30):
            await post(i)
        await until(lambda: receiver.in_flight() > 0, "sends in flight")
        paused = await run.call("POST", "/api/channels/relay/pause")
        assert paused.json()["changes"][0]["action"] == "paused"
        shown = (await run.call("GET", "/api/channels", role=Role.VIEWER)).json()["channels"]
        assert {c["name"]: c["paused"] for c in shown} == {"intake": False, "relay": True}
        receiver.set_delay(0.0)
        for i in range(30, 40):  # relay is fed by a channel: it stores them, sends nothing
            await post(i)
        await until(lambda: run.deliveries("relay", DeliveryStatus.PENDING)
                    + run.deliveries("relay", DeliveryStatus.SENT) == 40,
                    "40 relay deliveries in the store")
        sent_while_paused = len(receiver.arrivals())
        await asyncio.sleep(1.0)  # ten poll intervals of a worker, had one been left
        assert len(receiver.arrivals()) == sent_while_paused
        assert run.deliveries("relay", DeliveryStatus.PENDING) == 40 - sent_while_paused
        assert run.deliveries("relay", DeliveryStatus.IN_FLIGHT) == 0

        again = await run.call("POST", "/api/channels/relay/pause")
        assert again.json()["changes"][0]["action"] == "unchanged"
        resumed = await run.call("POST", "/api/channels/relay/resume")
        assert resumed.json()["changes"][0]["action"] == "resumed"
        bodies = {f"message {i}".encode() for i in range(40)}
        await asyncio.to_thread(receiver.wait_for_bodies, bodies, 20.0)
        assert set(receiver.accepted_per_key().values()) == {1}  # each once
        assert len(receiver.accepted_per_key()) == 40

        # an http channel paused answers 503 and stores nothing; resumed it takes them
        await run.call("POST", "/api/channels/intake/pause")
        refused = await run.call("POST", "/api/channels/intake/messages", body=b"late")
        assert refused.status_code == 503
        assert "paused" in refused.json()["error"]
        await run.call("POST", "/api/channels/intake/resume")
        await post(40)
        await asyncio.to_thread(receiver.wait_for_bodies, {b"message 40"}, 20.0)

        gone = await run.call("DELETE", "/api/channels/relay")
        [change] = gone.json()["changes"]
        assert change["action"] == "undeployed"
        assert "-name: relay" in change["diff"].splitlines()
        assert (await run.call("GET", "/api/channels/relay")).status_code == 404
        assert (await run.call("DELETE", "/api/channels/relay")).status_code == 404

    for action in ("channel.deployed", "channel.paused", "channel.resumed",
                   "channel.undeployed"):
        events = run.events(action)
        assert events, action
        assert {e["actor"] for e in events} == {"token:admin-token"}
    deployed = {e["channel"]: e["detail"] for e in run.events("channel.deployed")}
    assert deployed["relay"]["file"] == "relay.yaml"
    assert "+    url: " + receiver.url in deployed["relay"]["diff"]
    assert "+      Authorization: ***" in deployed["relay"]["diff"]
    assert "first-secret-123" not in json.dumps(run.events("channel.deployed"))
    assert audit.verify(run.node.database).events > 0


async def test_a_bad_channel_yaml_is_a_400_naming_file_line_and_field(tmp_path: Path) -> None:
    bad = "name: broken\nsource:\n  type: http\n  bogus: 1\ndestinations: []\n"
    async with running(tmp_path, f"sqlite:///{tmp_path / 's.db'}") as run:
        answer = await run.deploy(bad, file="broken.yaml")
        assert answer.status_code == 400
        issues = answer.json()["issues"]
        assert {"file": "broken.yaml", "line": 4, "path": "source.bogus",
                "message": "unknown key 'bogus'; expected one of: max_size, type"} in issues
        assert any(i["path"] == "destinations" for i in issues)
        assert "broken" not in run.node.channels
        empty = await run.deploy("# nothing here\n")
        assert empty.status_code == 400
        assert run.events("channel.deployed") == []


async def test_a_viewer_reads_the_state_but_changes_nothing(tmp_path: Path) -> None:
    files = [tmp_path / "intake.yaml"]
    files[0].write_text(NULL_INTAKE)
    async with running(tmp_path, f"sqlite:///{tmp_path / 's.db'}", files) as run:
        listed = await run.call("GET", "/api/control/channels", role=Role.VIEWER)
        assert listed.json()["channels"] == [{
            "name": "intake", "source": "http", "destinations": ["handover"],
            "paused": False, "origin": "file", "file": str(files[0])}]
        for method, path in (("POST", "/api/channels/intake/pause"),
                             ("DELETE", "/api/channels/intake"),
                             ("POST", "/api/config/reload")):
            refused = await run.call(method, path, role=Role.VIEWER)
            assert refused.status_code == 403, path
        assert (await run.call("POST", "/api/channels/intake/pause", role=Role.ANALYST)
                ).status_code == 403
        assert run.node.paused == set()


async def test_replace_redeploys_and_the_diff_masks_the_secrets(
        tmp_path: Path, receiver: RecordingReceiver) -> None:
    first = RELAY.format(url=receiver.url)
    second = first.replace("first-secret-123", "second-secret-456").replace(
        "concurrency: 4", "concurrency: 2")
    async with running(tmp_path, f"sqlite:///{tmp_path / 's.db'}") as run:
        assert (await run.deploy(first)).status_code == 201
        taken = await run.deploy(second)
        assert taken.status_code == 409
        assert "replace" in taken.json()["error"]
        same = await run.deploy(first, replace="true")
        assert same.json()["changes"][0]["action"] == "unchanged"
        replaced = await run.deploy(second, replace="true")
        assert replaced.status_code == 200
        [change] = replaced.json()["changes"]
        assert change["action"] == "redeployed"
        lines = change["diff"].splitlines()
        assert "-      concurrency: 4" in lines and "+      concurrency: 2" in lines
        assert "-      Authorization: ***" in lines and "+      Authorization: ***" in lines
        assert run.node.channels["relay"].destinations[0].queue.concurrency == 2
    text = json.dumps(run.events("channel.redeployed"))
    assert "secret-456" not in text and "secret-123" not in text


async def test_reload_deploys_new_redeploys_changed_and_undeploys_removed(
        tmp_path: Path, receiver: RecordingReceiver) -> None:
    folder = tmp_path / "channels"
    folder.mkdir()
    (folder / "relay.yaml").write_text(RELAY.format(url=receiver.url))
    (folder / "intake.yaml").write_text(INTAKE)
    api_made = INTAKE.replace("name: intake", "name: by-api")
    async with running(tmp_path, f"sqlite:///{tmp_path / 's.db'}", [folder]) as run:
        assert (await run.deploy(api_made)).status_code == 201
        (folder / "intake.yaml").unlink()
        (folder / "relay.yaml").write_text(
            RELAY.format(url=receiver.url).replace("concurrency: 4", "concurrency: 1"))
        (folder / "extra.yaml").write_text(
            "name: extra\nsource: {type: http}\ndestinations: [{name: x, type: null}]\n")
        answer = await run.call("POST", "/api/config/reload")
        assert answer.status_code == 200, answer.text
        actions = {c["channel"]: c["action"] for c in answer.json()["changes"]}
        assert actions == {"intake": "undeployed", "relay": "redeployed", "extra": "deployed"}
        assert sorted(run.node.channels) == ["by-api", "extra", "relay"]

        (folder / "extra.yaml").write_text("name: extra\nsource: {type: http, port: 1}\n")
        broken = await run.call("POST", "/api/config/reload")
        assert broken.status_code == 400
        assert {(i["file"], i["path"]) for i in broken.json()["issues"]} >= {
            (str(folder / "extra.yaml"), "source.port")}
        assert sorted(run.node.channels) == ["by-api", "extra", "relay"]
    [reloaded] = run.events("config.reloaded")
    assert reloaded["actor"] == "token:admin-token"
    assert reloaded["detail"]["changes"] == actions


async def test_a_paused_mllp_channel_keeps_listening_and_answers_ar(tmp_path: Path) -> None:
    hl7 = tmp_path / "hl7.yaml"
    hl7.write_text("name: hl7\nsource: {type: mllp, port: 0}\n"
                   "destinations: [{name: out, type: null}]\n")
    async with running(tmp_path, f"sqlite:///{tmp_path / 's.db'}", [hl7]) as run:
        port = next(s for s in run.node.sources if isinstance(s, MllpListener)).port
        await run.call("POST", "/api/channels/hl7/pause")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as peer:
            peer.sendall(frame(adt_a01("PAUSED-1")))
            [paused_ack] = await asyncio.to_thread(read_frames, peer, 1)
            assert msa(paused_ack)[:3] == ["MSA", "AR", "PAUSED-1"]
            assert "the channel is paused" in paused_ack  # ERR says why
            await run.call("POST", "/api/channels/hl7/resume")
            peer.sendall(frame(adt_a01("PAUSED-1")))  # the same connection, sent again
            [ack] = await asyncio.to_thread(read_frames, peer, 1)
            assert msa(ack)[:3] == ["MSA", "AA", "PAUSED-1"]


async def test_a_redeploy_that_cannot_start_leaves_the_old_channel_running(
        tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    hl7 = "name: hl7\nsource: {type: mllp, port: 0}\ndestinations: [{name: out, type: null}]\n"
    try:
        async with running(tmp_path, f"sqlite:///{tmp_path / 's.db'}") as run:
            assert (await run.deploy(hl7)).status_code == 201
            answer = await run.deploy(hl7.replace("port: 0", f"port: {taken}"), replace="true")
            assert answer.status_code == 409
            assert f"{taken}" in answer.json()["error"]
            assert run.node.channels["hl7"].source.port == 0  # type: ignore[union-attr]
            assert any(isinstance(s, MllpListener) for s in run.node.sources)
            [failed] = [e for e in run.events("channel.redeployed")
                        if e["outcome"] == "failure"]
            assert failed["channel"] == "hl7"
    finally:
        blocker.close()


async def test_a_split_node_refuses_runtime_changes(tmp_path: Path) -> None:
    settings = Settings.resolve(data_dir=str(tmp_path / "d"), database_url="sqlite://",
                                node_id="n", api_port=0, environ={})
    control = NodeControl(Node(settings, [], role="ingest"), [])
    with pytest.raises(ControlUnavailable, match="--split"):
        await control.pause("x", actor="test")


# --- YAML per channel and masking ------------------------------------------------------


def test_secrets_are_masked_in_block_and_flow_style_urls_and_queries() -> None:
    assert mask_secrets("      Authorization: Bearer abc") == "      Authorization: ***"
    assert mask_secrets('  headers: {X-Api-Key: "k, 1", Accept: json}') == \
        "  headers: {X-Api-Key: ***, Accept: json}"
    assert mask_secrets("  password: 'it''s'  # old") == "  password: ***  # old"
    assert mask_secrets("  url: https://svc:hunter2@ehr.example/fhir?access_token=zz&a=1") == \
        "  url: https://svc:***@ehr.example/fhir?access_token=***&a=1"
    assert mask_secrets("  description: a token is needed") == \
        "  description: a token is needed"


def test_each_channel_gets_its_own_text_and_a_diff_names_it() -> None:
    two = "name: a\nsource: {type: http}\n---\nname: b\nsource: {type: http}\n"
    assert channel_texts(two) == {"a": "name: a\nsource: {type: http}\n",
                                  "b": "name: b\nsource: {type: http}\n"}
    assert channel_texts("# one\nname: a\n") == {"a": "# one\nname: a\n"}
    assert channel_diff("a", "name: a\nx: 1\n", "name: a\nx: 2\n").splitlines() == [
        "--- a/a.yaml", "+++ b/a.yaml", "@@ -1,2 +1,2 @@", " name: a", "-x: 1", "+x: 2"]


# --- the CLI against a real `radbridge run` ---------------------------------------------


def test_the_channels_cli_drives_a_running_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    node = RadbridgeNode(tmp_path, channel_yaml=NULL_INTAKE,
                         database_url=f"sqlite:///{tmp_path / 'store.db'}", name="ctl")

    def cli(*args: str) -> tuple[int, str, str]:
        status = main(["channels", *args])
        out, err = capsys.readouterr()
        return status, out, err

    try:
        node.start()
        token = node.auth.token()
        assert token is not None
        monkeypatch.setenv("RADBRIDGE_API_URL", node.base_url)
        monkeypatch.setenv("RADBRIDGE_TOKEN", token)
        extra = tmp_path / "extra.yaml"
        extra.write_text("name: extra\nsource: {type: http}\n"
                         "destinations: [{name: x, type: null}]\n")
        status, out, err = cli("deploy", str(extra))
        assert status == 0, err
        assert out.splitlines()[0] == "extra: deployed"
        assert cli("pause", "extra") == (0, "extra: paused\n", "")
        status, out, _ = cli("list", "--json")
        assert {c["name"]: c["paused"] for c in json.loads(out)["channels"]} == {
            "extra": True, "intake": False}
        assert cli("resume", "extra") == (0, "extra: resumed\n", "")
        assert cli("undeploy", "extra")[1].startswith("extra: undeployed\n")
        assert cli("reload") == (0, "intake: unchanged\n", "")

        broken = tmp_path / "broken.yaml"
        broken.write_text("name: broken\nsource: {type: http, bogus: 1}\n"
                          "destinations: [{name: x, type: null}]\n")
        status, _, err = cli("deploy", str(broken))
        assert status == 1
        assert err.splitlines()[0] == (f"{broken}:2: source.bogus: unknown key 'bogus'; "
                                       "expected one of: max_size, type")
        assert err.splitlines()[-1].startswith("radbridge channels deploy: HTTP 400: ")
        status, _, err = cli("pause", "nope")
        assert status == 1 and "HTTP 404" in err
        monkeypatch.setenv("RADBRIDGE_TOKEN", "rb_not-a-token")
        assert "HTTP 401" in cli("list")[2]
        monkeypatch.setenv("RADBRIDGE_API_URL", f"http://127.0.0.1:{free_port()}")
        status, _, err = cli("list")
        assert status == 1 and "cannot reach the node's API" in err
        assert node.stop_gracefully() == 0
    finally:
        node.close()
    database = Database(node.database_url)
    try:
        with database.read() as session:
            changes = [(e.action, e.channel, e.actor) for e in reversed(audit.query(
                session, audit.AuditQuery(limit=1000))) if e.action.startswith("channel.")]
    finally:
        database.dispose()
    admin = f"token:{BOOTSTRAP_NAME}"
    assert changes == [("channel.deployed", "extra", admin), ("channel.paused", "extra", admin),
                       ("channel.resumed", "extra", admin),
                       ("channel.undeployed", "extra", admin)]
