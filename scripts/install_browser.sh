#!/usr/bin/env bash
# Headless Chromium for the web page's browser test (tests/test_serve_page.py), from
# Debian's packages, where it is missing. Needs root (or sudo) and apt-get; safe to run again.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: chromium is missing and this system has no apt-get: install Chromium, then run the tests again" >&2
  exit 2
fi
as_root=()
if [ "$(id -u)" != 0 ]; then as_root=(sudo); fi
echo "installing chromium (Debian's package) for the browser test"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
