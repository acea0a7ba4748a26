#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements into it.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="${1:-requirements.txt}"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
stamp="$root/.venv/.installed-$(basename "$req")"
if [ ! -f "$stamp" ] || [ "$root/$req" -nt "$stamp" ] || [ "$root/requirements.txt" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/$req"
  touch "$stamp"
fi
