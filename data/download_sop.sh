#!/usr/bin/env bash
# Download and unpack Stanford Online Products (about 2.9 GB) into data/.
#   bash data/download_sop.sh [target_dir]     (default: the folder of this script)
# Resumable: run it again after an interruption and the download continues (from
# Stanford_Online_Products.zip.part; the zip appears under its own name only once complete).
# The original example's address is the Stanford ftp server; if it is not reachable
# from your network, download Stanford_Online_Products.zip by hand from the
# Baidu AI Studio mirror (https://aistudio.baidu.com/aistudio/datasetDetail/5103),
# put it in the target folder and run this script again: it then only unpacks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/download_lib.sh"
target="${1:-$here}"
url="${SOP_URL:-ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip}"
zip="$target/Stanford_Online_Products.zip"
mkdir -p "$target"

if ! zip_ok "$zip"; then
  if fetch "$url" "$zip" && ! zip_ok "$zip"; then
    rm -f "$zip"   # what came is not a zip: leave nothing where the user is told to put one
    echo "error: $url did not give a readable zip (removed)." >&2
  fi
  if ! zip_ok "$zip"; then
    [ -s "$zip.part" ] || rm -f "$zip.part"   # nothing came: leave no empty file behind
    kept=""
    [ -f "$zip.part" ] && kept=" (partial data kept in $zip.part for a resumed run)"
    echo "error: could not download $url$kept." >&2
    echo "Download Stanford_Online_Products.zip from https://aistudio.baidu.com/aistudio/datasetDetail/5103," >&2
    echo "place it at $zip, and run this script again." >&2
    exit 1
  fi
fi

echo "unpacking $zip"
python3 -m zipfile -e "$zip" "$target"
for f in Ebay_train.txt Ebay_test.txt; do
  if [ ! -f "$target/Stanford_Online_Products/$f" ]; then
    echo "error: $target/Stanford_Online_Products/$f is missing after unpacking; the zip may be damaged:" >&2
    echo "delete $zip and run this script again." >&2
    exit 1
  fi
done
echo "done: --data_dir=$target/Stanford_Online_Products"
