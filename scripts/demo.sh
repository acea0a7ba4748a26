#!/usr/bin/env bash
# The main job on the bundled demo data, from a fresh clone: set up .venv, build the demo
# data, train with arcmargin (train_elem.py), fine-tune with eml (train_pair.py), evaluate
# Recall@K (eval.py), extract features (infer.py), put them in a gallery index (index.py)
# and search it with one image (search.py), then serve it (serve.py) and query the service once
# with curl. Outputs go to $DEMO_OUTPUT (demo_output/), the checkpoints of an earlier demo
# run there replaced (--overwrite);
# DEMO_ENGINE=dygraph runs everything in Paddle's plain dynamic graph (default: static).
# REQUIREMENTS=requirements-gpu.txt installs the GPU wheel into .venv first (README, "GPU").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" "${REQUIREMENTS:-requirements.txt}"
cd "$root"
py=.venv/bin/python
out="${DEMO_OUTPUT:-demo_output}"
data=data/demo
common=(--model=ResNet18 --image_shape=3,32,32 --data_dir=$data --use_gpu=True --engine=${DEMO_ENGINE:-static})
start=$(date +%s)

[ -f $data/Ebay_test.txt ] || $py data/make_demo.py --out $data

echo "== 1/6 train_elem.py: arcmargin from scratch"
$py train_elem.py "${common[@]}" --test_batch_size=100 --test_before_training=True --loss_name=arcmargin --arc_scale=30 --class_dim=100 \
    --train_batch_size=32 --lr=0.05 --lr_steps=350 --total_iter_num=450 \
    --display_iter_step=50 --test_iter_step=150 --save_iter_step=450 --model_save_dir=$out/arcmargin --overwrite

echo "== 2/6 train_pair.py: eml fine-tune of the arcmargin model"
$py train_pair.py "${common[@]}" --test_batch_size=100 --loss_name=eml --samples_each_class=2 --pretrained_model=$out/arcmargin/ResNet18/450 \
    --train_batch_size=32 --lr=0.001 --lr_steps=150 --total_iter_num=150 \
    --display_iter_step=25 --test_iter_step=150 --save_iter_step=150 --model_save_dir=$out/eml --overwrite

echo "== 3/6 eval.py: Recall@K and MAP@R of the fine-tuned model"
$py eval.py "${common[@]}" --batch_size=100 --pretrained_model=$out/eml/ResNet18/150 --recall_k=1,2,4,8 \
    --save_json=$out/eval.json --save_retrievals=$out/retrievals --num_queries=8 --topk=5

echo "== 4/6 infer.py: features of every test image"
$py infer.py "${common[@]}" --batch_size=100 --pretrained_model=$out/eml/ResNet18/150 \
    --save_features=$out/features.npy > $out/infer.log
head -n 3 <(grep "^Test-" $out/infer.log)

echo "== 5/6 index.py + search.py: a gallery index of those features, searched with one image"
rm -rf $out/index
$py index.py build --index_dir=$out/index --features=$out/features.npy --model=ResNet18 --image_shape=3,32,32 \
    --pretrained_model=$out/eml/ResNet18/150
$py search.py --index_dir=$out/index --image="$(head -n 1 $out/features.paths.txt)" --topk=5 --use_gpu=True \
    --engine=${DEMO_ENGINE:-static} --save_json=$out/search.json --save_retrievals=$out/search_retrievals

echo "== 6/6 serve.py: the index as a service on 127.0.0.1, queried once with curl, then stopped"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-serve.txt
$py serve.py --index_dir=$out/index --port=0 --use_gpu=True --engine=${DEMO_ENGINE:-static} > $out/serve.log 2>&1 &
serve_pid=$!
url=""
for _ in $(seq 1 240); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' $out/serve.log | head -n 1 || true)
  if [ -n "$url" ] || ! kill -0 $serve_pid 2>/dev/null; then break; fi
  sleep 0.5
done
if [ -z "$url" ]; then
  cat $out/serve.log >&2
  kill $serve_pid 2>/dev/null || true
  exit 1
fi
echo "serve.py answers on $url; the page: open it in a browser while serve.py runs"
curl --silent --show-error --fail -F "image=@$(head -n 1 $out/features.paths.txt)" -F topk=3 "${url}search" \
    > $out/serve_search.json
kill -TERM $serve_pid
wait $serve_pid
echo "generation $(grep -o '"generation":"[0-9]*"' $out/serve_search.json | cut -d'"' -f4), top 3 of the service:"
grep -o '"score":[^,]*,"path":"[^"]*"' $out/serve_search.json | sed 's/"score":/  /; s/,"path":"/  /; s/"$//'

cat <<DONE

Demo finished in $(( $(date +%s) - start )) s. Outputs:
  $out/arcmargin/ResNet18/450/   train_elem checkpoint (model.pdparams, model.pdopt, state.json)
  $out/eml/ResNet18/150/         train_pair (eml) checkpoint
  $out/eval.json                 Recall@1,2,4,8 and MAP@R
  $out/retrievals/               PNG grids: query, then its top 5 (green = same class, red = other)
  $out/features.npy              test-image features, row i = line i of $out/features.paths.txt
  $out/infer.log                 infer.py's Test-<i>-feature lines
  $out/index/                    gallery index of those features (index.py info --index_dir=$out/index)
  $out/search.json               the top 5 of one query image (search.py)
  $out/search_retrievals/        its grid: the query, then its top 5
  $out/serve_search.json         the service's answer to the same image (POST /search, top 3)
Serve the index yourself: python serve.py --index_dir=$out/index, then open http://127.0.0.1:8080/
DONE
