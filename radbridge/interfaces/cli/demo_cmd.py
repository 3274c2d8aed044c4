"""`radbridge demo`: run the whole imaging-AI flow on this machine and show what left.

It starts `radbridge run` with the shipped channels on free local ports, registers a
patient and orders a head CT over MLLP, sends the generated CT over C-STORE, and waits
until the RIS, EHR and PACS outputs have left (files under DIR/data/outbox, or real
peers with --ris, --ehr, --pacs). Exit status 0 when every output the model's answer
calls for left, 1 otherwise (what is missing and the engine log's tail are printed), 2
for bad usage.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from radbridge.errors import RadbridgeError
from radbridge.interfaces.cli.common import print_json
from radbridge.interfaces.demo.channels import (
    DemoSetupError,
    Endpoints,
    Ports,
    parse_ehr,
    parse_pacs,
    parse_ris,
    write_channel_set,
)
from radbridge.interfaces.demo.engine import Engine
from radbridge.interfaces.demo.messages import DemoCase
from radbridge.interfaces.demo.report import as_json, show
from radbridge.interfaces.demo.runner import run_case

MIN_SLICES, MAX_SLICES = 21, 2000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run the whole imaging-AI flow on embedded defaults",
                            description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--data-dir", type=Path, default=Path("radbridge-demo"),
                        help="folder for the channels, the store, the outbox and the log "
                             "(default ./radbridge-demo)")
    parser.add_argument("--ris", metavar="HOST:PORT",
                        help="send the priority update and the ORU to this MLLP peer")
    parser.add_argument("--ehr", metavar="FHIR_BASE_URL",
                        help="send the FHIR Bundle to this FHIR R4 server")
    parser.add_argument("--pacs", metavar="AE@HOST:PORT",
                        help="send the SR and SEG to this C-STORE SCP")
    parser.add_argument("--slices", type=int, default=32, help="CT slices (default 32)")
    parser.add_argument("--negative", action="store_true",
                        help="a head CT without a haemorrhage")
    parser.add_argument("--stat", action="store_true",
                        help="order the CT STAT (default routine: the AI raises it)")
    parser.add_argument("--quiet-period", type=float, default=2.0,
                        help="seconds without a new instance before the study is complete")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds to wait for the outputs once the study was sent")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the engine running afterwards (stop it with SIGTERM)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON (progress goes to stderr)")
    parser.set_defaults(handler=_run)


class RichProgress:
    """Progress lines with the time since the start, and a spinner while waiting."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.began = time.monotonic()
        self.status = console.status("starting")

    def done(self, text: str) -> None:
        self.console.print(f"[green]✓[/] [dim]{time.monotonic() - self.began:6.1f}s[/] {text}")

    def waiting(self, text: str) -> None:
        self.status.update(text)


def _endpoints(args: argparse.Namespace) -> Endpoints:
    return Endpoints(ris=parse_ris(args.ris) if args.ris else None,
                     ehr=parse_ehr(args.ehr) if args.ehr else None,
                     pacs=parse_pacs(args.pacs) if args.pacs else None)


def _run(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json, highlight=False)
    try:
        endpoints = _endpoints(args)
        if not MIN_SLICES <= args.slices <= MAX_SLICES:
            raise DemoSetupError(f"--slices: expected {MIN_SLICES} to {MAX_SLICES} (the head"
                                 " is 115 mm long; the ich-ct model takes slices up to 6 mm)")
    except DemoSetupError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    root = args.data_dir.resolve()
    ports = Ports.free()
    engine = Engine(root / "channels", root / "data", root / "radbridge.log", ports.api)
    progress = RichProgress(console)
    result = None
    try:
        with progress.status:
            write_channel_set(root / "channels", ports, endpoints, args.quiet_period)
            progress.done(f"channel set written to {root / 'channels'}")
            progress.waiting("starting the engine (radbridge run)")
            took = engine.start()
            progress.done(f"engine ready in {took:.1f} s: API http://127.0.0.1:{ports.api}, "
                          f"MLLP 127.0.0.1:{ports.hl7}, DICOM RADBRIDGE@127.0.0.1:{ports.dicom}")
            result = run_case(engine, ports, endpoints, DemoCase.new(stat=args.stat),
                              slices=args.slices, positive=not args.negative,
                              timeout=args.timeout, progress=progress)
    except (RadbridgeError, OSError) as exc:
        console.print(f"[red]failed: {exc}[/]")
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
    finally:
        failed = result is None or not result.ok
        if failed:
            console.print(f"[bold]Last lines of {engine.log_path}:[/]\n{engine.log_tail()}",
                          markup=False)
        if not args.keep_running:
            engine.stop()
        elif engine.process is not None:
            console.print(f"engine left running (pid {engine.process.pid}, "
                          f"API http://127.0.0.1:{ports.api})")
    if result is None:
        return 1
    if args.json:
        print_json(as_json(result, data_dir=str(root), log=str(engine.log_path),
                           api=f"http://127.0.0.1:{ports.api}",
                           engine_running=args.keep_running))
    else:
        show(console, result)
    if not result.ok:
        why = result.problem or "missing " + ", ".join(result.missing)
        console.print(f"[red]incomplete: {why}[/]")
    return 0 if result.ok else 1
