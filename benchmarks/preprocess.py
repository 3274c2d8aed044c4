"""Preprocessing throughput: a 300-slice CT from DICOM files to a model's tensor, against
the floor of a bare pydicom read-and-decode loop over the same files, same run.

    python -m benchmarks.preprocess            # 300 slices of 512x512, 3 rounds
    python -m benchmarks.preprocess --quick    # 60 slices, 2 rounds

Two copies of the series: uncompressed (explicit VR little endian) and JPEG 2000
lossless. The Radbridge figure is `inference.preprocess.prepare` with a head-CT card's
rule (order along the normal, rescale, window, resample to 5x0.9x0.9 mm, resize to
32x128x128) including reading the files, so it compares with the floor like for like.
Results go to benchmarks/results/preprocess.json (ignored by git).
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
from collections.abc import Callable, Sequence

import pydicom
from pydicom.uid import JPEG2000Lossless
from rich.console import Console
from rich.table import Table

from radbridge.inference.cards import Preprocessing, Range
from radbridge.inference.preprocess import prepare
from tests import dicom_data

RESULTS = Path(__file__).resolve().parent / "results" / "preprocess.json"
RULE = Preprocessing(kind="volume", size=[32, 128, 128], spacing=[5.0, 0.9, 0.9],
                     window=Range(min=0, max=80))


def write_series(folder: Path, slices: int) -> tuple[list[Path], list[Path]]:
    """The uncompressed series and its JPEG 2000 lossless copy."""
    plain = dicom_data.make_ct_series(folder / "plain", slices, rows=512, columns=512, seed=11)
    compressed_dir = folder / "j2k"
    compressed_dir.mkdir()
    compressed = []
    for path in plain:
        dataset = pydicom.dcmread(path)
        dataset.compress(JPEG2000Lossless)
        target = compressed_dir / path.name
        dataset.save_as(target, enforce_file_format=True)
        compressed.append(target)
    return plain, compressed


def floor(paths: Sequence[Path]) -> None:
    for path in paths:
        _ = pydicom.dcmread(path).pixel_array


def radbridge(paths: Sequence[Path]) -> None:
    prepare(RULE, [pydicom.dcmread(path) for path in paths])


def slices_per_second(task: Callable[[Sequence[Path]], None], paths: Sequence[Path],
                      rounds: int) -> float:
    """The median rate over `rounds` (files are in the page cache after the first)."""
    task(paths[:5])  # warm imports and decoders
    rates = []
    for _ in range(rounds):
        began = time.perf_counter()
        task(paths)
        rates.append(len(paths) / (time.perf_counter() - began))
    return statistics.median(rates)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    slices, rounds = (60, 2) if args.quick else (300, 3)
    results = []
    with tempfile.TemporaryDirectory(prefix="rb-preprocess-") as temp:
        plain, compressed = write_series(Path(temp), slices)
        for label, paths in (("uncompressed", plain), ("JPEG 2000 lossless", compressed)):
            reference = slices_per_second(floor, paths, rounds)
            figure = slices_per_second(radbridge, paths, rounds)
            results.append({"series": label, "slices": slices, "floor_slices_per_s": reference,
                            "radbridge_slices_per_s": figure, "ratio": figure / reference})
    table = Table(title=f"Preprocessing a {slices}-slice 512x512 CT (slices/s, median of "
                        f"{rounds})")
    for column in ("series", "pydicom decode loop (floor)", "Radbridge prepare", "ratio"):
        table.add_column(column, justify="left" if column == "series" else "right")
    for row in results:
        table.add_row(row["series"], f"{row['floor_slices_per_s']:.0f}",
                      f"{row['radbridge_slices_per_s']:.0f}", f"{row['ratio']:.2f}")
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
