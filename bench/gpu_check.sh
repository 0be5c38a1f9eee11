#!/usr/bin/env bash
# One prepared call for a lent GPU machine (the device tool; issues 6 and 7). Everything it
# measures lands in $OUT. Two parts, each sized to fit one 10-minute call:
#
#   bash bench/gpu_check.sh checks            # CUDA tests, the inference table at 512x1024 and
#                                             # 1024x2048, the training-step table (~7 min:
#                                             # compile builds take most of it)
#   bash bench/gpu_check.sh camvid ITERS      # BiSeNetV2 on CamVid, the paper's recipe (batch 16,
#                                             # 704x960 crops, lr 5e-2) for ITERS iterations, augmented
#                                             # on the GPU (CACHE=memory: CPU workers instead); fp16
#                                             # safetensors and the logs come back in $OUT
#
# The camvid part needs the data packed here first and carried: `python bench/pack_camvid.py`,
# then run(..., carry=[".gpu"]). The machine has PyTorch but not this package's install:
# PYTHONPATH=src runs it from the tree.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"
# DEVICE=cpu SIZES=64x64 ITERS=2 smoke-tests the script on a machine without a GPU.
DEVICE="${DEVICE:-cuda}" SIZES="${SIZES:-512x1024 1024x2048}" ITERS="${ITERS:-100}"
mkdir -p "$OUT"
part="${1:-checks}"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

if [ "$part" = checks ]; then
    # One bench process per backend (each beside eager, its baseline), so a backend that fails
    # costs its own row, not the call. The rows are merged into $OUT/rows.json after every
    # process, so a call cut off at the device tool's limit still returns what it measured; the
    # tool returns at most 8 files, so logs go to one file. The CUDA tests run last, in the time left.
    log="$OUT/checks.log" rows=/tmp/gpu_rows budget="${BUDGET:-560}"
    mkdir -p "$rows"
    merge() {
        python3 - "$rows" "$OUT/rows.json" <<'PY'
import json, pathlib, sys
rows = [row for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")) for row in json.loads(path.read_text())]
pathlib.Path(sys.argv[2]).write_text(json.dumps(rows, indent=1))
PY
    }
    left() { echo $(( budget - SECONDS > 10 ? budget - SECONDS : 10 )); }
    for size in $SIZES; do
        for backend in amp fold_bn compile compile_graphs onnxruntime; do
            timeout "$(( $(left) < 240 ? $(left) : 240 ))" python3 -m bisenet bench --device "$DEVICE" --size "$size" \
                --backend eager "$backend" --warmup 10 --iters "$ITERS" --json "$rows/infer_${size}_$backend.json" >>"$log" 2>&1 \
                || echo "bench $size $backend failed" | tee -a "$log"
            merge
        done
    done
    timeout "$(( $(left) < 300 ? $(left) : 300 ))" python3 -m bisenet bench --mode train --device "$DEVICE" --size 512x512 \
        --batch-size 4 --backend fp32_plain fp32 bf16 fp16 --warmup 3 --iters 20 --json "$rows/train.json" >>"$log" 2>&1 \
        || echo "train bench failed" | tee -a "$log"
    merge
    python3 -c 'import json, sys
for r in json.load(open(sys.argv[1])): print(r["mode"], r["size"], r["backend"], r["median_ms"], "ms", r.get("peak_cuda_mb"), "MB")' "$OUT/rows.json"
    timeout "$(left)" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py >>"$log" 2>&1 \
        || echo "CUDA tests failed or ran out of time" | tee -a "$log"
    tail -n 5 "$log"
elif [ "$part" = camvid ]; then
    iters="${2:?give the number of iterations, e.g. 10000 as in the paper}"
    data=.gpu/camvid
    [ -f "$data/train.txt" ] || { echo "$data/train.txt not found: run python bench/pack_camvid.py here and carry .gpu"; exit 2; }
    work=/tmp/camvid_gpu every=$(( iters / 4 > 0 ? iters / 4 : 1 ))
    python3 -m bisenet train configs/bisenetv2_camvid.yaml --work-dir "$work" --data-root "$data" --device "$DEVICE" \
        --max-iters "$iters" --workers 14 --eval-interval "$every" --checkpoint-interval "$every" \
        --set data.cache="${CACHE:-device}" 2>&1 | tee "$OUT/train_camvid.log"
    python3 -m bisenet export --weights "$work/last.pt" --out "$OUT/bisenetv2_camvid.safetensors" --fp16 \
        --height 384 --width 480 2>&1 | tee -a "$OUT/train_camvid.log"
    cp "$work/metrics.jsonl" "$work/curves.png" "$OUT/" 2>/dev/null
else
    echo "usage: bash bench/gpu_check.sh checks | camvid ITERS"; exit 2
fi
