#!/usr/bin/env bash
# On a Jetson (JetPack 5 or 6): check the agent's data-type table against this TensorRT, make
# builds fail on purpose (one error line, the right exit code, nothing left behind), build FP16
# and INT8 engines of the shipped model, compare their detections and mAP with ONNX Runtime,
# and print the latencies.
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

echo "== data types: the agent's DataType -> numpy table against trt.nptype (where this release's works)"
"$PY" - <<'EOF'
import numpy as np
import tensorrt as trt

from agent.inference.backends.trt_api import numpy_dtype
from agent.errors import ModelError

print("numpy", np.__version__)
for name, member in trt.DataType.__members__.items():
    try:
        theirs = np.dtype(trt.nptype(member)).name
    except AttributeError as exc:  # TensorRT 8.4-8.5 on numpy 1.24-1.26: the crash the agent avoids
        theirs = f"AttributeError ({str(exc).splitlines()[0]})"
    except TypeError:
        theirs = "none"
    try:
        ours = numpy_dtype(member).name
    except ModelError:
        ours = "none (refused)"
    print(f"  {name:6} agent {ours:16} trt.nptype {theirs}")
    if not theirs.startswith(("AttributeError", "none")) and ours != theirs:
        raise SystemExit(f"MISMATCH for {name}: agent {ours}, TensorRT {theirs}")
EOF

echo "== failed builds: one error line each, the right exit code, nothing left behind"
expect_failure() {  # expect_failure CODE PATTERN COMMAND...
    local code="$1" pattern="$2" rc=0
    shift 2
    "$@" 2>"$OUT/failure.err" || rc=$?
    if [ "$rc" != "$code" ] || ! grep -q -e "^error: .*$pattern" "$OUT/failure.err"; then
        echo "FAIL: expected exit $code and an error line matching '$pattern' from: $*" >&2
        cat "$OUT/failure.err" >&2
        exit 1
    fi
    echo "   ok (exit $rc): $(grep '^error: ' "$OUT/failure.err" | head -1)"
}
expect_failure 2 "--iou" "${DA[@]}" build-engine "$MODEL" -o "$OUT/bad.engine" --nms --iou 0
"$PY" - "$OUT/no-output.onnx" <<'EOF'
import sys

import onnx
from onnx import TensorProto, helper

image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])
graph = helper.make_graph([helper.make_node("Identity", ["images"], ["copy"])], "no-output", [image], [])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.metadata_props.add(key="imgsz", value="[416, 416]")
onnx.save(model, sys.argv[1])
EOF
expect_failure 1 "could not build the engine" "${DA[@]}" build-engine "$OUT/no-output.onnx" -o "$OUT/bad.engine"
if [ -e "$OUT/bad.engine" ]; then
    echo "FAIL: a failed build left $OUT/bad.engine" >&2
    exit 1
fi

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

echo "== detections against ONNX Runtime, data types, error paths and failed builds, memory (pytest)"
"$PY" -m pytest -q -rs tests/gpu

echo "== raw latency (batch 1, after warm-up)"
for model in "$MODEL" "$OUT/fp16.engine" "$OUT/int8.engine" "$OUT/fp16-nms.engine"; do
    "${DA[@]}" bench --model "$model" --iterations 300 --warmup 30 --json "$OUT/bench-$(basename "$model").json"
done
echo "results in $OUT/"
