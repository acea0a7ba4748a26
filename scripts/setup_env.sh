#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements into it.
#   bash scripts/setup_env.sh [requirements file]      (default: $REQUIREMENTS, else requirements.txt)
#   REQUIREMENTS=requirements-gpu.txt bash scripts/setup_env.sh     # the GPU wheel (README, "GPU")
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="${1:-${REQUIREMENTS:-requirements.txt}}"
if [ ! -f "$root/$req" ]; then
  echo "error: requirements file $root/$req not found" >&2
  exit 2
fi
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
stamp="$root/.venv/.installed-$(basename "$req")"
stale=0
[ -f "$stamp" ] || stale=1
for file in "$root"/requirements*.txt "$root/pyproject.toml"; do   # any requirements file may be included by another
  if [ "$file" -nt "$stamp" ]; then stale=1; fi
done
if [ "$stale" = 1 ]; then
  # paddlepaddle and paddlepaddle-gpu install the same `paddle` module: keep only the one asked for
  if grep -q '^paddlepaddle-gpu' "$root/$req"; then other=paddlepaddle; else other=paddlepaddle-gpu; fi
  if "$root/.venv/bin/python" -m pip show --quiet "$other" >/dev/null 2>&1; then
    "$root/.venv/bin/python" -m pip uninstall --quiet --yes "$other"
  fi
  "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/$req"
  # the toolkit itself, editable: `dml` command, `import dml` from anywhere; the pins above are its dependencies
  "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root"
  touch "$stamp"
fi
