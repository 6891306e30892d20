#!/usr/bin/env bash
# Validate a GPU machine in one go: build, GPU tests, op benchmarks, end-to-end throughput
# (under 8 minutes in all: each step has its own timeout and keeps what it finished).
# Usage: bash benchmarks/gpu_check.sh OUT_DIR      (the device image: torch + CUDA, triton, nvcc)
# Narrower runs when device time is short: GPU_CHECK_TESTS="tests/test_x.py ...",
# GPU_CHECK_BENCH_ARGS="--size 1080x1920 --batch 1 8", GPU_CHECK_THROUGHPUT=0, GPU_CHECK_OPTIONS=0.
set -uo pipefail
out="${1:?usage: gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
log() { echo "== $*" | tee -a "$out/summary.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  date -u; git rev-parse --short HEAD 2>/dev/null || echo "rev ${FCNFAST_GIT_REV:-unknown}"; } | tee "$out/device.txt"

log "build"
python -m pip install --no-build-isolation --no-deps -q -e . > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }

log "GPU tests (compiled Triton, CUDA parametrisations; interpreter cases deselected)"
tests="${GPU_CHECK_TESTS:-tests/test_upsample_crop_add.py tests/test_upsample_crop_argmax.py \
  tests/test_interp_argmax.py tests/test_preprocess.py tests/test_overlay.py \
  tests/test_ops_frontdoor.py tests/test_engine.py tests/test_api.py}"
# shellcheck disable=SC2086
timeout 140 python -m pytest -q -x -p no:cacheprovider -k "not triton-cpu" $tests \
  2>&1 | tee "$out/tests.txt" | tail -15
log "tests rc=${PIPESTATUS[0]}"

log "bench_ops"
# shellcheck disable=SC2086
timeout 60 python benchmarks/bench_ops.py ${GPU_CHECK_BENCH_ARGS:---size 1080x1920 --batch 1 8} --json "$out/bench_ops.json" \
  2>&1 | tee "$out/bench_ops.txt"
[ "${GPU_CHECK_THROUGHPUT:-1}" = 0 ] && { log "done"; exit 0; }

log "throughput (eager fp32 / fp16 channels-last / torch.compile / fcnfast, FCN-8s)"
# The JSON is rewritten after each configuration, so a timeout keeps the finished rows.
timeout 160 python benchmarks/throughput.py --models fcn8s --sizes 500x500 1080x1920 \
  --batches 1 8 --columns a b c e --json "$out/throughput.json" 2>&1 | tee "$out/throughput.txt"
if [ "${GPU_CHECK_OPTIONS:-1}" != 0 ]; then
  log "engine options (border skipping, CUDA graphs) at 1080p batch 8"
  timeout 50 python benchmarks/engine_options.py --sizes 1080x1920 --batch 8 \
    --json "$out/engine_options.json" 2>&1 | tee "$out/engine_options.txt"
  log "engine options in bfloat16 (against the float16 default above: which should be the default)"
  timeout 30 python benchmarks/engine_options.py --sizes 1080x1920 --batch 8 --dtype bfloat16 \
    --json "$out/engine_options_bf16.json" 2>&1 | tee "$out/engine_options_bf16.txt"
fi
if python -c "import av" 2>/dev/null; then
  log "video: GPU pipeline tests and fcnfast video at 1080p (FCN-8s fp16; NVENC where it opens)"
  timeout 60 python -m pytest -q -x -p no:cacheprovider tests/test_video.py 2>&1 | tail -5
  timeout 90 python benchmarks/video.py --arch fcn8s --frames 120 --repeats 2 --columns bc \
    --json "$out/video.json" 2>&1 | tee "$out/video.txt"
else
  log "video: skipped (PyAV is not installed in this image)"
fi
log "done"
