#!/usr/bin/env bash
# Download and unpack CUB-200-2011 (about 1.1 GB) into data/CUB_200_2011, then write its lists.
#   bash data/download_cub.sh [target_dir]     (default: the folder of this script)
# Resumable: run it again after an interruption and the download continues (from
# CUB_200_2011.tgz.part; the archive appears under its own name only once complete).
# If the address is not reachable from your network, download CUB_200_2011.tgz by hand
# from the Caltech DATA record https://data.caltech.edu/records/65de6-vp158, put it in
# the target folder and run this script again: it then only unpacks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/download_lib.sh"
target="${1:-$here}"
url="${CUB_URL:-https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz}"
tgz="$target/CUB_200_2011.tgz"
mkdir -p "$target"

if ! tgz_ok "$tgz"; then
  if ! fetch "$url" "$tgz" || ! tgz_ok "$tgz"; then
    echo "error: could not download $url (partial data kept in $tgz.part for a resumed run)." >&2
    echo "Download CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158," >&2
    echo "place it at $tgz, and run this script again." >&2
    exit 1
  fi
fi

echo "unpacking $tgz"
tar -xzf "$tgz" -C "$target"
"$(python_for_prepare)" "$here/prepare.py" cub --src "$target/CUB_200_2011" --out "$target/CUB_200_2011"
