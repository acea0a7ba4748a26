#!/usr/bin/env bash
# Download and unpack Cars196 ('car_ims' release, about 1.8 GB) into data/cars196, then write its lists.
#   bash data/download_cars.sh [target_dir]     (default: the folder of this script)
# Resumable: run it again after an interruption and the download continues (from
# FILE.part; each file appears under its own name only once complete).
# The Stanford addresses the papers used are often unreachable now: then download
# car_ims.tgz and cars_annos.mat by hand (the 'car_ims' release, mirrored on several
# dataset sites), put both in TARGET/cars196/ and run this script again: it then only unpacks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/download_lib.sh"
target="${1:-$here}/cars196"
base="${CARS_URL_BASE:-http://imagenet.stanford.edu/internal/car196}"
mkdir -p "$target"

give_up() {
  echo "error: could not download $1 (partial data kept in $2.part for a resumed run)." >&2
  echo "Download car_ims.tgz and cars_annos.mat (Stanford Cars, 'car_ims' release) by hand," >&2
  echo "place them in $target/, and run this script again." >&2
  exit 1
}

tgz="$target/car_ims.tgz"
if ! tgz_ok "$tgz"; then
  { fetch "$base/car_ims.tgz" "$tgz" && tgz_ok "$tgz"; } || give_up "$base/car_ims.tgz" "$tgz"
fi
mat="$target/cars_annos.mat"
if [ "$(head -c 6 "$mat" 2>/dev/null)" != "MATLAB" ]; then
  { fetch "$base/cars_annos.mat" "$mat" && [ "$(head -c 6 "$mat")" = "MATLAB" ]; } || give_up "$base/cars_annos.mat" "$mat"
fi

echo "unpacking $tgz"
tar -xzf "$tgz" -C "$target"
"$(python_for_prepare)" "$here/prepare.py" cars --src "$target" --out "$target"
