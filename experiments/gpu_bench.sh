#!/usr/bin/env bash
# Every GPU measurement in one call (at most 8 minutes on one H100/H200, $BUDGET_S seconds from the
# start; results and their reading: docs/performance.md; the H200 run of 2026-11-30, whose W18
# latency, inference and 448 px figures these parts do not repeat: experiments/results/gpu-h200_2026-11-30/):
#
#     bash experiments/gpu_bench.sh       # writes experiments/results/gpu_<date>/ (or $OUT); device call: timeout_s 540
#
# Rename a kept run's folder to gpu-<model>_<date>, e.g. gpu-h200_2026-11-30.
#
# Runs under the machine's own python3 (jax[cuda], flax, optax, torch, timm); nothing to install.
# Order = priority; each part is time-boxed (killed at its box) and stops at the overall deadline;
# each writes its JSON as rows complete, and the whole log goes to $OUT/log.txt:
#   1. fp32 batch-1 latency of the seed's seven classifiers, hrnet_w18_c ... hrnet_w64_c (224 px,
#      ours only: timm has no `_c` models), to set beside the seed's table: a failure there (not its
#      time box) stops the script
#   2. bf16 training step at batch 256, W48 then W18, against timm AMP channels-last (the scanned
#      step: the plain one, 1.17x faster for W18, compiled for about 100 s, more than a part's box)
#   3. segmentation, hrnetv2_w48_seg then hrnetv2_w18_seg at 512x1024, bf16 training step and
#      inference at batch 8 against the official PyTorch network channels-last with AMP
#   4. pose, pose_hrnet_w32 then pose_hrnet_w48 at 256x192, the same at batch 64
#   5. W18 fp32 batch-1 latency with XLA's command buffers (CUDA graphs) for every kind of
#      command it offers (loops included), down to one-operation graphs: the 9.7 ms measured on an
#      H200 (2026-11-30) looks like several hundred kernels at about 15 us each, i.e. launches
#      rather than arithmetic
set -uo pipefail
BUDGET_S=${BUDGET_S:-470}
END=$((SECONDS + BUDGET_S))
OUT="${OUT:-experiments/results/gpu_$(date +%F)}"
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
export HRNET_FLAX_XLA_CACHE=${HRNET_FLAX_XLA_CACHE:-/tmp/hrnet_flax_xla}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import jax, flax, optax, torch, timm; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'timm', timm.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
part() {  # part SECONDS NAME ARGS...: one benchmark run, time-boxed and within the deadline
  local box=$1 name=$2 left=$((END - SECONDS)); shift 2
  ((left < 30)) && { echo "== $name: skipped, ${left}s left"; return 1; }
  echo "== $name (at most $((box < left ? box : left))s, ${SECONDS}s in)"
  timeout -k 5 $((box < left ? box : left)) $PY experiments/benchmark.py --repeats 7 --no-unfolded --out "$OUT/$name.json" "$@"
}
# Boxes with the 16 s before the first part: 16 + 85 + 130 + 105 + 90 + 40 = 466 s <= BUDGET_S.
part 85 c_fp32_latency --variants hrnet_w18_c hrnet_w30_c hrnet_w32_c hrnet_w40_c hrnet_w44_c hrnet_w48_c hrnet_w64_c \
  --tasks latency --dtype float32 --no-timm || { rc=$?; ((rc == 124 || rc == 137)) || exit 1; }  # a failure, not the box
part 130 w48_w18_bf16_b256_train --variants hrnet_w48 hrnet_w18 --tasks train --dtype bfloat16 --batch 256 --scan on \
  --layouts cl --repeats 5 --inner 2
part 105 seg_bf16_512x1024_b8 --variants hrnetv2_w48_seg hrnetv2_w18_seg --sizes 512x1024 --tasks train infer \
  --dtype bfloat16 --batch 8 --scan on --layouts cl --repeats 5 --inner 2
part 90 pose_bf16_256x192_b64 --variants pose_hrnet_w32 pose_hrnet_w48 --sizes 256x192 --tasks train infer \
  --dtype bfloat16 --batch 64 --scan on --layouts cl --repeats 5 --inner 2
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1" \
  part 40 w18_fp32_latency_graphs --variants hrnet_w18 --tasks latency --dtype float32 --no-timm
echo "gpu_bench done in ${SECONDS}s"
