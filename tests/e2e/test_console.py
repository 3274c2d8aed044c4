"""The web console in a real headless browser: Debian's `chromium` driven by Playwright,
against a real `radbridge run` with the shipped channels, HL7 over MLLP and studies over
C-STORE flowing in.

1. The analyst's day: sign in with the node's admin token (keyboard only); the dashboard
   counts two HL7 messages as they arrive, shows a rate, and flags hl7-in stuck when a
   message is refused; a message is found by accession, opened (every stage side by
   side), reprocessed (confirmed, busy while the request is held, then followed to its
   new generation); a study nobody ordered is linked to an order from the reconciliation
   queue with the keyboard only (the order looked up by accession); the audit trail is
   searched and exported as CSV (the file is read back); models & drift plots the score
   of the fracture model (baseline against current, per scanner) as inline SVG.
2. Tokens: a forged token stays on sign-in with the reason; a viewer sees the dashboard
   but "Your role cannot read messages"; revoking the token sends the open console back
   to sign-in.
3. The console's own functions (rates, stuck, CSV, order ids, bins) against hand-counted
   answers, run in the browser on the served modules.

Screenshots of each page go to test-output/console/ for people to look at.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from radbridge.inference.demo.synthetic import PatientInfo, Scanner, generate_study
from radbridge.interfaces import api_console
from radbridge.interfaces.auth.bootstrap import ADMIN_TOKEN_FILE
from tests.e2e.conftest import RadbridgeNode, Spawn, free_port, relay_channel, wait_until
from tests.e2e.test_correlation_flows import push, send_hl7, shipped
from tests.e2e.test_inference_flow import push as push_datasets

try:
    from playwright import sync_api
except ImportError:  # the test extras install it; CI must not skip for want of it
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (pip install -e '.[test]')",
                allow_module_level=True)
Browser, Page, expect = sync_api.Browser, sync_api.Page, sync_api.expect

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("RADBRIDGE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "console"
UI_TIMEOUT_MS = 30_000


# --- the browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (scripts/test.sh installs it); missing fails under CI=true."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root otherwise
    expect.set_options(timeout=UI_TIMEOUT_MS)  # assertions wait as long as actions do
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900},
                                  accept_downloads=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"uncaught errors in the console's scripts: {errors}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def active(page: Page, expression: str) -> Any:
    """`expression` evaluated on document.activeElement (as `el`)."""
    return page.evaluate(f"(() => {{ const el = document.activeElement; return {expression}; }})()")


def tab_to(page: Page, expression: str, what: str, *, backwards: bool = False,
           limit: int = 80) -> None:
    """Press Tab (Shift+Tab) until the focused element satisfies `expression` (on `el`)."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if active(page, f"Boolean(el && ({expression}))"):
            return
    raise AssertionError(f"Tab never reached {what}; focus is on "
                         f"{active(page, 'el && el.outerHTML.slice(0, 120)')}")


def admin_token(node: RadbridgeNode) -> str:
    """The token `radbridge run` wrote on its first start (issue 8's bootstrap)."""
    return (node.data_dir / ADMIN_TOKEN_FILE).read_text().strip()


def sign_in(page: Page, node: RadbridgeNode, token: str) -> None:
    page.goto(f"{node.base_url}/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.keyboard.type(token)  # the token field has the focus
    page.keyboard.press("Enter")


def cell(page: Page, channel: str, name: str) -> Any:
    return page.locator(f'#channels-table tr[data-channel="{channel}"] td[data-field="{name}"]')


# --- traffic -------------------------------------------------------------------------


def send_frame(port: int, payload: bytes) -> bytes:
    """One MLLP frame; the node's answer (an ACK or a NAK)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"\x0b" + payload + b"\x1c\x0d")
        return connection.recv(4096)


def push_xrays(port: int, folder: Path) -> list[str]:
    """Four wrist radiographs for fracture-xr: two 60 days ago (the drift view's baseline
    window), two today (its current window), one of each on two scanner models."""
    today = datetime.now(UTC).date()
    uids = []
    for index, (days_ago, model) in enumerate([(60, "SYN-1"), (60, "SYN-2"), (0, "SYN-1"),
                                               (0, "SYN-2")]):
        study = generate_study(
            "fracture-xr", positive=index % 2 == 0, seed=8300 + index,
            patient=PatientInfo(patient_id=f"QA-{index}"), scanner=Scanner(model=model),
            study_date=(today - timedelta(days=days_ago)).strftime("%Y%m%d"))
        uids.append(push_datasets(port, folder / f"xr{index}", study.datasets))
    return uids


def qa_rows(node: RadbridgeNode) -> list[dict[str, Any]]:
    answer = node.client.get("/api/qa/agreement", params={"model": "fracture-xr"})
    return answer.json()["rows"] if answer.status_code == 200 else []


# --- 1. the analyst's day ----------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """What the steps of the analyst's day share."""

    page: Page
    node: RadbridgeNode
    tmp_path: Path
    hl7_port: int
    stray_uid: str
    """A study nobody ordered: a reconciliation item."""
    xray_uids: list[str]


def test_the_console_end_to_end(spawn: Spawn, page: Page, tmp_path: Path) -> None:
    hl7_port, dicom_port = free_port(), free_port()
    channels = shipped(hl7_port, dicom_port).replace("CR: 10s, DX: 10s", "CR: 1s, DX: 1s")
    node = spawn(channel_yaml=channels, database_url=f"sqlite:///{tmp_path / 'store.db'}",
                 node_id="console").start()
    scene = Scene(page, node, tmp_path, hl7_port, xray_uids=push_xrays(dicom_port, tmp_path),
                  stray_uid=push(dicom_port, tmp_path / "stray", 23,
                                 AccessionNumber="NO-SUCH-ORDER", PatientID="SOMEONE-ELSE",
                                 StudyDate="20261201"))
    sign_in_and_skip_to_content(scene)
    dashboard_counts_live_and_flags_errors(scene)
    message_id = find_by_accession_and_open(scene)
    reprocess_with_progress(scene, message_id)
    link_by_keyboard_only(scene)
    escape_closes_a_dialog(scene)
    exported = search_and_export_audit(scene)
    export_without_server_route_and_study_cycle(scene, exported)
    models_and_drift_plot(scene)


def sign_in_and_skip_to_content(scene: Scene) -> None:
    """Sign in with the keyboard (the token field has the focus), then the skip link."""
    page, node = scene.page, scene.node
    page.goto(f"{node.base_url}/console/")
    screenshot(page, "01-sign-in")
    sign_in(page, node, admin_token(node))
    expect(cell(page, "hl7-in", "received")).to_have_text("0")
    expect(page.locator("#identity")).to_have_text("bootstrap-admin (admin)")
    tab_to(page, "el.textContent === 'Skip to content'", "the skip link", backwards=True)
    expect(page.get_by_role("link", name="Skip to content")).to_be_in_viewport()
    page.keyboard.press("Enter")
    assert active(page, "el.id") == "channels-title"


def dashboard_counts_live_and_flags_errors(scene: Scene) -> None:
    """Two messages arrive while the dashboard is open; then one is refused."""
    page = scene.page
    send_hl7(scene.hl7_port, "orm_o01_nw", "adt_a01_admit", tmp=scene.tmp_path)
    page.wait_for_function(
        """() => {
            const row = document.querySelector('#channels-table tr[data-channel="hl7-in"]');
            const text = (f) => row.querySelector(`td[data-field="${f}"]`).textContent;
            return text('received') === '2' && Number(text('inRate')) > 0;
        }""", timeout=UI_TIMEOUT_MS)
    expect(cell(page, "hl7-in", "state")).to_have_text("OK")
    reply = send_frame(scene.hl7_port, b"this is not HL7")  # refused: hl7-in's errors rise
    assert b"MSA|AE" in reply or b"MSA|AR" in reply
    expect(page.locator('#channels-table tr[data-channel="hl7-in"].stuck')).to_be_visible()
    expect(cell(page, "hl7-in", "state")).to_contain_text("errors rising (+1)")
    screenshot(page, "02-channels")


def find_by_accession_and_open(scene: Scene) -> int:
    """The order's message found by accession and opened: every stage side by side."""
    page = scene.page
    page.get_by_role("link", name="Messages", exact=True).click()
    page.get_by_label("Accession").fill("ACC26120001")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#messages-table tbody tr")
    expect(page.locator("#messages-table caption")).to_contain_text("accession ACC26120001")
    expect(rows).to_have_count(1)
    message_id = int(rows.first.get_attribute("data-message-id") or 0)
    detail = scene.node.client.get(f"/api/messages/{message_id}").json()
    assert detail["accession"] == "ACC26120001"
    screenshot(page, "03-messages")
    page.get_by_role("link", name=f"Open message {message_id}").click()
    stages = page.locator(".stages .stage")
    expect(stages.first.locator("pre")).to_contain_text("ACC26120001")
    assert stages.count() >= 3  # received, queued -> registry, sent -> registry
    screenshot(page, "04-message")
    return message_id


def reprocess_with_progress(scene: Scene, message_id: int) -> None:
    """Confirmed; busy while the request is held; then followed to generation 1."""
    page = scene.page
    held: list[Any] = []
    page.route("**/api/messages/*/reprocess", lambda route: held.append(route))
    page.get_by_role("button", name=f"Reprocess message {message_id}").click()
    dialog = page.get_by_role("dialog", name=f"Reprocess message {message_id}?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Reprocess").click()
    expect(page.locator('[data-region="operation"]')).to_have_attribute("aria-busy", "true")
    expect(page.locator("#progress")).to_be_visible()
    for _ in range(200):  # the browser has sent it: the route holds it
        if held:
            break
        page.wait_for_timeout(50)
    held[0].continue_()
    page.unroute("**/api/messages/*/reprocess")
    expect(page.locator('[data-field="operation-text"]')).to_contain_text(
        f"Message {message_id} reprocessed: generation 1, routed")
    expect(page.locator('[data-field="generation"]')).to_have_text("1")
    expect(page.locator('[data-region="operation"]')).to_have_attribute("aria-busy", "false")
    expect(page.locator("#progress")).to_be_hidden()
    assert scene.node.client.get(f"/api/messages/{message_id}").json()["generation"] == 1
    screenshot(page, "05-reprocessed")
    page.keyboard.press("Escape")  # back to the results
    expect(page.locator("#messages-table")).to_be_visible()


def link_by_keyboard_only(scene: Scene) -> None:
    """The stray study linked to the X-ray order ACC26120002, found by its accession."""
    page, node = scene.page, scene.node
    wait_until(lambda: _open_item(node, scene.stray_uid) is not None, 30,
               "the stray study queued")
    item = _open_item(node, scene.stray_uid)
    assert item is not None
    tab_to(page, "el.dataset.nav === 'reconciliation'", "the Reconciliation link",
           backwards=True)
    page.keyboard.press("Enter")
    expect(page.locator("#reconciliation-table")).to_be_visible()
    tab_to(page, f"el.getAttribute('aria-label') === 'Link item {item['id']} to an order'",
           f"the Link button of item {item['id']}")
    outline = active(page, "getComputedStyle(el).outlineStyle + ' ' + getComputedStyle(el)"
                           ".outlineWidth")
    assert outline.split()[0] != "none" and float(outline.split()[1].rstrip("px")) >= 2
    page.keyboard.press("Enter")
    assert active(page, "el.name") == "order_ids"
    tab_to(page, "el.name === 'lookup_accession'", "the accession lookup")
    page.keyboard.type("ACC26120002")
    page.keyboard.press("Enter")
    use = page.get_by_role("button", name=re.compile(r"^Use order \d+$"))
    expect(use).to_have_count(1)
    order_id = int((use.text_content() or "").split()[-1])
    tab_to(page, "/^Use order/.test(el.textContent)", "the order found")
    page.keyboard.press("Enter")
    assert active(page, "el.value") == str(order_id)
    tab_to(page, "el.name === 'note'", "the note")
    page.keyboard.type("ordered on paper; RIS order ACC26120002")
    screenshot(page, "06-reconciliation-link")
    tab_to(page, "el.type === 'submit'", "the Link button of the dialog")
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.locator(f'#reconciliation-table tr[data-item-id="{item["id"]}"]')
           ).to_have_count(0)
    linked = node.client.get(f"/api/studies/{scene.stray_uid}").json()["orders"]
    assert [(o["order_id"], o["rule"]) for o in linked] == [(order_id, "manual")]
    assert "linked by hand: ordered on paper" in linked[0]["reason"]
    assert linked[0]["decided_by"].startswith("token:")


def escape_closes_a_dialog(scene: Scene) -> None:
    """Escape closes a dialog and gives the focus back to the button that opened it."""
    page, node = scene.page, scene.node
    wait_until(lambda: any(_open_item(node, uid) for uid in scene.xray_uids), 60,
               "an X-ray study queued (nobody ordered them either)")
    other = next(i for i in node.client.get("/api/reconciliation").json()["items"]
                 if i["study_uid"] in scene.xray_uids)
    page.get_by_role("button", name="Show").press("Enter")  # the list again, with it
    expect(page.locator(f'#reconciliation-table tr[data-item-id="{other["id"]}"]')
           ).to_have_count(1)
    page.locator("#reconciliation-title").focus()
    tab_to(page, f"el.getAttribute('aria-label') === 'Reject item {other['id']}'",
           f"the Reject button of item {other['id']}")
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert active(page, "el.getAttribute('aria-label')") == f"Reject item {other['id']}"
    screenshot(page, "07-reconciliation")


def search_and_export_audit(scene: Scene) -> list[dict[str, str]]:
    """The order's trail by accession, exported as CSV (the server's export), read back."""
    page = scene.page
    page.get_by_role("link", name="Audit", exact=True).click()
    page.get_by_label("Accession").fill("ACC26120001")
    page.get_by_role("button", name="Search").click()
    audit_rows = page.locator("#audit-table tbody tr")
    expect(audit_rows.first).to_be_visible()
    shown = {page.locator("#audit-table tbody tr td:nth-child(4)").nth(i).text_content()
             for i in range(audit_rows.count())}
    assert {"message.reprocessed", "message.viewed"} <= shown
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    download = download_info.value
    saved = scene.tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.suffix == ".csv"
    exported = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    expected = scene.node.client.get("/api/audit", params={
        "accession": "ACC26120001", "limit": 1000}).json()["events"]
    # read after the export: its newest event may be one the export itself caused
    assert {int(r["seq"]) for r in exported} >= {e["seq"] for e in expected[1:]}
    assert {r["accession"] for r in exported} == {"ACC26120001"}
    reprocessed = [r for r in exported if r["action"] == "message.reprocessed"]
    assert len(reprocessed) == 1 and reprocessed[0]["actor"].startswith("token:")
    assert json.loads(reprocessed[0]["detail"])["generation"] == 1
    expect(page.locator('[data-field="export-status"]')).to_contain_text(saved.name)
    return exported


def export_without_server_route_and_study_cycle(scene: Scene,
                                                exported: list[dict[str, str]]) -> None:
    """A server without the export route: the console pages through /api/audit itself;
    then the stray study's whole cycle in one call."""
    page = scene.page
    page.route("**/api/audit/export*", lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"error": "Not Found"}'))
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export JSON").click()
    built = scene.tmp_path / "built.json"
    download_info.value.save_as(built)
    page.unroute("**/api/audit/export*")
    events = json.loads(built.read_text(encoding="utf-8"))
    assert {e["accession"] for e in events} == {"ACC26120001"}
    assert {e["seq"] for e in events} >= {int(r["seq"]) for r in exported}
    expect(page.locator('[data-field="export-status"]')).to_contain_text(
        f"({len(events)} events)")
    screenshot(page, "08-audit")
    page.get_by_label("Accession").fill("")
    page.get_by_label("Study UID").fill(scene.stray_uid)
    page.get_by_role("button", name="Study cycle").click()
    expect(page.get_by_role("heading", name=f"Study {scene.stray_uid}: its cycle")
           ).to_be_focused()
    screenshot(page, "08b-study-cycle")


def models_and_drift_plot(scene: Scene) -> None:
    """The fracture model's score, baseline against current and per scanner, as SVG."""
    page = scene.page
    wait_until(lambda: sum(r["n"] for r in qa_rows(scene.node)) >= 4, 120,
               "QA observations of the four X-rays")
    page.get_by_role("link", name="Models & drift").click()
    expect(page.locator("#drift select[name=model]")).to_have_value("fracture-xr")
    plot = page.locator("#drift svg.chart").first
    expect(plot).to_be_visible()
    assert plot.locator("rect.bar-baseline").count() >= 10
    assert plot.locator("rect.bar-current").count() >= 10
    assert "Score distribution" in (plot.locator("title").first.text_content() or "")
    scanners = page.locator("#drift svg.chart").nth(1)
    expect(scanners.locator("text", has_text="SYN-2")).to_have_count(1)
    per_model = page.get_by_role("table", name=re.compile(r"^Per model, from the newest"))
    expect(per_model.locator("td", has_text="fracture-xr")).to_have_count(1)
    screenshot(page, "09-models-and-drift")


def _open_item(node: RadbridgeNode, study_uid: str) -> dict[str, Any] | None:
    items = node.client.get("/api/reconciliation").json()["items"]
    return next((i for i in items if i["study_uid"] == study_uid), None)


# --- 2. tokens and roles -----------------------------------------------------------------


def test_forged_viewer_and_revoked_tokens(spawn: Spawn, page: Page, tmp_path: Path,
                                          receiver: Any) -> None:
    node = spawn(channel_yaml=relay_channel(receiver.url),
                 database_url=f"sqlite:///{tmp_path / 'store.db'}", node_id="tokens").start()

    sign_in(page, node, "rb_forged-token-that-was-never-made")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator(".signin-messages")).to_contain_text("did not accept your token")
    assert page.evaluate("sessionStorage.length") == 0

    created = node.cli("token", "create", "--role", "viewer", "--name", "wall-display", "--json")
    assert created.returncode == 0, created.stderr
    viewer = json.loads(created.stdout)
    sign_in(page, node, viewer["token"])
    expect(cell(page, "relay", "received")).to_have_text("0")
    expect(page.locator("#identity")).to_have_text("wall-display (viewer)")
    assert page.evaluate("Object.keys(sessionStorage)") == ["radbridge.console.token"]
    assert page.evaluate("localStorage.length") == 0
    page.get_by_role("link", name="Messages", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Your role cannot read messages")
    screenshot(page, "10-viewer-forbidden")

    page.get_by_role("link", name="Channels", exact=True).click()
    expect(cell(page, "relay", "received")).to_have_text("0")
    revoked = node.cli("token", "revoke", str(viewer["id"]))
    assert revoked.returncode == 0, revoked.stderr
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # the next poll
    expect(page.locator(".signin-messages")).to_contain_text("did not accept your token")
    screenshot(page, "11-token-revoked")


# --- 3. the console's functions, in the browser --------------------------------------------


ORIGIN = "http://console.invalid"


def test_console_functions_in_the_browser(page: Page) -> None:
    """The modules as served (api_console.assets), without a node: pure functions only."""

    def serve(route: Any) -> None:
        path = route.request.url.removeprefix(f"{ORIGIN}/console/")
        asset = api_console.assets().get(path)
        if asset is None:
            route.fulfill(status=200, body="<!doctype html><title>blank</title>",
                          content_type="text/html")
        else:
            route.fulfill(status=200, body=asset.body, content_type=asset.media_type)

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/console/blank")
    results = page.evaluate("""async () => {
        const channels = await import('/console/views/channels.js');
        const exporting = await import('/console/export.js');
        const reconciliation = await import('/console/views/reconciliation.js');
        const charts = await import('/console/charts.js');
        const models = await import('/console/views/models.js');
        const channel = {statistics: {received: 10, waiting: 2, filtered: 1, routed: 5,
            errored: 1, rejected: 1, destinations: {
                a: {pending: 3, in_flight: 1, sent: 4, dead: 1, oldest_pending_seconds: 75},
                b: {pending: 0, in_flight: 0, sent: 2, dead: 0, oldest_pending_seconds: 0}}}};
        const figures = channels.summarize(channel);
        const earlier = {at: 0, figures: {...figures, received: 4, sent: 2, errored: 2}};
        const later = {at: 2000, figures};
        let badOrder = null;
        try { reconciliation.parseOrderIds('12, x7'); } catch (e) { badOrder = e.message; }
        return {
            figures,
            rates: channels.rates(earlier, later),
            noRates: channels.rates(null, later),
            stuck: channels.stuckReason(earlier, later, 60),
            calm: channels.stuckReason(later, {at: 4000, figures: {...figures, oldest: 5}}, 60),
            csv: exporting.toCsv([{seq: 1, actor: 'token:a,b', detail: {z: 1, a: '"q"'},
                                   action: '=SUM(A1)', outcome: '-1'}],
                                 ['seq', 'actor', 'action', 'outcome', 'detail']),
            json: exporting.toJsonArray([{seq: 1}, {seq: 2}]),
            orders: reconciliation.parseOrderIds(' 12, 13 12\\n14'),
            badOrder,
            bins: charts.binLabels([0.1, 0.2], [0, 1]),
            openBins: charts.binLabels([5, 10]),
            shares: charts.shares([1, 3, 0]),
            perModel: models.runsPerModel([
                {model_name: 'm', model_version: '1', status: 'done', positive: true,
                 emergent: false, inference_ms: 4, created_at: 't2'},
                {model_name: 'm', model_version: '1', status: 'skipped', positive: null,
                 emergent: false, inference_ms: null, created_at: 't1'},
                {model_name: 'm', model_version: '1', status: 'failed-final', positive: null,
                 emergent: false, inference_ms: 8, created_at: 't0'}]),
        };
    }""")
    # errored 1 + rejected 1; sent 4 + 2; queue: waiting 2 + pending 3 + in flight 1
    assert results["figures"] == {"received": 10, "filtered": 1, "errored": 2, "sent": 6,
                                  "dead": 1, "queue": 6, "oldest": 75}
    assert results["rates"] == {"inRate": 3.0, "sentRate": 2.0}  # (10-4)/2 s, (6-2)/2 s
    assert results["noRates"] == {"inRate": None, "sentRate": None}
    assert results["stuck"] == "oldest pending 1 min 15 s"  # errored did not rise (2 -> 2)
    assert results["calm"] is None
    assert results["csv"] == ('seq,actor,action,outcome,detail\r\n'
                              '1,"token:a,b",\'=SUM(A1),\'-1,"{""a"":""\\""q\\"""",""z"":1}"\r\n')
    assert results["json"] == '[\n{"seq":1},\n{"seq":2}\n]\n'
    assert results["orders"] == [12, 13, 14]
    assert results["badOrder"] == '"x7" is not an order id (a whole number).'
    dash = "\u2013"  # an en dash, as the charts label ranges
    assert results["bins"] == [f"0{dash}0.1", f"0.1{dash}0.2", f"0.2{dash}1"]
    assert results["openBins"] == ["< 5", f"5{dash}10", "\u2265 10"]
    assert results["shares"] == [0.25, 0.75, 0]
    [group] = results["perModel"]
    assert (group["runs"], group["done"], group["skipped"], group["failed"],
            group["positive"], group["medianMs"], group["last"]) == (3, 1, 1, 1, 1, 6, "t2")
