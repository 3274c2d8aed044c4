#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs Radbridge with its test extras in
# .venv, makes sure PostgreSQL answers on 127.0.0.1 (installing and starting it if not),
# runs ruff and mypy, then pytest. Extra arguments go to pytest (e.g. -k outbox, -m "not slow").
# Exit code: pytest's, except that "no tests ran" (5) is a failure.
set -euo pipefail
EXTRAS=test source "$(dirname "$0")/_venv.sh"
cd "$repo"

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -q 2>/dev/null; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  done
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -q && return 0
    sleep 1
  done
  echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2
  return 1
}
ensure_postgres

# Debian packages whose install scripts would start a system service (Orthanc on
# 0.0.0.0, rsyslog): installed with a policy-rc.d that keeps every service from starting.
install_without_starting() {
  local policy=/usr/sbin/policy-rc.d made_policy=0 status=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  apt-get update -qq >&2 || status=$?
  if [ "$status" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || status=$?
  fi
  if [ "$made_policy" -eq 1 ]; then rm -f "$policy"; fi
  return "$status"
}

# Orthanc (+DICOMweb), dcmtk and dicom3tools for the DICOM tests (tests/peers). The tests
# start their own Orthanc inside a network namespace; a system Orthanc that Debian's
# package scripts start would listen on 0.0.0.0:4242/8042, so it is kept from starting
# (policy-rc.d) and stopped if it started anyway.
ensure_dicom_peers() {
  # dcmtk's own storescu: pynetdicom installs a script of that name in a virtualenv,
  # which `command -v` finds first when one is activated.
  if { command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ]; } \
      && [ -x /usr/bin/storescu ] && command -v dciodvfy >/dev/null; then
    return 0
  fi
  echo "installing Orthanc, dcmtk and dicom3tools from Debian's packages" >&2
  local status=0
  install_without_starting orthanc orthanc-dicomweb dcmtk dicom3tools || status=$?
  if [ -d /run/systemd/system ]; then
    systemctl disable --now orthanc >/dev/null 2>&1 || true
  else
    service orthanc stop >/dev/null 2>&1 || true
  fi
  local pid
  for pid in $(ss -Hltnp '( sport = :4242 or sport = :8042 )' 2>/dev/null \
               | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "Orthanc" ]; then
      echo "stopping the system Orthanc (pid $pid) that the package started" >&2
      kill "$pid" || true
    fi
  done
  return "$status"
}
ensure_dicom_peers

# pixelmed's DicomSRValidator (TID 1500) for the SR conformance test; needs a JRE.
ensure_pixelmed() {
  if command -v java >/dev/null && [ -e /usr/share/java/pixelmed.jar ]; then return 0; fi
  echo "installing pixelmed and a JRE from Debian's packages" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    libpixelmed-java default-jre-headless >&2
}
ensure_pixelmed

# A real tritonserver for the inference tests: nvidia-pytriton in its own virtual
# environment (Debian's python3.11, numpy<2) under ~/.cache/radbridge/peers
# (RADBRIDGE_PEERS_CACHE); the tests start it. Fast when already installed. A failure
# stops the run under CI=true; elsewhere the Triton tests then skip.
ensure_triton_peer() {
  if "$venv/bin/python" -m tests.peers.triton install; then return 0; fi
  if [ -n "${CI:-}" ]; then return 1; fi
  echo "warning: the Triton peer is not installed; its tests will be skipped" >&2
}
ensure_triton_peer

# A real FHIR R4 server for the EHR tests: Medplum's FHIR engine from npm behind a small
# Node HTTP wrapper (tests/peers/fhir/), installed under ~/.cache/radbridge/peers.
ensure_fhir_peer() {
  if "$venv/bin/python" -m tests.peers.fhir_server install; then return 0; fi
  if [ -n "${CI:-}" ]; then return 1; fi
  echo "warning: the FHIR peer is not installed; its tests will be skipped" >&2
}
ensure_fhir_peer

# Debian's chromium for the console's browser tests (tests/e2e/test_console.py), driven by
# Playwright from the test extras; Playwright's own browser download is not used.
ensure_chromium() {
  if command -v chromium >/dev/null; then return 0; fi
  echo "installing chromium from Debian's packages" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
}
ensure_chromium

# Debian's rsyslog (with its GnuTLS stream driver) as the syslog collector of the audit
# forwarding tests (tests/peers/rsyslog.py): they run their own rsyslogd in the foreground
# with their own config on loopback ports. Installing the package would start the system
# service, so it is kept from starting (policy-rc.d); a system rsyslog already there is
# left as it is.
ensure_rsyslog() {
  if [ -x /usr/sbin/rsyslogd ] && ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 \
      && command -v openssl >/dev/null; then
    return 0
  fi
  echo "installing rsyslog, rsyslog-gnutls and gnutls-bin from Debian's packages" >&2
  install_without_starting rsyslog rsyslog-gnutls gnutls-bin openssl
}
ensure_rsyslog
# Trust auth for local tests (the machine kind's default); harmless when already set.
psql -h 127.0.0.1 -U postgres -d postgres -qAtc "select 1" >/dev/null

"$venv/bin/ruff" check radbridge tests benchmarks
"$venv/bin/mypy"   # strict, on engine/, mappings/ and inference/ (see pyproject.toml)

set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
