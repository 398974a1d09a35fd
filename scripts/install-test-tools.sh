#!/usr/bin/env bash
# Install the Debian tools the tests run, when missing: promtool (the prometheus package) checks
# /metrics, systemd-analyze (systemd) checks the service unit, /usr/bin/chromium (chromium) is the
# browser the web UI tests (tests/ui) drive with Playwright, instead of `playwright install`.
# Needs root, or sudo without a password.
# Safe to rerun: present tools are skipped.
set -euo pipefail

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if ((${#missing[@]} == 0)); then
    exit 0
fi
as_root=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "install-test-tools: installing ${missing[*]} needs root" >&2; exit 1; }
    as_root=(sudo -n)
fi
echo "install-test-tools: apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
