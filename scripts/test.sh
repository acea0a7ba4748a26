#!/usr/bin/env bash
# Set up .venv with the test requirements (and Chromium for the browser test) and run the
# whole test suite (CPU, no network).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" requirements-test.txt
bash "$root/scripts/install_browser.sh"   # headless Chromium for the web page's test, where missing
cd "$root"
exec .venv/bin/python -m pytest "$@"
