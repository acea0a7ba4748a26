#!/usr/bin/env bash
# In-Shop Clothes Retrieval (DeepFashion): unpack into data/inshop and write its lists.
#   bash data/download_inshop.sh [target_dir]     (default: the folder of this script)
# The set is distributed through Google Drive only, behind a form, so this script does
# not download: it prints the manual steps, and once the two files are in place it unpacks
# them and runs data/prepare.py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/download_lib.sh"
target="${1:-$here}/inshop"
mkdir -p "$target"
zip="$target/img.zip"
partition="$target/list_eval_partition.txt"

if ! zip_ok "$zip" || [ ! -s "$partition" ]; then
  cat >&2 <<STEPS
In-Shop is on Google Drive only; download two files by hand:
  1. open http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html and follow
     its download link (In-shop Clothes Retrieval Benchmark);
  2. from Img/ take img.zip (about 780 MB), from Eval/ take list_eval_partition.txt;
  3. put both in $target/ and run this script again.
STEPS
  exit 1
fi

echo "unpacking $zip"
mkdir -p "$target/Img" "$target/Eval"
python3 -m zipfile -e "$zip" "$target/Img"
cp "$partition" "$target/Eval/list_eval_partition.txt"
"$(python_for_prepare)" "$here/prepare.py" inshop --src "$target" --out "$target"
