#!/usr/bin/env bash
# Set up everything the test suite needs (real backends included) and run it, with the linters.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# The real llama-server, mlx_lm.server and vLLM (CPU) the end-to-end tests run; reruns take seconds.
bash scripts/install-test-backends.sh
# promtool, systemd-analyze and Chromium, from Debian's packages, for the metrics, service and UI tests.
bash scripts/install-test-tools.sh

.venv/bin/ruff check llamactl tests tools bench
.venv/bin/ruff format --check llamactl tests tools bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
