#!/usr/bin/env bash
# The GPU check, in one run of at most 9.5 minutes (each stage has its own time limit; a stage that runs out
# is reported with the partial output it logged):
#   1. tests/ops on CUDA: every Triton kernel, the fused one and each autotuning candidate against the
#      reference (three pytest processes in parallel: most of their time is Triton compiling);
#   2. benchmarks/op_bench.py, bf16 then fp32, every RedNet-50 involution layer at batch 64: unfold, torch,
#      triton, compiled unfold, cuDNN depthwise 7x7, conv1x1 + triton and fused, with % of the bandwidth floor;
#   3. benchmarks/model_bench.py: RedNet-50 (triton, triton fused) vs ResNet-50, batch 64, bf16 autocast,
#      channels_last, training and inference images/s and peak memory; eager, then compiled (with compile time).
# Logs, JSON and summary.md go to $OUT (default: gpu_results/); the summary is printed at the end. Exits
# non-zero, naming them, when any stage failed or timed out (or the tests could not run): every stage runs
# regardless.
#
#   bash benchmarks/gpu_check.sh          # run everything (python3 with torch and triton; repo root as cwd)
#   bash benchmarks/gpu_check.sh fetch    # beforehand, on a machine with PyPI: test-only wheels into .gpu_wheels/
#
# The tests need pytest and hypothesis. If the GPU machine's python lacks them and has no network, carry
# .gpu_wheels/ (from `fetch`) along: they are installed into .gpu_site/ from there, without network.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu_results}
WHEELS=.gpu_wheels

if [[ "${1:-}" == "fetch" ]]; then
    # hypothesis ships compiled wheels per Python version; the others are pure Python.
    for version in 3.11 3.12 3.13; do
        "$PYTHON" -m pip download -q -c constraints.txt pytest hypothesis --only-binary=:all: \
            --python-version "$version" --platform manylinux_2_17_x86_64 --platform any -d "$WHEELS"
    done
    "$PYTHON" -m pip download -q pytest hypothesis --only-binary=:all: --python-version 3.10 \
        --platform manylinux_2_17_x86_64 --platform any -d "$WHEELS"
    ls "$WHEELS"
    exit 0
fi

mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.md"
FAILED="$OUT/failed_stages"  # a file: the test stages run in background subshells
: > "$SUMMARY"
: > "$FAILED"

# stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, note the outcome in the summary.
stage() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local outcome="exit $rc"
    [[ $rc == 124 ]] && outcome="TIMED OUT"
    [[ $rc != 0 ]] && echo "$name" >> "$FAILED"
    echo "- $name: $outcome after $((SECONDS - start)) s (log: $name.log)" | tee -a "$SUMMARY"
    tail -n 3 "$OUT/$name.log"
}

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name())"
    echo
} | tee -a "$SUMMARY"

if ! "$PYTHON" -c "import pytest, hypothesis" 2> /dev/null && [[ -d "$WHEELS" ]]; then
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --target .gpu_site pytest hypothesis \
        && export PYTHONPATH="$PWD/.gpu_site:$PYTHONPATH"
fi
if "$PYTHON" -c "import pytest, hypothesis" 2> /dev/null; then
    # -o addopts=: the project's addopts need pytest-timeout; `timeout` bounds the run instead.
    PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -o addopts= -rs)
    stage tests_triton 180 "${PYTEST[@]}" tests/ops/test_triton_kernels.py &
    stage tests_fused 180 "${PYTEST[@]}" tests/ops/test_fused.py &
    stage tests_ops 180 "${PYTEST[@]}" tests/ops/test_op.py tests/ops/test_correlation.py &
    wait
else
    echo "- tests: SKIPPED, pytest/hypothesis not importable (run \`bash benchmarks/gpu_check.sh fetch\` and carry $WHEELS)" \
        | tee -a "$SUMMARY"
    echo tests >> "$FAILED"
fi

BENCH=("$PYTHON" benchmarks/op_bench.py --batch 64 --backends reference torch triton)
stage op_bf16 100 "${BENCH[@]}" --dtype bfloat16 --json "$OUT/op_bf16.json"
stage op_fp32 90 "${BENCH[@]}" --dtype float32 --json "$OUT/op_fp32.json"
MODELS=("$PYTHON" benchmarks/model_bench.py --batch 64 --amp bf16 --models resnet50 rednet50 --backends triton --fused)
stage model_eager 80 "${MODELS[@]}" --modes eager --json "$OUT/model_eager.json"
stage model_compiled 120 "${MODELS[@]}" --modes compiled --json "$OUT/model_compiled.json"

echo | tee -a "$SUMMARY"
"$PYTHON" benchmarks/gpu_summary.py "$OUT" | tee -a "$SUMMARY" || echo gpu_summary >> "$FAILED"
if [[ -s "$FAILED" ]]; then
    echo "FAILED: $(paste -sd ' ' "$FAILED")" | tee -a "$SUMMARY"
    exit 1
fi
