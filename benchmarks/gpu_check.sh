#!/usr/bin/env bash
# GPU readiness in one command (at most 10 minutes, no internet), on a machine with one NVIDIA GPU:
#   1. the CUDA tests (pytest -k cuda);
#   2. AMFMN and LW-MCR with fixture weights and open_clip ViT-B-32 (random weights) in fp32/fp16/bf16
#      on the GPU against their CPU fp32 vectors (benchmarks/gpu_vectors.py);
#   3. the like-SLM run with AMFMN fixture weights on the GPU: per-stage times, the encoder's tiles/s,
#      peak memory (benchmarks/bench_whole_run.py --runs default);
#   4. the archive: a few synthetic scenes indexed by selo-index's Ray pipeline on a local Ray whose encoder
#      actor holds the GPU (num_gpus=1), AMFMN fixture weights: the pipeline's tiles/s, the figure that
#      replaces the GPU rate assumed in benchmarks/bench_archive.py's paper estimate.
#
#   benchmarks/gpu_check.sh                              # on the GPU machine
#   SELO_GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh    # the same steps on the CPU, tiny sizes (a dry run)
#
# The output goes to the terminal and to $OUT/gpu_check.log ($OUT if set, else cache/gpu_check/).
# Needs ../shared/reference/model and ../shared/slm (the fixture weights are generated from them).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${SELO_GPU_CHECK_DEVICE:-cuda}
WORK=cache/gpu_check
LOG_DIR=${OUT:-$WORK}
mkdir -p "$WORK" "$LOG_DIR"
LOG="$LOG_DIR/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1

if [[ $DEVICE == cpu ]]; then  # a dry run of the same steps: small enough for a laptop
    TILES=4 TESTSET=(--scenes 1) ARCHIVE=(--scenes 2 --min_side 800 --max_side 1000)
else
    TILES=512 TESTSET=() ARCHIVE=(--scenes 6 --min_side 2000 --max_side 3000)
fi

[[ -x .venv/bin/python ]] || make setup
PY=.venv/bin/python
failed=0

step() {  # step NAME SECONDS COMMAND...: run it under a hard time limit, report its time, keep going on failure
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s)"
    if timeout --kill-after=10 "$limit" "$@"; then
        echo "== $name: ok in $((SECONDS - start))s"
    else
        echo "== $name: FAILED (exit $?) after $((SECONDS - start))s"
        failed=1
    fi
}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') $(git rev-parse --short HEAD 2>/dev/null || true) device=$DEVICE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

if [[ $DEVICE == cpu ]]; then
    step "CUDA tests (collected only: no CUDA here)" 100 $PY -m pytest -q --collect-only -k cuda tests
else
    step "CUDA tests" 100 $PY -m pytest -q -k cuda tests
fi
step "vectors against CPU fp32" 150 $PY benchmarks/gpu_vectors.py --device "$DEVICE" --work "$WORK" --tiles "$TILES"
AMFMN_YAML=$($PY benchmarks/gpu_vectors.py --fixture-yaml AMFMN --work "$WORK")
step "like-SLM run, AMFMN fixture weights" 210 $PY benchmarks/bench_whole_run.py --runs default \
    --yaml "$AMFMN_YAML" --device "$DEVICE" --work "$WORK/whole_run" "${TESTSET[@]}"
step "archive: index on a GPU actor (Ray), AMFMN fixture weights" 90 $PY benchmarks/bench_archive.py --gpu \
    --yaml "$AMFMN_YAML" --work "$WORK/archive" "${ARCHIVE[@]}"
echo "== log: $LOG"
exit $failed
