#!/usr/bin/env bash
# CI: the TensorFlow-free runtime path, in its own environment.
#
# 1. In the main venv (.venv: TensorFlow, Keras, ai-edge-litert): build a tiny random-weight
#    student, convert it to int8 with tools/convert.py (calibrated on real faces) and store
#    the landmarks ai-edge-litert gives (tests/runtime_only/make_expected.py -> build/ci-tflite/).
# 2. Create (or reuse) .venv-tflite with only numpy<2, opencv-python-headless<5,
#    tflite-runtime==2.14.0 (+ pytest, absl-py, tqdm for the tests and tools/predict.py);
#    no TensorFlow, no Keras.
# 3. There, with PYTHONPATH=the repo: (a) pytest tests/runtime_only (TF absent, the int8
#    model's predictions vs the stored ones); (b) tools/predict.py --save_pts on a real
#    image, checking the .pts file is written and matches ai-edge-litert's landmarks;
#    (c) the bundled models: their accuracy tests, and tools/predict.py with no --model
#    (the default) and with --model fast, no --boxes, on the bundled photo: the bundled BlazeFace detector (short and full
#    range) runs in tflite-runtime, finds the one face (IoU >= 0.5 with its annotated box)
#    and predict.py writes a .pts of 68 points near the annotation.
# Usage: .ci/tflite_runtime_check.sh   (after .ci/run has built .venv; FLD_DATA overrides
# the face folder, default ../shared/data/300w/train/afw; FLD_MAIN_PY the main venv's
# Python, default .venv/bin/python). Every step imports this checkout's fld (PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
MAIN_PY="${FLD_MAIN_PY:-$REPO/.venv/bin/python}"
VENV="$REPO/.venv-tflite"
OUT="$REPO/build/ci-tflite"
DATA="${FLD_DATA:-$REPO/../shared/data/300w/train/afw}"
PACKAGES=("numpy<2" "opencv-python-headless<5" "tflite-runtime==2.14.0" "pytest>=8" absl-py tqdm)
start=$SECONDS

[ -x "$MAIN_PY" ] || { echo "tflite_runtime_check: $MAIN_PY missing (run .ci/run first)" >&2; exit 1; }
[ -d "$DATA" ] || { echo "tflite_runtime_check: face folder $DATA not found" >&2; exit 1; }

export PYTHONPATH="$REPO"

# --- 1. artifacts from the main environment ------------------------------------------
rm -rf "$OUT"
"$MAIN_PY" tests/runtime_only/make_expected.py "$OUT" "$DATA"
step1=$SECONDS

# --- 2. the TensorFlow-free environment (reused when complete) --------------------------
if ! "$VENV/bin/python" -c "import tflite_runtime, cv2, numpy, pytest, absl, tqdm" 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "${PACKAGES[@]}"
fi
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
for name in ("tensorflow", "keras", "ai_edge_litert"):
    if importlib.util.find_spec(name) is not None:
        sys.exit(f".venv-tflite must not contain {name}")
PY
step2=$SECONDS

# --- 3. runtime-only tests and tools/predict.py, TensorFlow absent ---------------------
FLD_TFLITE_CHECK_DIR="$OUT" "$VENV/bin/python" -m pytest -q tests/runtime_only
image="$(head -n 1 "$OUT/predict_image.txt")"
rm -rf "$OUT/predict"
"$VENV/bin/python" tools/predict.py --model "$OUT/student_int8.tflite" --input "$image" \
    --output_dir "$OUT/predict" --save_pts
pts="$OUT/predict/$(basename "${image%.*}").pts"
[ -s "$pts" ] || { echo "tflite_runtime_check: tools/predict.py wrote no $pts" >&2; exit 1; }
"$VENV/bin/python" - "$pts" "$OUT/predict_expected.npy" <<'PY'
import sys
import numpy as np
from fld.data.readers import read_pts
got, want = read_pts(sys.argv[1]), np.load(sys.argv[2])
assert got.shape == want.shape, (got.shape, want.shape)
close = float((np.linalg.norm(got - want, axis=-1) <= 2.0).mean())
# same detector box, two int8 runtimes (see tests/runtime_only): most points agree
assert close >= 0.6, f"{sys.argv[1]}: only {close:.0%} of points within 2 px of ai-edge-litert's"
print(f"tools/predict.py: {sys.argv[1]} written, {close:.0%} of points within 2 px of ai-edge-litert's")
PY
# the bundled BlazeFace detector and the default model (no --model, no --boxes) on the
# bundled photo
PHOTO=data/sample_300w/helen_126968967_1
"$VENV/bin/python" - "$PHOTO" <<'PY'
import sys
import numpy as np
from fld.crop import box_from_landmarks
from fld.data.readers import read_pts
from fld.images import read_image_rgb
from fld.runtime import FaceDetector
from fld.runtime.blazeface import BlazeFaceDetector
from fld.runtime.detector import box_iou
image, truth = read_image_rgb(sys.argv[1] + ".jpg"), box_from_landmarks(read_pts(sys.argv[1] + ".pts"))
for name, model in (("blazeface", "short"), ("blazeface_full", "full")):
    assert BlazeFaceDetector(model).model.runtime == "tflite_runtime"
    boxes = FaceDetector(name)(image)
    assert len(boxes) == 1, f"{name}: expected one face in {sys.argv[1]}.jpg, got {len(boxes)}"
    iou = float(box_iou(boxes, truth).max())
    assert iou >= 0.5, f"{name}: IoU {iou:.2f} with the annotated box"
    print(f"{name} in tflite_runtime: 1 face, IoU {iou:.2f} with the annotated landmark box")
PY
# the bundled models by name with the bundled detector: the default (no --model) and
# --model fast; bound: NME io against the annotation (measured in tflite-runtime: 3.8%, 7.9%)
for spec in "default:0.08" "fast:0.12"; do
    model="${spec%%:*}" bound="${spec#*:}"
    model_flag=(); [ "$model" = default ] || model_flag=(--model "$model")
    rm -rf "$OUT/predict_$model"
    "$VENV/bin/python" tools/predict.py "${model_flag[@]}" --input "$PHOTO.jpg" \
        --output_dir "$OUT/predict_$model" --save_pts | tee "$OUT/predict_$model.log"
    grep -q "^images: 1, faces: 1, skipped: 0$" "$OUT/predict_$model.log" || {
        echo "tflite_runtime_check: tools/predict.py ($model model) did not find the one face of $PHOTO.jpg" >&2; exit 1; }
    "$VENV/bin/python" - "$OUT/predict_$model/$(basename "$PHOTO").pts" "$PHOTO.pts" "$model" "$bound" <<'PY'
import sys
import numpy as np
from fld.data.readers import read_pts
got, truth, model, bound = read_pts(sys.argv[1]), read_pts(sys.argv[2]), sys.argv[3], float(sys.argv[4])
assert got.shape == (68, 2), f"{sys.argv[1]}: {got.shape[0]} points, expected 68"
iod = np.linalg.norm(truth[36:42].mean(0) - truth[42:48].mean(0))
nme = float(np.linalg.norm(got - truth, axis=1).mean() / iod)
assert nme < bound, f"{sys.argv[1]}: NME {nme:.3f} against the annotation ({model} model, bound {bound})"
print(f"tools/predict.py (BlazeFace + {model} model, tflite_runtime): 68 points, NME {100 * nme:.2f} %")
PY
done
echo "tflite_runtime_check passed: artifacts $((step1 - start)) s, venv $((step2 - step1)) s," \
     "runtime checks $((SECONDS - step2)) s"
