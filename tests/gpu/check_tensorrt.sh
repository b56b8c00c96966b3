#!/usr/bin/env bash
# On a Jetson (JetPack 5 or 6): build FP16 and INT8 engines of the shipped model, compare their
# detections and mAP with ONNX Runtime, and print the latencies.
#
#   tests/gpu/check_tensorrt.sh            # from the repository root or anywhere
#   MODEL=other.onnx OUT=/tmp/check tests/gpu/check_tensorrt.sh
#
# Needs: JetPack's TensorRT (python3-libnvinfer) and pycuda, visible to the Python that runs
# the agent (a venv made with --system-site-packages sees JetPack's tensorrt), plus
# onnxruntime for the comparison. Takes about 10-20 minutes, mostly engine building.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL=${MODEL:-models/shapes-yolov3-tiny.onnx}
OUT=${OUT:-runs/tensorrt-check}
DA=("$PY" -m agent)

"$PY" -c 'import tensorrt, pycuda.driver as c; c.init(); print("TensorRT", tensorrt.__version__, "on", c.Device(0).name())'
mkdir -p "$OUT"

echo "== data: a labelled evaluation set and separate calibration images (synthetic shapes)"
"${DA[@]}" make-dataset shapes --out "$OUT/eval" --train 0 --val 200 --imgsz 640 --seed 11 --overwrite
"${DA[@]}" make-dataset shapes --out "$OUT/calib" --train 0 --val 300 --imgsz 640 --seed 12 --overwrite

echo "== engines"
"${DA[@]}" build-engine "$MODEL" -o "$OUT/fp16.engine" --fp16
"${DA[@]}" build-engine "$MODEL" -o "$OUT/int8.engine" --int8 \
    --calib-images "$OUT/calib/images/val" --calib-cache "$OUT/int8.calib"
"${DA[@]}" build-engine "$MODEL" -o "$OUT/fp16-nms.engine" --fp16 --nms

echo "== mAP against ONNX Runtime (same data, same postprocessing)"
for engine in fp16 int8 fp16-nms; do
    echo "-- $engine"
    "${DA[@]}" eval --model "$OUT/$engine.engine" --compare "$MODEL" --data "$OUT/eval/data.yaml" \
        --quiet --json "$OUT/eval-$engine.json"
done

echo "== detections against ONNX Runtime, error paths, memory (pytest)"
"$PY" -m pytest -q -rs tests/gpu

echo "== raw latency (batch 1, after warm-up)"
for model in "$MODEL" "$OUT/fp16.engine" "$OUT/int8.engine" "$OUT/fp16-nms.engine"; do
    "${DA[@]}" bench --model "$model" --iterations 300 --warmup 30 --json "$OUT/bench-$(basename "$model").json"
done
echo "results in $OUT/"
