"""C-STORE ingest: Radbridge against dcmtk's storescp and Orthanc, same run, same files.

    python -m benchmarks.dicom            # 500 CT instances (512x512x16), 2 GB study
    python -m benchmarks.dicom --quick    # 200 instances, 512 MB study

The sender is always dcmtk's `storescu` with TCP_NODELAY=1 (Debian's dcmtk otherwise
waits for delayed ACKs), over one association and over 4 parallel associations (the
files split four ways). Receivers:
- storescp: writes each instance to a file; no fsync, no index (the reference);
- Orthanc 1.10: stores and indexes (SQLite index), in its own network namespace with
  the senders inside it (Orthanc cannot bind to loopback only);
- radbridge: `radbridge run` (SQLite store, one `dimse` channel to a null destination):
  each instance is streamed to the blob store, fsynced, indexed and committed with its
  audit event before the success status goes back. Run as one process and with --split.
- durable floor (`durable_floor.py`): the same files' I/O alone, one at a time: the blob
  written, fsynced and renamed, its folder fsynced, one row committed to SQLite (WAL,
  synchronous=FULL). No protocol, no parsing: no receiver that makes each instance
  durable before answering can pass it on one association.

Peak memory: a study of multi-frame instances (2 GB in all) sent to Radbridge; the
figure is the receiving processes' peak RSS (VmHWM), storescp's beside it.
Results go to benchmarks/results/dicom.json (ignored by git).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from benchmarks import durable_floor
from benchmarks.nodes import (
    RunningNode,
    channel_statistics,
    free_port,
    radbridge,
    wait_processed,
)
from tests import dicom_data
from tests.peers import dcmtk
from tests.peers.netns import NetworkNamespace, namespace_pids
from tests.peers.orthanc import OrthancPeer

RESULTS = Path(__file__).resolve().parent / "results" / "dicom.json"
ASSOCIATIONS = (1, 4)

Sender = Callable[[Sequence[Path]], None]


def split(files: Sequence[Path], parts: int, workdir: Path) -> list[Path]:
    """The files hard-linked into `parts` folders, one per association."""
    folders = []
    for index in range(parts):
        folder = workdir / f"part-{parts}-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        for path in files[index::parts]:
            target = folder / path.name
            if not target.exists():
                os.link(path, target)
        folders.append(folder)
    return folders


def send(host: str, port: int, ae: str, folders: Sequence[Path],
         namespace: NetworkNamespace | None) -> float:
    """Send every folder over its own association at once; seconds until all are done."""
    def one(folder: Path) -> None:
        done = dcmtk.storescu(host, port, [folder], ae, namespace=namespace, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"storescu failed: {done.stdout[-800:]}{done.stderr[-800:]}")

    os.sync()  # earlier runs' dirty pages are written back now, not during this one
    began = time.perf_counter()
    with ThreadPoolExecutor(len(folders)) as pool:
        list(pool.map(one, folders))
    return time.perf_counter() - began


def figure(party: str, associations: int, count: int, size: int, seconds: float
           ) -> dict[str, Any]:
    return {"party": party, "associations": associations, "instances": count,
            "seconds": round(seconds, 3), "per_s": round(count / seconds, 1),
            "mb_per_s": round(size / seconds / 1e6, 1)}


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process and its children (the --split pair), in MB."""
    total = 0
    pids = [pid, *_children(pid)]
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return round(total / 1024, 1)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            found += [int(p) for p in children.read_text().split()]
    return found


def run_storescp(files: Sequence[Path], size: int, workdir: Path) -> list[dict[str, Any]]:
    rows = []
    with NetworkNamespace() as namespace:
        for associations in ASSOCIATIONS:
            folders = split(files, associations, workdir)
            with dcmtk.Storescp(output_dir=workdir / f"storescp-{associations}",
                                namespace=namespace, bridge=False) as scp:
                seconds = send("127.0.0.1", scp.inner_port, scp.ae_title, folders, namespace)
                assert len(scp.files()) == len(files), "storescp did not write every file"
            rows.append(figure("dcmtk storescp", associations, len(files), size, seconds))
    return rows


def run_orthanc(files: Sequence[Path], size: int, workdir: Path) -> list[dict[str, Any]]:
    rows = []
    with OrthancPeer() as orthanc:
        for associations in ASSOCIATIONS:
            orthanc.clear()
            folders = split(files, associations, workdir)
            seconds = send("127.0.0.1", orthanc.inner_dicom_port, orthanc.ae_title, folders,
                           orthanc.namespace)
            assert len(orthanc.instances()) == len(files), "Orthanc did not store every file"
            rows.append(figure("Orthanc 1.10", associations, len(files), size, seconds))
    return rows


def dimse_channel(port: int) -> dict[str, Any]:
    return {"name": "dicom-in", "source": {"type": "dimse", "port": port},
            "destinations": [{"name": "archive", "type": "null"}]}


def received(node: RunningNode) -> int:
    """Instances the channel stored (rejected ones would count too: the runs assert none)."""
    return int(channel_statistics(node, "dicom-in")["received"])


def run_radbridge(files: Sequence[Path], size: int, workdir: Path, split_roles: bool
                  ) -> list[dict[str, Any]]:
    rows = []
    mode = "2 processes" if split_roles else "1 process"
    warm_up = dicom_data.make_ct_series(workdir / "warm-up", 1, seed=8)[0].parent
    for associations in ASSOCIATIONS:
        folders = split(files, associations, workdir)
        data = workdir / f"radbridge-{associations}-{split_roles}"
        port = free_port()
        with radbridge(dimse_channel(port), f"sqlite:///{data / 'store.db'}", data,
                       split_roles) as node:
            # One instance through before the clock starts, so that the node (and with
            # --split its processing child) is up and running when it does.
            send("127.0.0.1", port, "RADBRIDGE", [warm_up], None)
            wait_processed(node, "dicom-in")
            seconds = send("127.0.0.1", port, "RADBRIDGE", folders, None)
            count = received(node) - 1
            assert count == len(files), f"radbridge stored {count} of {len(files)}"
        rows.append(figure(f"radbridge, {mode}", associations, len(files), size, seconds))
    return rows


def run_memory(study_bytes: int, workdir: Path) -> list[dict[str, Any]]:
    """Peak RSS while receiving one study of 4 large multi-frame instances."""
    folder = workdir / "big"
    folder.mkdir(exist_ok=True)
    part = study_bytes // 4
    paths = [dicom_data.big_multiframe(folder / f"MF{i}.dcm", part, seed=100 + i)
             for i in range(4)]
    total = sum(p.stat().st_size for p in paths)
    rows = []
    data = workdir / "radbridge-big"
    port = free_port()
    with radbridge(dimse_channel(port), f"sqlite:///{data / 'store.db'}", data, False) as node:
        began = time.perf_counter()
        send("127.0.0.1", port, "RADBRIDGE", [folder], None)
        seconds = time.perf_counter() - began
        assert received(node) == len(paths)
        rows.append({"party": "radbridge, 1 process", "study_mb": round(total / 1e6),
                     "seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb(node.pid)})
    with NetworkNamespace() as namespace, dcmtk.Storescp(
            output_dir=workdir / "storescp-big", namespace=namespace, bridge=False) as scp:
        began = time.perf_counter()
        send("127.0.0.1", scp.inner_port, scp.ae_title, [folder], namespace)
        seconds = time.perf_counter() - began
        rows.append({"party": "dcmtk storescp", "study_mb": round(total / 1e6),
                     "seconds": round(seconds, 2), "peak_rss_mb": _storescp_rss(namespace)})
    return rows


def _storescp_rss(namespace: NetworkNamespace) -> float:
    return max((peak_rss_mb(pid) for pid in namespace_pids(namespace.name)), default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--instances", type=int)
    parser.add_argument("--study-mb", type=int)
    parser.add_argument("--skip", default="", help="comma-separated: orthanc,split,memory,floor")
    args = parser.parse_args(argv)
    count = args.instances or (200 if args.quick else 500)
    study = (args.study_mb or (512 if args.quick else 2048)) * 2**20
    skip = set(filter(None, args.skip.split(",")))
    rows: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rb-dicom-")))
        files = dicom_data.make_ct_series(workdir / "ct", count, seed=7)
        size = sum(p.stat().st_size for p in files)
        rows += run_storescp(files, size, workdir)
        if "floor" not in skip:
            rows += durable_floor.run(files, workdir)
        rows += run_radbridge(files, size, workdir, False)
        if "split" not in skip:
            rows += run_radbridge(files, size, workdir, True)
        if "orthanc" not in skip:
            rows += run_orthanc(files, size, workdir)
        if "memory" not in skip:
            memory = run_memory(study, workdir)
    print_report(rows, memory)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"instances": count, "rows": rows, "memory": memory},
                                  indent=2))
    return 0


def print_report(rows: list[dict[str, Any]], memory: list[dict[str, Any]]) -> None:
    reference = {r["associations"]: r["per_s"] for r in rows if r["party"] == "dcmtk storescp"}
    print(f"{'receiver':<26} {'assoc':>5} {'inst/s':>8} {'MB/s':>7} {'x storescp':>10}")
    for row in rows:
        ratio = row["per_s"] / reference[row["associations"]]
        print(f"{row['party']:<26} {row['associations']:>5} {row['per_s']:>8.1f} "
              f"{row['mb_per_s']:>7.1f} {ratio:>10.2f}")
    for row in memory:
        print(f"{row['party']:<26} study {row['study_mb']} MB in {row['seconds']} s, "
              f"peak RSS {row['peak_rss_mb']} MB")


if __name__ == "__main__":
    raise SystemExit(main())
