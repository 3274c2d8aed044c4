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
