#!/usr/bin/env bash
# CI: the TensorFlow-free runtime on a Raspberry Pi's userland, under emulation.
#
# Raspberry Pi OS (64-bit) Bookworm is Debian 12 arm64 with Python 3.11. In build/pi-root:
# 1. qemu-user-static (amd64 .deb) and a minimal arm64 Debian 12 userland (python3.11-minimal,
#    libpython3.11-stdlib, libstdc++6 and their dependencies), fetched with apt-get download
#    from a private apt state and unpacked with dpkg -x: no root filesystem change, no binfmt
#    registration; the arm64 Python runs as qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11.
# 2. The aarch64 wheels a Pi installs, from PyPI: site-tflite (numpy<2, opencv-python-headless<5,
#    tflite-runtime==2.14.0) and site-litert (the same with ai-edge-litert instead), each with
#    pytest, absl-py, tqdm; no TensorFlow, no Keras.
# 3. Emulating the Pi 4's Cortex-A72 (NEON only) and the Pi 5's Cortex-A76 (NEON + dot
#    product), which decide XNNPACK's int8 kernels (qemu's default CPU would offer i8mm and
#    SVE, which no Pi has): tests/runtime_only with tflite-runtime on the A72 (artifacts from
#    .ci/tflite_runtime_check.sh in build/ci-tflite), then tools/predict.py on real faces with
#    every shipped model (fld/runtime/assets) and both runtimes, with --boxes (ground-truth
#    boxes, both CPUs) and with the Haar detector (A72).
# 4. The same predictions on this x86 machine (ai-edge-litert: .venv, tflite-runtime:
#    .venv-tflite); the aarch64-vs-x86 landmark difference and NME per CPU, runtime and model
#    (bounds in step 4). ~9 min from an empty build/pi-root on 2 shared EPYC cores.
# Downloads are cached in build/pi-root/cache; a complete userland / wheel set is reused.
# Usage: .ci/pi_check.sh   (after .ci/tflite_runtime_check.sh; FLD_DATA overrides the face
# folder, default ../shared/data/300w/train/afw). Emulated speed says nothing about a Pi's.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
PI="$REPO/build/pi-root"
CACHE="$PI/cache"
ROOT="$PI/sysroot"
QEMU="$PI/qemu/usr/bin/qemu-aarch64-static"
OUT="$PI/out"
DATA="${FLD_DATA:-$REPO/../shared/data/300w/train/afw}"
CHECK_DIR="$REPO/build/ci-tflite"
X86_LITERT="$REPO/.venv/bin/python"
X86_TFLITE="$REPO/.venv-tflite/bin/python"
CPUS=(cortex-a72 cortex-a76)              # Raspberry Pi 4, Raspberry Pi 5
# tests/runtime_only (~4 min emulated: 60 faces with the bundled model) on the Pi 4's CPU
# only (NEON without dot product); tools/predict.py runs on both.
TEST_CPU=cortex-a72
RUNTIMES=(tflite_runtime ai_edge_litert)
MODELS=(default_68 default_51 fast_68)    # every landmark .tflite in fld/runtime/assets (checked
                                          # below; the face_detection_* files: tflite_runtime_check.sh)
NUM_FACES=5
DEBIAN_ROOTS=(python3.11-minimal libpython3.11-stdlib libstdc++6)
COMMON_WHEELS=("numpy<2" "opencv-python-headless<5" "pytest>=8" absl-py tqdm)
declare -A SITE=([tflite_runtime]="$PI/site-tflite" [ai_edge_litert]="$PI/site-litert")

die() { echo "pi_check: $*" >&2; exit 1; }
t0=$SECONDS; last=$SECONDS; timings=()
lap() { timings+=(" $1 $((SECONDS - last)) s"); echo "--- $1: $((SECONDS - last)) s"; last=$SECONDS; }

for py in "$X86_LITERT" "$X86_TFLITE"; do
    [ -x "$py" ] || die "$py missing (run .ci/run, or .ci/tflite_runtime_check.sh for .venv-tflite)"
done
[ -s "$CHECK_DIR/expected.npz" ] || die "$CHECK_DIR missing (run .ci/tflite_runtime_check.sh first)"
[ -d "$DATA" ] || die "face folder $DATA not found"
shipped="$(cd fld/runtime/assets && ls *.tflite | grep -v '^face_detection_' | sed 's/\.tflite$//' \
    | sort | tr '\n' ' ')"
[ "$shipped" = "$(printf '%s\n' "${MODELS[@]}" | sort | tr '\n' ' ')" ] \
    || die "fld/runtime/assets holds '$shipped' but this script checks '${MODELS[*]}': update MODELS"
echo "host: $(uname -m), $("$X86_LITERT" -c 'from fld.runtime import describe_cpu; print(describe_cpu())'), $(nproc) cores"
mkdir -p "$CACHE"
# ai-edge-litert: the x86 reference's release (.venv), so both sides run the same one
litert="$("$X86_LITERT" -c 'import importlib.metadata as m; print(m.version("ai-edge-litert"))')"
declare -A RUNTIME_WHEEL=([tflite_runtime]="tflite-runtime==2.14.0"
                         [ai_edge_litert]="ai-edge-litert==$litert")

# --- 1. qemu-user-static and the arm64 Debian 12 userland ----------------------------
if [ ! -e "$ROOT/.complete" ] || [ ! -x "$QEMU" ]; then
    rm -rf "$ROOT" "$PI/qemu"
    # apt with its own state and sources: Debian 12 for amd64 (qemu) and arm64 (the Pi).
    APT="$CACHE/apt"
    mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/parts" "$CACHE/debs"
    : > "$APT/status"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -s "$keyring" ] || die "$keyring missing (the debian-archive-keyring package)"
    for suite in "debian bookworm" "debian bookworm-updates" "debian-security bookworm-security"; do
        set -- $suite
        echo "deb [arch=amd64,arm64 signed-by=$keyring] http://deb.debian.org/$1 $2 main"
    done > "$APT/sources.list"
    apt_get() {
        apt-get -q -o Dir::State="$APT" -o Dir::State::status="$APT/status" -o Dir::Cache="$APT" \
            -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts="$APT/parts" \
            -o Dir::Etc::Preferences="$APT/parts/none" -o Dir::Etc::PreferencesParts="$APT/parts" \
            -o APT::Sandbox::User=root -o APT::Architecture=arm64 \
            -o APT::Architectures=arm64,amd64 "$@"
    }
    log="$CACHE/apt.log"
    apt_get update > "$log" 2>&1 || die "apt-get update failed: $(grep -m1 -E '^(E|W):' "$log")"
    # the dependency closure of DEBIAN_ROOTS for arm64, as apt resolves it for an empty system
    packages=$(apt_get -s install --no-install-recommends "${DEBIAN_ROOTS[@]}" 2> "$log" \
               | awk '/^Inst /{print $2}') || die "cannot resolve ${DEBIAN_ROOTS[*]}: $(grep -m1 '^E:' "$log")"
    # the exact files apt chose (name_version_arch.deb), fetched unless already in the cache
    files=$(apt_get --print-uris download $packages qemu-user-static:amd64 2> "$log" \
            | awk '{print $2}') || die "cannot locate Debian packages: $(grep -m1 '^E:' "$log")"
    (cd "$CACHE/debs" && apt_get download $packages qemu-user-static:amd64 > "$log" 2>&1) \
        || die "cannot fetch Debian packages: $(grep -m1 '^E:' "$log")"
    for file in $files; do
        [ -s "$CACHE/debs/$file" ] || die "apt-get download left no $CACHE/debs/$file"
        case "$file" in
            qemu-user-static_*) dpkg -x "$CACHE/debs/$file" "$PI/qemu" ;;
            *) dpkg -x "$CACHE/debs/$file" "$ROOT" ;;
        esac
    done
    echo "$packages" | tr '\n' ' ' > "$ROOT/.complete"
fi
# What a Pi's kernel reports in /proc/cpuinfo (one entry per host CPU, as /sys lists them).
# Under qemu-user the emulated program would read the x86 host's file, and cpuinfo (the
# CPU-probing library of XNNPACK and ruy) in ai-edge-litert 2.3 then dereferences NULL in
# allocate_tensors; qemu opens ROOT/proc/cpuinfo instead when it exists (-L), so the Pi's is
# written there, matching -cpu: cpuinfo takes the dot-product extension from this file, and
# an A76 file on an emulated A72 gets SDOT kernels and SIGILL.
declare -A CPU_INFO=(
    [cortex-a72]="fp asimd evtstrm crc32 cpuid|0x0|0xd08|3|Raspberry Pi 4 Model B Rev 1.4"
    [cortex-a76]="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp|0x4|0xd0b|1|Raspberry Pi 5 Model B Rev 1.0")
py_arm() {  # py_arm CPU SITE ARGS...: the arm64 Python 3.11 on an emulated CPU
    local cpu="$1" site="$2" features variant part revision board i; shift 2
    IFS='|' read -r features variant part revision board <<< "${CPU_INFO[$cpu]}"
    mkdir -p "$ROOT/proc"
    for ((i = 0; i < $(grep -c ^processor /proc/cpuinfo); i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' \
            "$i" "$features"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
            "$variant" "$part" "$revision"
    done > "$ROOT/proc/cpuinfo"
    printf 'Model\t\t: %s\n' "$board" >> "$ROOT/proc/cpuinfo"
    PYTHONPATH="$REPO:$site" "$QEMU" -cpu "$cpu" -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"
}
echo "userland: $(wc -w < "$ROOT/.complete") Debian 12 arm64 packages;" \
     "$("$QEMU" --version | head -n 1); $(py_arm cortex-a72 "" -c 'import platform, sys;
print(platform.machine(), "Python", sys.version.split()[0], "glibc", platform.libc_ver()[1])')"
lap "userland"

# --- 2. the aarch64 wheels ---------------------------------------------------------------
PIP="$REPO/.venv/bin/pip"
# Bookworm has glibc 2.36: any manylinux_2_17 ... manylinux_2_36 aarch64 wheel installs.
PLATFORM=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)
for minor in $(seq 36 -1 17); do PLATFORM+=(--platform "manylinux_2_${minor}_aarch64"); done
for runtime in "${RUNTIMES[@]}"; do
    site="${SITE[$runtime]}"
    wheels=("${COMMON_WHEELS[@]}" "${RUNTIME_WHEEL[$runtime]}")
    [ "$(cat "$site/.complete" 2>/dev/null)" = "${wheels[*]}" ] && continue
    rm -rf "$site"
    log="$CACHE/pip.log"
    "$PIP" download -q "${PLATFORM[@]}" -d "$CACHE/wheels" "${wheels[@]}" > "$log" 2>&1 \
        || die "cannot fetch aarch64 wheels: $(grep -m1 '^ERROR' "$log")"
    "$PIP" install -q --isolated --no-index --find-links "$CACHE/wheels" --no-warn-conflicts \
        "${PLATFORM[@]}" --target "$site" "${wheels[@]}" > "$log" 2>&1 \
        || die "cannot install aarch64 wheels into $site: $(grep -m1 '^ERROR' "$log")"
    echo "${wheels[*]}" > "$site/.complete"
done
for runtime in "${RUNTIMES[@]}"; do
    other=$([ "$runtime" = tflite_runtime ] && echo ai_edge_litert || echo tflite_runtime)
    py_arm cortex-a72 "${SITE[$runtime]}" - "$runtime" "$other" <<'PY'
import importlib.metadata as md, importlib.util, sys
runtime, other = sys.argv[1:]
for name in ("tensorflow", "keras", other):
    if importlib.util.find_spec(name) is not None:
        sys.exit(f"pi_check: the {runtime} site must not contain {name}")
dist = {"tflite_runtime": "tflite-runtime", "ai_edge_litert": "ai-edge-litert"}[runtime]
print(f"{runtime} site (aarch64):", ", ".join(f"{d}=={md.version(d)}" for d in
      (dist, "numpy", "opencv-python-headless", "pytest", "absl-py", "tqdm")))
PY
done
lap "wheels"

# --- 3. under emulation: runtime tests, tools/predict.py -----------------------------------
rm -rf "$OUT"
mkdir -p "$OUT/faces"
# the first NUM_FACES faces of DATA (sorted), and per model the tight ground-truth box of
# its own points (boxes_MODEL.csv: the 51 inner points for default_51, as its users call it)
"$X86_LITERT" - "$DATA" "$OUT/faces" "$NUM_FACES" "${MODELS[*]}" <<'PY'
import os, shutil, sys
from fld.crop import box_from_landmarks
from fld.data.readers import read_pts
from fld.runtime.metadata import read_model_info
from fld.schemes import adapt_landmarks
data, faces, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = sorted(f for f in os.listdir(data) if f.endswith(".jpg")
               and os.path.exists(os.path.join(data, f[:-4] + ".pts")))[:n]
assert len(names) == n, f"{data}: only {len(names)} annotated faces"
for name in names:
    shutil.copy(os.path.join(data, name), faces)
    shutil.copy(os.path.join(data, name[:-4] + ".pts"), faces)   # ground truth
for model in sys.argv[4].split():
    with open(os.path.join("fld", "runtime", "assets", model + ".tflite"), "rb") as f:
        scheme = read_model_info(f.read(), model).scheme
    with open(os.path.join(faces, "..", f"boxes_{model}.csv"), "w") as f:
        for name in names:
            points = adapt_landmarks(read_pts(os.path.join(data, name[:-4] + ".pts")), scheme)
            f.write(name + "," + ",".join(f"{v:.2f}" for v in box_from_landmarks(points)) + "\n")
PY
detect_image="$OUT/faces/$(ls "$OUT/faces" | head -n 1)"   # for the Haar detector's run
predict() {  # predict NAME PYTHON...: tools/predict.py for every runtime and model
    local name="$1" runtime model dir log; shift
    for runtime in "${RUNTIMES[@]}"; do
        for model in "${MODELS[@]}"; do
            dir="$OUT/$name/$runtime/$model" log="$OUT/$name/$runtime/$model.log"
            mkdir -p "$dir"
            "$@" "$runtime" tools/predict.py --model "fld/runtime/assets/$model.tflite" \
                --runtime "$runtime" --input "$OUT/faces" --boxes "$OUT/boxes_$model.csv" \
                --output_dir "$dir/boxes" --save_pts > "$log" 2>&1 \
                || die "$name $runtime $model: tools/predict.py --boxes failed: $(tail -n 1 "$log")"
            grep -qx "images: $NUM_FACES, faces: $NUM_FACES, skipped: 0" "$log" \
                || die "$name $runtime $model: expected $NUM_FACES faces: $(tail -n 1 "$log")"
            # the detector path (no --boxes): the Haar cascade, then the model; once per
            # runtime, on x86 and the first emulated CPU (time)
            [ "$model" = "${MODELS[0]}" ] && [ "$name" != "${CPUS[1]}" ] || continue
            "$@" "$runtime" tools/predict.py --model "fld/runtime/assets/$model.tflite" \
                --runtime "$runtime" --input "$detect_image" --output_dir "$dir/detect" \
                --save_pts > "$log" 2>&1 \
                || die "$name $runtime $model: tools/predict.py (detector) failed: $(tail -n 1 "$log")"
            grep -q "^images: 1, faces: [1-9]" "$log" \
                || die "$name $runtime $model: the detector found no face: $(tail -n 1 "$log")"
        done
    done
}
arm() { local cpu="$1" runtime="$2"; shift 2; py_arm "$cpu" "${SITE[$runtime]}" "$@"; }
for cpu in "${CPUS[@]}"; do
    echo "emulated $cpu: $(py_arm "$cpu" "${SITE[tflite_runtime]}" - <<'PY'
import struct
from fld.runtime import describe_cpu
aux = dict(struct.iter_unpack("QQ", open("/proc/self/auxv", "rb").read()))
hwcap, hwcap2 = aux.get(16, 0), aux.get(26, 0)        # AT_HWCAP, AT_HWCAP2 (what XNNPACK reads)
flags = {"asimd": hwcap >> 1, "asimddp": hwcap >> 20, "sve": hwcap >> 22, "i8mm": hwcap2 >> 13}
print(f"{describe_cpu()}; HWCAP int8 flags: {' '.join(k for k, v in flags.items() if v & 1)}")
PY
)"
    if [ "$cpu" = "$TEST_CPU" ]; then
        FLD_TFLITE_CHECK_DIR="$CHECK_DIR" py_arm "$cpu" "${SITE[tflite_runtime]}" -m pytest -q \
            -p no:cacheprovider tests/runtime_only
        lap "$cpu runtime tests"
    fi
    predict "$cpu" arm "$cpu"
    lap "$cpu predict"
done

# --- 4. x86 reference and comparison -------------------------------------------------------
x86() { local runtime="$1"; shift
        if [ "$runtime" = tflite_runtime ]; then "$X86_TFLITE" "$@"; else "$X86_LITERT" "$@"; fi; }
PYTHONPATH="$REPO" predict x86 x86
lap "x86 predict"
# Bounds, aarch64 vs x86 with the same runtime. int8 kernels round differently from one CPU
# family to another (ARM's NEON paths are not x86's), which moves some points by a fraction
# of a heatmap cell; the two runtimes on one x86 CPU differ by more (printed below: max
# 7.7 px, mean 0.9 px on these faces, inter-ocular 90-145 px; both correct). Measured
# (2026-12-04; A72 and A76 bit-identical): tflite-runtime max 2.60 px, mean 0.43 px (its
# builtin kernels on both sides: its XNNPACK gives outputs identical to XNNPACK off here);
# ai-edge-litert max 1.86 px, mean 0.23 px; ARM's NME io 0.00-0.05% below x86's. A wrong
# kernel shows as pixels at some points or as lost accuracy, and the second can hide under a
# mean-distance bound: x86's AVX2 int8 MEAN overflow (before fld/export/mean_split.py) cost
# +0.39% NME on the 60 sample faces, ~0.5 px of mean error at these faces' size. So the NME
# against the ground truth is bounded too. The fast model's flatter heatmaps move more with
# rounding: tflite-runtime A72/A76 vs x86 max 4.88 px, mean 0.90 px (NME 7.36% vs x86's
# 7.37%), less than its own x86 tflite-runtime vs ai-edge-litert difference (5.15 / 0.99
# px; 2026-12-08): a model's pixel bounds are the larger of these and 1.25 x its x86
# cross-runtime difference; the NME bound stays. With margin:
MAX_DIFF_PX=4.0           # any point
MAX_MEAN_DIFF_PX=0.8      # mean over points and faces
MAX_NME_INCREASE=0.002    # aarch64's mean NME io at most 0.2% above x86's (--boxes faces)
"$X86_LITERT" - "$OUT" "$MAX_DIFF_PX" "$MAX_MEAN_DIFF_PX" "$MAX_NME_INCREASE" "${CPUS[*]}" "${RUNTIMES[*]}" \
    "${MODELS[*]}" <<'PY'
import glob, os, sys
import numpy as np
from fld.data.readers import read_pts
from fld.metrics import nme
from fld.schemes import convert_68_to_51
out, max_px, max_mean, max_nme = (float(a) if i else a for i, a in enumerate(sys.argv[1:5]))
cpus, runtimes, models = (a.split() for a in sys.argv[5:8])

def mean_nme(run, model):
    """Mean inter-ocular NME of a run's --boxes predictions against the ground truth."""
    paths = sorted(glob.glob(os.path.join(out, run, model, "boxes", "*.pts")))
    pred = np.stack([read_pts(p) for p in paths])
    gt = np.stack([read_pts(os.path.join(out, "faces", os.path.basename(p))) for p in paths])
    if pred.shape[1] == 51:
        return float(nme(pred, convert_68_to_51(gt), "pair_51").mean())
    return float(nme(pred, gt, "300w_68").mean())

def distances(a, b, model, mode):
    """Per-point distances (px) between the .pts of run a and run b (b: every face a has)."""
    paths = sorted(glob.glob(os.path.join(out, a, model, mode, "*.pts")))
    assert paths, f"no .pts in {os.path.join(out, a, model, mode)}"
    d = []
    for path in paths:
        other = path.replace(os.path.join(out, a), os.path.join(out, b), 1)
        assert os.path.exists(other), f"{other} missing ({a} found a face there)"
        d.append(np.linalg.norm(read_pts(other) - read_pts(path), axis=-1))
    return len(paths), np.concatenate(d)

failed = []
for model in models:
    modes = [m for m in ("boxes", "detect")
             if os.path.isdir(os.path.join(out, "x86", runtimes[0], model, m))]
    for mode in modes:
        n, d = distances("x86/tflite_runtime", "x86/ai_edge_litert", model, mode)
        print(f"{model} {mode:6} {n} faces, for scale: x86 tflite-runtime vs x86 ai-edge-litert "
              f"max {d.max():.2f} px, mean {d.mean():.3f} px")
        # the pixel bounds, or 1.25 x this model's own disagreement between two correct
        # runtimes on one x86 CPU if larger (see above)
        model_px, model_mean = max(max_px, 1.25 * d.max()), max(max_mean, 1.25 * d.mean())
        for runtime in runtimes:
            for cpu in cpus if mode == "boxes" else cpus[:1]:   # detector: first CPU only
                n, d = distances(f"x86/{runtime}", f"{cpu}/{runtime}", model, mode)
                ok = d.max() <= model_px and d.mean() <= model_mean
                line = f"  {runtime:14} {cpu:10} vs x86: max {d.max():.2f} px, mean {d.mean():.3f} px"
                if mode == "boxes":
                    x86, arm = mean_nme(f"x86/{runtime}", model), mean_nme(f"{cpu}/{runtime}", model)
                    ok = ok and arm - x86 <= max_nme
                    line += f"; NME io {arm:.2%} (x86 {x86:.2%})"
                print(line + ("" if ok else "  FAIL"))
                failed += [] if ok else [f"{model} {mode} {runtime} {cpu}"]
if failed:
    sys.exit(f"pi_check: aarch64 landmarks differ from x86 beyond {max_px} px max / "
             f"{max_mean} px mean (or 1.25 x the model's x86 cross-runtime difference) / NME "
             f"+{max_nme:.1%}: {', '.join(failed)}")
print(f"aarch64 vs x86 within {max_px} px max, {max_mean} px mean (or the model's x86 "
      f"cross-runtime difference x 1.25), NME +{max_nme:.1%} everywhere")
PY
lap "comparison"
(IFS=,; echo "pi_check passed in $((SECONDS - t0)) s:${timings[*]}")
