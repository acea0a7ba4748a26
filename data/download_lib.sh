# Shared by the download_*.sh scripts (sourced, not run).
# fetch URL DEST: download URL to DEST.part (resumed if a previous run was cut off), then
# rename it to DEST, so a failed download never leaves a file at DEST. Returns non-zero on failure.
fetch() {
  local url="$1" dest="$2"
  echo "downloading $url -> $dest"
  if command -v wget >/dev/null; then
    wget -c -O "$dest.part" "$url" || return 1
  else
    curl -fL -C - -o "$dest.part" "$url" || return 1
  fi
  [ -s "$dest.part" ] || return 1
  mv -f "$dest.part" "$dest"
}

# tgz_ok FILE: the gzip'd tar reads to its end.
tgz_ok() { [ -s "$1" ] && tar -tzf "$1" >/dev/null 2>&1; }

# zip_ok FILE: the zip's directory reads.
zip_ok() { [ -s "$1" ] && python3 -m zipfile -l "$1" >/dev/null 2>&1; }

# python_for_prepare: the project's .venv python when set up (prepare.py needs scipy for
# Cars196 and OpenCV for --crop_boxes), else python3.
python_for_prepare() {
  local venv
  venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
  if [ -x "$venv" ]; then echo "$venv"; else echo python3; fi
}
