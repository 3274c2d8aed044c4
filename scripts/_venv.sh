# Sourced by run.sh and test.sh: make (once) and refresh the project's virtual environment.
# RADBRIDGE_VENV picks its folder (default .venv in the repo); EXTRAS picks pip extras.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${RADBRIDGE_VENV:-$repo/.venv}
python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv" >&2
  "$python_bin" -m venv "$venv"
fi
spec="$repo${EXTRAS:+[$EXTRAS]}"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
"$venv/bin/python" -c "import radbridge" || { echo "installing radbridge failed" >&2; exit 1; }
