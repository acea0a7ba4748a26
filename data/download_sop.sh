#!/usr/bin/env bash
# Download and unpack Stanford Online Products (about 2.9 GB) into data/.
#   bash data/download_sop.sh [target_dir]     (default: the folder of this script)
# Resumable: run it again after an interruption and the download continues.
# The original example's address is the Stanford ftp server; if it is not reachable
# from your network, download Stanford_Online_Products.zip by hand from the
# Baidu AI Studio mirror (https://aistudio.baidu.com/aistudio/datasetDetail/5103),
# put it in the target folder and run this script again: it then only unpacks.
set -euo pipefail
target="${1:-$(cd "$(dirname "$0")" && pwd)}"
url="${SOP_URL:-ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip}"
zip="$target/Stanford_Online_Products.zip"
mkdir -p "$target"

if [ ! -f "$zip.done" ] && [ -f "$zip" ] && python3 -m zipfile -l "$zip" >/dev/null 2>&1; then
  touch "$zip.done"   # placed by hand and complete
fi
if [ ! -f "$zip.done" ]; then
  echo "downloading $url -> $zip"
  if command -v wget >/dev/null; then
    fetch=(wget -c -O "$zip" "$url")
  else
    fetch=(curl -fL -C - -o "$zip" "$url")
  fi
  if ! "${fetch[@]}"; then
    echo "error: could not download $url." >&2
    echo "Download Stanford_Online_Products.zip from https://aistudio.baidu.com/aistudio/datasetDetail/5103," >&2
    echo "place it at $zip, and run this script again." >&2
    exit 1
  fi
  touch "$zip.done"
fi

echo "unpacking $zip"
python3 -m zipfile -e "$zip" "$target"
for f in Ebay_train.txt Ebay_test.txt; do
  if [ ! -f "$target/Stanford_Online_Products/$f" ]; then
    echo "error: $target/Stanford_Online_Products/$f is missing after unpacking; the zip may be damaged:" >&2
    echo "delete $zip and $zip.done and run this script again." >&2
    exit 1
  fi
done
echo "done: --data_dir=$target/Stanford_Online_Products"
