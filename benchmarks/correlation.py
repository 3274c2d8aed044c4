"""Correlation decisions per second at 1M orders and 1M studies, SQLite and PostgreSQL.

    python -m benchmarks.correlation            # 1,000,000 orders and studies
    python -m benchmarks.correlation --rows 100000 --stores sqlite

The store is filled through the drivers (synthetic, no real person's data): 200,000
patients with 5 orders each (accession, modality, scheduled time; 30% with the Study UID
they assign) and one study per order in the DICOM index (90% with the order's accession,
10% with none; 40% under the order's assigned UID). Then 2,000 random studies are
correlated one by one, each in its own write transaction (the candidates read, the rules,
the link or queue row and its audit event written), as the `correlation` destination
does. The query plans of the candidate queries are printed: each must use an index.

Results go to benchmarks/results/correlation.json (ignored by git).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import random
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text

from benchmarks import stores
from radbridge.engine.correlation.service import Settings, correlate_study
from radbridge.engine.db import Database
from radbridge.engine.migrate import upgrade
from radbridge.engine.models import DICOM_STUDIES, ORDERS, Patient

RESULTS = Path(__file__).resolve().parent / "results" / "correlation.json"
PATIENTS = Patient.__table__
DECISIONS = 2000
BATCH = 20_000


def fill(database: Database, rows: int, seed: int = 5) -> list[str]:
    """Patients, orders and studies; returns the study UIDs."""
    rng = random.Random(seed)
    patients = max(1, rows // 5)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with database.engine.begin() as connection:
        for first in range(0, patients, BATCH):
            connection.execute(insert(PATIENTS), [
                {"id": i + 1, "identifier": f"MRN{i:08d}", "issuer": "HOSP",
                 "created_at": start, "updated_at": start}
                for i in range(first, min(first + BATCH, patients))])
    study_uids = []
    with database.engine.begin() as connection:
        for first in range(0, rows, BATCH):
            orders, studies = [], []
            for n in range(first, min(first + BATCH, rows)):
                patient = n // 5
                when = start + timedelta(days=rng.randrange(300), minutes=rng.randrange(600))
                assigned = f"2.25.{n}" if rng.random() < 0.3 else None
                orders.append({"id": n + 1, "patient_id": patient + 1,
                               "accession": f"ACC{n:09d}", "study_uid": assigned,
                               "modality": rng.choice(("CT", "MR", "CR")),
                               "procedure_code": "P1", "scheduled_at": when,
                               "status": "scheduled", "created_at": start,
                               "updated_at": start})
                uid = assigned if assigned and rng.random() < 0.4 else f"1.2.826.0.1.{n}"
                study_uids.append(uid)
                studies.append({"study_uid": uid, "channel": "dicom-in",
                                "patient_id": f"MRN{patient:08d}", "issuer_of_patient_id": None,
                                "accession": f"ACC{n:09d}" if rng.random() < 0.9 else None,
                                "study_date": when.strftime("%Y%m%d"),
                                "modalities": orders[-1]["modality"], "series_count": 1,
                                "instance_count": 1, "first_received_at": when,
                                "last_received_at": when, "state": "ready",
                                "ready_version": 1})
            connection.execute(insert(ORDERS), orders)
            connection.execute(insert(DICOM_STUDIES), studies)
    return study_uids


def plans(database: Database) -> list[str]:
    """The plans of the candidate queries on this store (each should name an index)."""
    explain = ("EXPLAIN QUERY PLAN " if not database.is_postgres else "EXPLAIN ")
    queries = [
        "SELECT * FROM dicom_studies WHERE study_uid = '1.2.826.0.1.7'",
        "SELECT * FROM orders WHERE study_uid = '2.25.7' OR accession IN ('ACC000000007') "
        "OR (patient_id IN (2) AND scheduled_at BETWEEN '2026-01-01' AND '2026-01-05')",
        "SELECT * FROM patients WHERE identifier = 'MRN00000001' AND issuer = 'HOSP'",
        "SELECT order_id FROM study_order_links WHERE order_id IN (1, 2, 3)",
        "SELECT * FROM dicom_instances WHERE study_uid = '1.2.826.0.1.7' AND current",
    ]
    found = []
    with database.engine.connect() as connection:
        for query in queries:
            rows = connection.execute(text(explain + query)).all()
            found.append(" | ".join(str(row[-1]) for row in rows))
    return found


def decide(database: Database, study_uids: list[str], count: int) -> dict[str, Any]:
    rng = random.Random(11)
    sample = rng.sample(study_uids, min(count, len(study_uids)))
    outcomes: dict[str, int] = {}
    began = time.perf_counter()
    for uid in sample:
        with database.write() as session:
            decision = correlate_study(session, uid, Settings(), actor="bench", chain="bench")
        outcomes[decision.outcome.value] = outcomes.get(decision.outcome.value, 0) + 1
    seconds = time.perf_counter() - began
    return {"decisions": len(sample), "seconds": round(seconds, 2),
            "per_s": round(len(sample) / seconds, 1), "outcomes": outcomes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--decisions", type=int, default=DECISIONS)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="rb-corr-") as folder:
        for kind in filter(None, args.stores.split(",")):
            with ExitStack() as stack:
                url = (f"sqlite:///{Path(folder) / 'corr.db'}" if kind == "sqlite"
                       else stack.enter_context(stores.postgres_database()))
                results.append(run(kind, Database(url), args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return 0


def run(kind: str, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    upgrade(database)
    began = time.perf_counter()
    uids = fill(database, args.rows)
    filled = time.perf_counter() - began
    with database.engine.connect() as connection:  # fresh statistics for the planner
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    row = {"store": kind, "orders": args.rows, "studies": args.rows,
           "fill_seconds": round(filled, 1), "plans": plans(database),
           **decide(database, uids, args.decisions)}
    database.dispose()
    print(f"{kind}: {row['per_s']} decisions/s over {row['decisions']} "
          f"({row['outcomes']}), {args.rows:,} orders and studies")
    for plan in row["plans"]:
        print(f"  plan: {plan}")
    return row


if __name__ == "__main__":
    raise SystemExit(main())
