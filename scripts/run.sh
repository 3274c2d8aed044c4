#!/usr/bin/env bash
# The main job on a fresh machine: install Radbridge in .venv and run it on its embedded
# defaults (SQLite and blobs under ./radbridge-data, the default channels, API on
# 127.0.0.1:8080). Arguments go to `radbridge run` (e.g. -c my-channels/ --port 9000).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
exec "$venv/bin/radbridge" run "$@"
