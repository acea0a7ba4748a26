#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements into it.
#   bash scripts/setup_env.sh [requirements file]      (default: $REQUIREMENTS, else requirements.txt)
#   REQUIREMENTS=requirements-gpu.txt bash scripts/setup_env.sh     # the GPU wheel (README, "GPU")
# Run by scripts/demo.sh and scripts/test.sh; safe to run again.
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
[ "$stale" = 1 ] || exit 0

# paddlepaddle and paddlepaddle-gpu install the same `paddle` module. requirements.txt and
# requirements-gpu.txt choose one; any other file (test, index, bench) adds to the Paddle
# installed: its includes are inlined with requirements.txt read as the installed wheel's
# file, so adding test tools to a GPU install keeps the GPU wheel.
python="$root/.venv/bin/python"
installed() { "$python" -m pip show --quiet "$1" >/dev/null 2>&1; }
case "$(basename "$req")" in
  requirements.txt|requirements-gpu.txt) base="$root/$req" ;;
  *) if installed paddlepaddle-gpu; then base="$root/requirements-gpu.txt"; else base="$root/requirements.txt"; fi ;;
esac
inline() {   # print requirements file $1 with its `-r FILE` lines replaced by FILE's lines
  local file="$1" line target
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      "-r "*)
        target="${line#-r }"
        target="${target#"${target%%[![:space:]]*}"}"
        case "$target" in /*) ;; *) target="$(dirname "$file")/$target" ;; esac
        if [ "$(basename "$target")" = requirements.txt ]; then target="$base"; fi
        inline "$target" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done < "$file"
}
resolved="$root/$req"
if [ "$base" != "$resolved" ]; then
  resolved="$root/.venv/.resolved-$(basename "$req")"
  inline "$root/$req" > "$resolved"
fi
if grep -q '^paddlepaddle-gpu' "$resolved"; then other=paddlepaddle; else other=paddlepaddle-gpu; fi
if installed "$other"; then
  "$python" -m pip uninstall --quiet --yes "$other"
fi
"$python" -m pip install --quiet --disable-pip-version-check -r "$resolved"
# the toolkit itself, editable: `dml` command, `import dml` from anywhere; the pins above are its dependencies
"$python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root"
touch "$stamp"
