"""The web console's first page loads with 1,000,000 messages in the store, timed in
headless chromium: navigation start to the table rendered.

    python -m benchmarks.console                       # 1,000,000 messages, SQLite and PostgreSQL
    python -m benchmarks.console --messages 100000 --stores sqlite --repeat 3

The store is filled through the drivers with synthetic rows (no real person's data): each
message has its received stage (a 230-byte HL7-like text) and one delivery, over 8 channels
and 30 days; 97% routed (delivery sent), 2% filtered (no delivery), 1% errored (delivery
dead), and 200 deliveries pending with their next attempt far ahead so that the node
leaves them alone (the dashboard's oldest pending age). Indexes are dropped for the load,
rebuilt from the models, and the tables analysed. Then a real `radbridge run` serves the
store, and Debian's chromium (Playwright) opens the console with the node's admin token:

- dashboard: /console/#/channels to the channels table rendered (the console marks
  `console:channels-rendered` with performance.mark);
- message browser: /console/#/messages to its first page of 50 rendered
  (`console:messages-rendered`).

Each is timed `--repeat` times in a fresh browser context (nothing cached: "cold") and
once more as a reload in that context ("warm": static files revalidated, 304). The
time of the page's API request (its resource timing) is given beside each, to show what
the store costs and what the browser does. Reference: the same pages, same node, on the
empty store first. Results go to benchmarks/results/console.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import yaml
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import text

from benchmarks import nodes, stores
from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import Base
from radbridge.interfaces.auth.bootstrap import ADMIN_TOKEN_FILE

RESULTS = Path(__file__).resolve().parent / "results" / "console.json"
CHROMIUM = os.environ.get("RADBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHANNELS = tuple(f"bench-{index:02d}" for index in range(8))
CHANNEL_SHARES = (0.30, 0.20, 0.15, 0.10, 0.10, 0.07, 0.05, 0.03)
DESTINATION = "out"
PENDING = 200
NOW = datetime.now(UTC).replace(microsecond=0)
DAYS = 30
CHUNK = 50_000
TABLES = {name: Base.metadata.tables[name] for name in ("messages", "message_stages",
                                                        "deliveries")}
MESSAGE_COLUMNS = ("id", "uid", "channel", "status", "generation", "received_at",
                   "updated_at", "source", "content_type", "dedup_key", "patient_id",
                   "accession", "study_uid", "metadata", "attempts", "error")
STAGE_COLUMNS = ("id", "message_id", "generation", "stage", "at", "content_type", "content",
                 "content_sha256", "content_size", "in_blob")
DELIVERY_COLUMNS = ("id", "message_id", "channel", "destination", "generation", "status",
                    "attempts", "created_at", "updated_at", "next_attempt_at", "sent_at",
                    "idempotency_key", "content_stage_id", "last_error")
PAGES = {"dashboard": ("#/channels", "console:channels-rendered", "/api/channels"),
         "message browser": ("#/messages", "console:messages-rendered", "/api/messages")}


# --- the synthetic month -----------------------------------------------------------------


def _content(key: int) -> bytes:
    return (f"MSH|^~\\&|BENCH|SITE|RADBRIDGE|SITE|20261101120000||ADT^A08^ADT_A01|B{key:09d}"
            f"|P|2.5.1\rEVN|A08|20261101120000\rPID|1||BENCH-P{key % 50_000:06d}^^^BENCH^MR"
            f"||SYNTHETIC^PATIENT^{key % 997}||19700101|U\rPV1|1|O\r").encode()


def _stamp(at: datetime, postgres: bool) -> Any:
    return at if postgres else at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def chunks(total: int, postgres: bool, seed: int = 11
           ) -> Iterator[tuple[list[tuple[Any, ...]], ...]]:
    """Messages, stages and deliveries, in id order, `CHUNK` messages at a time."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, DAYS * 86400, total))  # seconds after the month began
    pending = set(rng.choice(total, size=min(PENDING, total), replace=False).tolist())
    start = NOW - timedelta(days=DAYS)
    never = _stamp(datetime(2100, 1, 1, tzinfo=UTC), postgres)
    for first in range(0, total, CHUNK):
        n = min(CHUNK, total - first)
        channel = rng.choice(len(CHANNELS), n, p=CHANNEL_SHARES)
        outcome = rng.random(n)
        messages, stages, deliveries = [], [], []
        for i in range(n):
            key = first + i + 1
            at = _stamp(start + timedelta(seconds=float(offsets[first + i])), postgres)
            status = ("errored" if outcome[i] < 0.01 else "filtered" if outcome[i] < 0.03
                      else "routed")
            name = CHANNELS[int(channel[i])]
            content = _content(key)
            messages.append((key, f"{key:032x}", name, status, 0, at, at, "http:bench",
                             "x-application/hl7-v2+er7", None, f"BENCH-P{key % 50_000:06d}",
                             f"BENCH-A{key:09d}", None, "{}", 1,
                             "bench: transform failed" if status == "errored" else None))
            stages.append((key, key, 0, "received", at, "x-application/hl7-v2+er7", content,
                           hashlib.sha256(content).hexdigest(), len(content), False))
            if status == "filtered":
                continue
            state = ("pending" if key - 1 in pending else "dead" if status == "errored"
                     else "sent")
            deliveries.append((key, key, name, DESTINATION, 0, state, 1, at, at,
                               never if state == "pending" else at,
                               at if state == "sent" else None, f"bench-{key}", key,
                               "bench: refused" if state == "dead" else None))
        yield messages, stages, deliveries


def fill(database: Database, total: int) -> float:
    """Load the month with the secondary indexes dropped; returns the seconds it took."""
    started = time.perf_counter()
    with stores.indexes_dropped(database, TABLES.values()):
        for messages, stages, deliveries in chunks(total, database.is_postgres):
            for table, columns, rows in (("messages", MESSAGE_COLUMNS, messages),
                                         ("message_stages", STAGE_COLUMNS, stages),
                                         ("deliveries", DELIVERY_COLUMNS, deliveries)):
                stores.bulk_load(database, table, columns, rows)
    with database.engine.begin() as connection:
        if database.is_postgres:  # ids were given: move the sequences past them
            for table in TABLES:
                connection.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"))
    with database.engine.connect() as connection:
        if database.is_postgres:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE"))
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()
    return time.perf_counter() - started


# --- the browser -----------------------------------------------------------------------------


def channel_file() -> str:
    """The channels the rows belong to, one YAML document each."""
    return yaml.safe_dump_all([{"name": name, "source": {"type": "http"},
                                "destinations": [{"name": DESTINATION, "type": "null"}]}
                               for name in CHANNELS], sort_keys=False)


@contextmanager
def serving(url: str, data_dir: Path) -> Iterator[str]:
    """`radbridge run` on the store with `channel_file()`; yields its base URL once ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "channels.yaml"
    config.write_text(channel_file())
    port = nodes.free_port()
    command = [sys.executable, "-m", "radbridge", "run", "-c", str(config), "--data-dir",
               str(data_dir), "--database-url", url, "--port", str(port), "--node-id", "bench"]
    base = f"http://127.0.0.1:{port}"
    with nodes.process(command, log=data_dir / "radbridge.log"):
        nodes.wait_ready(base, data_dir / "radbridge.log", 120)
        yield base


@dataclass(frozen=True)
class Load:
    """One page load: navigation start to the table rendered, and its API request."""

    rendered_ms: float
    api_ms: float


def load_page(browser: Browser, base: str, token: str, page_name: str, repeat: int
              ) -> dict[str, Any]:
    route, mark, api_path = PAGES[page_name]
    cold: list[Load] = []
    warm: list[Load] = []
    for _ in range(repeat):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_init_script(
            f"sessionStorage.setItem('radbridge.console.token', {json.dumps(token)})")
        page = context.new_page()
        for kind, into in (("cold", cold), ("warm", warm)):
            if kind == "cold":
                page.goto(f"{base}/console/{route}")
            else:
                page.reload()
            page.wait_for_function(f"() => performance.getEntriesByName({mark!r}).length > 0",
                                   timeout=120_000)
            into.append(Load(*page.evaluate(f"""() => [
                performance.getEntriesByName({mark!r})[0].startTime,
                performance.getEntriesByType('resource')
                    .filter((e) => new URL(e.name).pathname === {api_path!r})[0].duration]""")))
        context.close()
    return {kind: {"rendered_median_ms": round(statistics.median(x.rendered_ms for x in loads), 1),
                   "rendered_max_ms": round(max(x.rendered_ms for x in loads), 1),
                   "api_median_ms": round(statistics.median(x.api_ms for x in loads), 1),
                   "samples_ms": [round(x.rendered_ms, 1) for x in loads]}
            for kind, loads in (("cold", cold), ("warm", warm))}


def measure(url: str, data_dir: Path, repeat: int) -> dict[str, Any]:
    """`radbridge run` on the filled store; each page timed in chromium."""
    with serving(url, data_dir) as base, sync_playwright() as playwright:
        token = (data_dir / ADMIN_TOKEN_FILE).read_text().strip()
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root otherwise
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            loads = {name: load_page(browser, base, token, name, repeat) for name in PAGES}
        finally:
            browser.close()
    # Other work on the machine shows here: the 1-minute load average after the pages.
    return {**loads, "load_average_1min": round(os.getloadavg()[0], 2)}


def run(kind: str, url: str, data_dir: Path, total: int, repeat: int) -> dict[str, Any]:
    """The reference (the same pages on the empty store), then the filled store's."""
    database = Database(url)
    try:
        upgrade(database)
        reference = measure(url, data_dir, repeat)
        _print(f"{kind}, empty store (reference)", reference)
        filled = fill(database, total)
    finally:
        database.dispose()
    print(f"{kind}: {total:,} messages loaded in {filled:.0f} s", flush=True)
    results = measure(url, data_dir, repeat)
    _print(f"{kind}, {total:,} messages", results)
    return {"store": kind, "messages": total, "fill_seconds": round(filled, 1),
            "reference_empty_store": reference, **results}


def _print(title: str, results: dict[str, Any]) -> None:
    print(f"{title} (load average {results['load_average_1min']})", flush=True)
    for page in PAGES:
        for temperature, numbers in results[page].items():
            print(f"  {page}, {temperature}: rendered {numbers['rendered_median_ms']} ms "
                  f"(max {numbers['rendered_max_ms']}), its API request "
                  f"{numbers['api_median_ms']} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="rb-console-") as folder:
        for kind, url in stores.store_urls(args.stores, Path(folder), "console"):
            results.append(run(kind, url, Path(folder) / kind, args.messages,
                               max(1, args.repeat)))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": stores.machine_info(), "runs": results},
                                  indent=2, default=str))
    print(f"JSON written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
