#!/usr/bin/env bash
# Set up .venv with the test requirements and run the whole test suite (CPU, no network).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" requirements-test.txt
cd "$root"
exec .venv/bin/python -m pytest "$@"
