"""Debian's rsyslog as a real syslog collector for the audit forwarding tests.

`Rsyslog` runs `rsyslogd -n -f CONF -i PIDFILE` in the foreground as a child process,
with its own config, work directory and pid file in a temporary folder (the system's
rsyslog service, if any, is never touched): imudp and, with TLS files, imtcp over the
gtls stream driver (RFC 5425), both on 127.0.0.1. Every message received on them is
written to `received.jsonl` as rsyslog's own JSON rendering (`%jsonmesg%`: msg, rawmsg,
app-name, msgid, procid, hostname, structured-data, inputname, ...), one line each.

It is ready when a probe datagram it was sent shows up in that file; `messages()` leaves
probes out. `stop()` (SIGTERM) and `kill()` (SIGKILL) take the collector away and
`start()` brings it back on the same ports, so a test can take it down for a while.

`make_ca` and `make_cert` write certificates with the openssl command line (Debian's
openssl package): a CA, and server or client certificates it signs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

RSYSLOGD = "/usr/sbin/rsyslogd"
PROBE_MSGID = "RADBRIDGE-PROBE"
OUTPUT = "received.jsonl"


class RsyslogError(RuntimeError):
    """rsyslogd could not be started, or a message did not arrive in time."""


def missing() -> str | None:
    """Why rsyslog cannot run here (None when it can, with its TLS driver)."""
    if shutil.which("rsyslogd") is None and not Path(RSYSLOGD).exists():
        return "rsyslogd is not installed (scripts/test.sh installs Debian's rsyslog)"
    if not glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") and \
            not glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so"):
        return "rsyslog's TLS driver is missing (Debian package rsyslog-gnutls)"
    if shutil.which("openssl") is None:
        return "the openssl command line is missing (Debian package openssl)"
    return None


@dataclass(frozen=True)
class TlsFiles:
    """The collector's certificate and key, and the CA it checks client certificates with."""

    ca: Path
    cert: Path
    key: Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Rsyslog:
    """One rsyslogd on 127.0.0.1: UDP always, TLS when `tls` is given."""

    def __init__(self, workdir: Path, *, tls: TlsFiles | None = None,
                 require_client_cert: bool = False) -> None:
        self.workdir = workdir
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tls_port = free_port() if tls is not None else None
        self.output = workdir / OUTPUT
        self.config = workdir / "rsyslog.conf"
        self.log = workdir / "rsyslogd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._probes = 0
        workdir.mkdir(parents=True, exist_ok=True)

    # --- running ---------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        self.config.write_text(self._config_text())
        binary = shutil.which("rsyslogd") or RSYSLOGD
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "-n", "-f", str(self.config), "-i", str(self.workdir / "pid")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout)

    def stop(self) -> None:
        """SIGTERM: rsyslog closes its connections and writes what it holds."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the collector vanishes mid-stream."""
        self._end(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "pid").unlink()

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _wait_ready(self, timeout: float) -> None:
        """Until a probe datagram has gone through to the output file."""
        self._probes += 1
        probe = f"probe-{self._probes}"
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    raise RsyslogError(f"rsyslogd exited:\n{self.log_tail()}")
                sock.sendto(f"<13>1 - probe test - {PROBE_MSGID} - {probe}".encode(),
                            ("127.0.0.1", self.udp_port))
                if any(r.get("msg") == probe for r in self._records()):
                    return self._wait_tls(deadline)
                time.sleep(0.1)
        raise RsyslogError(f"rsyslogd did not receive within {timeout}s:\n{self.log_tail()}")

    def _wait_tls(self, deadline: float) -> None:
        if self.tls_port is None:
            return
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.tls_port), timeout=1):
                return
            time.sleep(0.1)
        raise RsyslogError(f"rsyslogd does not listen on {self.tls_port}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # --- what arrived ----------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        """Every message received so far (probes left out), in arrival order."""
        return [r for r in self._records() if r.get("msgid") != PROBE_MSGID]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The messages once at least `count` have arrived; RsyslogError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(found) < count:
            raise RsyslogError(f"{len(found)} of {count} messages arrived in {timeout}s:\n"
                               f"{self.log_tail()}")
        return found

    def _records(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        found = []
        for line in self.output.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    # --- the config ------------------------------------------------------------------

    def _config_text(self) -> str:
        lines = [f'global(workDirectory="{self.workdir}" maxMessageSize="64k"']
        if self.tls is not None:
            lines[0] += (f'\n       DefaultNetstreamDriverCAFile="{self.tls.ca}"'
                         f'\n       DefaultNetstreamDriverCertFile="{self.tls.cert}"'
                         f'\n       DefaultNetstreamDriverKeyFile="{self.tls.key}"')
        lines[0] += ")"
        lines += ['module(load="imudp")',
                  f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}")']
        if self.tls is not None:
            mode = "x509/certvalid" if self.require_client_cert else "anon"
            lines += [f'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                      f'StreamDriver.AuthMode="{mode}")',
                      f'input(type="imtcp" address="127.0.0.1" port="{self.tls_port}")']
        lines += ['template(name="radbridge_json" type="string" string="%jsonmesg%\\n")',
                  'if $inputname == "imudp" or $inputname == "imtcp" then {',
                  f'  action(type="omfile" file="{self.output}" template="radbridge_json")',
                  '}']
        return "\n".join(lines) + "\n"


# --- certificates ----------------------------------------------------------------------


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RsyslogError(f"openssl {' '.join(args[:2])} failed: {done.stderr[-500:]}")


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_cert(folder: Path, name: str, ca: tuple[Path, Path], *,
              client: bool = False) -> tuple[Path, Path]:
    """A certificate signed by `ca` for 127.0.0.1 and localhost: (certificate, key)."""
    cert, key, request = (folder / f"{name}.pem", folder / f"{name}.key",
                          folder / f"{name}.csr")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
             str(request), "-subj", f"/CN={name}")
    extensions = folder / f"{name}.ext"
    usage = "clientAuth" if client else "serverAuth"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          f"extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions))
    return cert, key
