"""`radbridge validate`: every issue on stderr as file:line: field: message, exit 1; else OK.

Most tests build their own parser around `validate_cmd.register`, so they do not depend
on the other subcommand modules; one test runs the real console script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from radbridge.channels import DEFAULT_DIR, EXAMPLES_DIR
from radbridge.interfaces.cli import validate_cmd

BROKEN = """\
name: alpha
source:
  type: http
  bogus: 1
destinations:
  - name: archive
    type: file
    queue: {max_attempts: 0}
"""


def validate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="radbridge")
    validate_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", *argv])
    result: int = args.handler(args)
    return result


def test_default_channels_are_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate(str(DEFAULT_DIR)) == 0
    out, err = capsys.readouterr()
    assert out == "OK: 13 channel(s) in 13 file(s)\n"
    assert err == ""


def test_example_channels_are_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate(str(DEFAULT_DIR), str(EXAMPLES_DIR)) == 0
    assert capsys.readouterr().out.startswith("OK: 18 channel(s)")


def test_every_issue_on_stderr_one_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alpha.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    assert validate(str(path)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:4: source.bogus: unknown key 'bogus'; expected one of: max_size, type",
        f"{path}:6: destinations[0].directory: required",
        f"{path}:8: destinations[0].queue.max_attempts:"
        " Input should be greater than or equal to 1; got 0",
    ]


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alpha.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    assert validate("--json", str(path)) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["channels"] == []
    assert result["issues"][0] == {
        "file": str(path),
        "line": 4,
        "path": "source.bogus",
        "message": "unknown key 'bogus'; expected one of: max_size, type",
    }
    assert len(result["issues"]) == 3

    assert validate("--json", str(DEFAULT_DIR)) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "channels": ["ai-results", "dicom-in", "dicomweb-in", "drop-folder", "ehr-fhir",
                     "ehr-reports", "hl7-in", "inbox", "inference-done", "pacs-out",
                     "ris-oru", "ris-priority", "study-ready"],
        "issues": [],
    }


def test_missing_path_is_an_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate(str(tmp_path / "nope.yaml")) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'nope.yaml'}: no such file or directory\n"


def test_no_arguments_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        validate()
    assert caught.value.code == 2


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "radbridge"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "radbridge"]
    ok = subprocess.run([*command, "validate", str(DEFAULT_DIR)],
                        capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "OK: 13 channel(s) in 13 file(s)\n", "")
    path = tmp_path / "alpha.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    bad = subprocess.run([*command, "validate", str(path)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.splitlines()[0] == (
        f"{path}:4: source.bogus: unknown key 'bogus'; expected one of: max_size, type"
    )
