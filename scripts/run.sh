#!/usr/bin/env bash
# Set up llamactl and start it on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet -e .
# The management server arrives with the instance lifecycle (issues 3 and 4); until then
# this shows what the command line does.
exec .venv/bin/llamactl --help
