#!/usr/bin/env bash
# Set up llamactl and start it on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet -e .
# No config file is needed: the embedded defaults serve http://127.0.0.1:8080 and keep
# the database and logs under ~/.local/share/llamactl.
exec .venv/bin/llamactl serve "$@"
