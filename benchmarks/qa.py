"""QA views at 1,000,000 AI results, SQLite and PostgreSQL: agreement, the per-scanner
breakdown and drift, computed in SQL by `radbridge.engine.qa.queries`.

    python -m benchmarks.qa                          # 1,000,000 observations, both stores
    python -m benchmarks.qa --rows 100000 --stores sqlite

The store is filled through the drivers with synthetic rows (no real person's data): a
year of study dates in arrival order, four model versions (40/30/20/10% of the traffic),
one inference run and one finding each, 12 scanner models of 4 makers, 30 stations,
5 sites; 40% of the results have a radiologist's read (5% of those uncertain, left out of
the table). From the monitor's current period on (its last 22 days) scanner model CT-07
of the largest model gives higher scores and 5 mm slices, so the drift views and the
monitor have something to find.
Indexes are dropped for the load and rebuilt from the models, then the tables are
analysed. Each view is timed warm, median of `--repeat` runs, each in its own read
session; the plans of the main queries are printed (each must use the index).

Results go to benchmarks/results/qa.json (ignored by git).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import text

from benchmarks import stores
from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import Base
from radbridge.engine.qa import monitor, queries
from radbridge.engine.qa.queries import Window

RESULTS = Path(__file__).resolve().parent / "results" / "qa.json"
TODAY = date(2026, 11, 24)
DAYS = 365
CHUNK = 100_000
MODELS = (("ich-ct", "1.0", 0.4), ("pe-ctpa", "2.1", 0.3), ("cxr-fracture", "1.2", 0.2),
          ("mammo-mass", "3.0", 0.1))
MAKERS = ("Acme", "Beta", "Gamma", "Delta")
KERNELS = ("STANDARD", "SOFT", "BONE", "LUNG", "B30f", "FC03")
SHIFTED_SCANNER = "CT-07"
SHIFT_DAY = DAYS - 1 - (TODAY - monitor.MonitorSettings().windows(TODAY)[1].start).days
"""The shift starts with the monitor's current period (2026-11-03), 22 days before TODAY."""
READ_SHARE = 0.4
TABLES = {name: Base.metadata.tables[name]
          for name in ("inference_runs", "qa_observations", "qa_reads")}
RUN_COLUMNS = ("id", "study_uid", "study_version", "model_name", "model_version",
               "card_sha256", "device_identifier", "demonstration", "intended_use",
               "use_case", "backend", "status", "instances", "positive", "emergent",
               "findings", "attempts", "created_at", "updated_at")
OBS_COLUMNS = ("id", "run_id", "study_uid", "accession", "model_name", "model_version",
               "finding_code", "finding_system", "score", "ai_positive", "threshold",
               "study_date", "recorded_at", "manufacturer", "scanner_model", "station", "site",
               "sex", "age_band", "kvp", "slice_thickness", "pixel_spacing", "kernel",
               "pixel_mean", "pixel_std", "strata")
READ_COLUMNS = ("id", "study_uid", "accession", "finding_code", "finding_system", "call",
                "radiologist_positive", "source", "report_status", "reported_at")


# --- the synthetic year ------------------------------------------------------------------


def generate(rows: int, seed: int = 7) -> Iterator[dict[str, np.ndarray[Any, Any]]]:
    """Columns of `rows` observations in chunks, in study-date order."""
    rng = np.random.default_rng(seed)
    days = np.sort(rng.integers(0, DAYS, rows))
    for first in range(0, rows, CHUNK):
        n = min(CHUNK, rows - first)
        ids = np.arange(first + 1, first + n + 1)
        model = rng.choice(len(MODELS), n, p=[share for *_, share in MODELS])
        scanner = rng.integers(0, 12, n)
        score = rng.beta(2.0, 5.0, n)
        thickness = rng.choice([0.625, 1.0, 1.25, 2.5], n)
        late = (days[first:first + n] >= SHIFT_DAY) & (model == 0) & (scanner == 7)
        score = np.where(late, np.minimum(score + 0.25, 1.0), score)
        thickness = np.where(late, 5.0, thickness)
        yield {"id": ids, "day": days[first:first + n], "model": model, "scanner": scanner,
               "score": score, "thickness": thickness,
               "station": rng.integers(0, 30, n), "site": rng.integers(0, 5, n),
               "sex": rng.integers(0, 3, n), "age": rng.integers(0, 5, n),
               "kvp": rng.choice([80.0, 100.0, 120.0, 140.0], n),
               "spacing": rng.uniform(0.4, 0.9, n), "kernel": rng.integers(0, 6, n),
               "mean": rng.normal(0.0, 1.0, n), "std": rng.uniform(0.8, 1.2, n),
               "read": rng.random(n) < READ_SHARE, "uncertain": rng.random(n) < 0.05,
               "truth": rng.random(n) < score + 0.1}


def _rows(chunk: dict[str, np.ndarray[Any, Any]], postgres: bool
          ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Runs, observations and reads of one chunk, as each driver takes them."""
    start = TODAY - timedelta(days=DAYS - 1)
    at = datetime(2026, 11, 24, 12, tzinfo=UTC)
    stamp: Any = at if postgres else at.strftime("%Y-%m-%d %H:%M:%S.%f")

    def flag(value: bool) -> bool | int:
        return bool(value) if postgres else int(value)

    runs, observations, reads = [], [], []
    for i in range(len(chunk["id"])):
        key = int(chunk["id"][i])
        name, version, _ = MODELS[int(chunk["model"][i])]
        uid, accession = f"2.25.{10**9 + key}", f"ACC{key:09d}"
        day = start + timedelta(days=int(chunk["day"][i]))
        score, scanner = float(chunk["score"][i]), int(chunk["scanner"][i])
        positive = score >= 0.5
        runs.append((key, uid, 1, name, version, "0" * 64, "bench", flag(True), "", "bench",
                     "onnxruntime", "done", 1, flag(positive), flag(False), "[]", 1, stamp,
                     stamp))
        observations.append((
            key, key, uid, accession, name, version, "1", "SCT", score, flag(positive), 0.5,
            day if postgres else day.isoformat(), stamp, MAKERS[scanner % 4],
            f"CT-{scanner:02d}", f"ST{int(chunk['station'][i]):02d}",
            f"Site {int(chunk['site'][i])}", ("female", "male", "unknown")[chunk["sex"][i]],
            ("<18", "18-39", "40-64", "65-79", "80+")[chunk["age"][i]], float(chunk["kvp"][i]),
            float(chunk["thickness"][i]), float(chunk["spacing"][i]),
            KERNELS[int(chunk["kernel"][i])], float(chunk["mean"][i]), float(chunk["std"][i]),
            "{}"))
        if chunk["read"][i]:
            truth = None if chunk["uncertain"][i] else flag(chunk["truth"][i])
            call = "uncertain" if truth is None else ("positive" if truth else "negative")
            reads.append((key, uid, accession, "1", "SCT", call, truth, "coded", "F", stamp))
    return runs, observations, reads


def fill(database: Database, rows: int) -> float:
    """Load the year with the secondary indexes dropped; returns the seconds it took."""
    started = time.perf_counter()
    with stores.indexes_dropped(database, TABLES.values()):
        for chunk in generate(rows):
            runs, observations, reads = _rows(chunk, database.is_postgres)
            for table, columns, values in (("inference_runs", RUN_COLUMNS, runs),
                                           ("qa_observations", OBS_COLUMNS, observations),
                                           ("qa_reads", READ_COLUMNS, reads)):
                stores.bulk_load(database, table, columns, values)
    _analyze(database)
    return time.perf_counter() - started


def _analyze(database: Database) -> None:
    with database.engine.connect() as connection:
        if database.is_postgres:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE"))
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()


# --- timing --------------------------------------------------------------------------------


def timed(database: Database, view: Callable[[Any], object], repeat: int) -> dict[str, Any]:
    """Median and spread of `view(session)` in milliseconds, after one warm-up run."""
    samples = []
    for attempt in range(repeat + 1):
        began = time.perf_counter()
        with database.read() as session:
            view(session)
        if attempt:
            samples.append((time.perf_counter() - began) * 1000.0)
    return {"median_ms": round(statistics.median(samples), 1),
            "min_ms": round(min(samples), 1), "max_ms": round(max(samples), 1)}


def measure(database: Database, repeat: int) -> dict[str, Any]:
    model, version = MODELS[0][:2]
    quarter = Window.last(90, TODAY)
    baseline, current = queries.drift_windows(TODAY)
    views: dict[str, Callable[[Any], object]] = {
        "agreement, one model, 90 days": lambda s: queries.agreement(
            s, model, version, quarter),
        "agreement by scanner model, 90 days": lambda s: queries.agreement(
            s, model, version, quarter, "model"),
        "agreement, every model, 90 days": lambda s: queries.agreement(s, window=quarter),
        "drift, one model (90-day baseline, 30 days)": lambda s: queries.drift(
            s, model, version, baseline, current),
    }
    results = {name: timed(database, view, repeat) for name, view in views.items()}
    settings = monitor.MonitorSettings(period_days=30, baseline_days=90)
    began = time.perf_counter()
    _, alerts = monitor.assess(database, settings, TODAY)
    results["monitor pass, every model"] = {
        "median_ms": round((time.perf_counter() - began) * 1000.0, 1), "runs": 1,
        "alerts": sorted({f"{a.model} {a.measure}" for a in alerts})}
    with database.read() as session:
        (report,) = queries.drift(session, model, version, baseline, current)
        rows = queries.agreement(session, model, version, quarter).rows
        plans = queries.plans(session, model, version, quarter)
    shifted = next(s for s in report.scanners if s.scanner_model == SHIFTED_SCANNER)
    results["check"] = {"agreement_n": rows[0].n, "paired": rows[0].agreement.counts.total,
                        "score_psi": report.score.psi, f"{SHIFTED_SCANNER}_psi": shifted.psi}
    results["plans"] = plans
    return results


def run(kind: str, url: str, rows: int, repeat: int) -> dict[str, Any]:
    database = Database(url)
    try:
        upgrade(database)
        filled = fill(database, rows)
        print(f"{kind}: {rows:,} observations loaded in {filled:.0f} s", flush=True)
        results = measure(database, repeat)
    finally:
        database.dispose()
    for name, figures in results.items():
        if name == "plans":
            for query, plan in figures.items():
                scans = [line.strip() for line in plan.splitlines() if "Scan" in line
                         or "SEARCH" in line or "SCAN" in line]
                print(f"  plan {query}: {' | '.join(scans)}")
        else:
            print(f"  {name}: {figures}")
    return {"store": kind, "rows": rows, "fill_seconds": round(filled, 1), **results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="rb-qa-") as folder:
        for kind, url in stores.store_urls(args.stores, Path(folder), "qa"):
            results.append(run(kind, url, args.rows, max(1, args.repeat)))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": stores.machine_info(), "runs": results},
                                  indent=2, default=str))
    print(f"JSON written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
