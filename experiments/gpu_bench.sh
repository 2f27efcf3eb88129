#!/usr/bin/env bash
# Every GPU measurement in one call (at most 9.5 minutes on one H100/H200; results and their
# reading: docs/performance.md; the H200 run of 2026-11-30: experiments/results/gpu-h200_2026-11-30/):
#
#     bash experiments/gpu_bench.sh       # writes experiments/results/gpu_<date>/ (or $OUT); device call: timeout_s 590
#
# Rename a kept run's folder to gpu-<model>_<date>, e.g. gpu-h200_2026-11-30.
#
# Runs under the machine's own python3 (jax[cuda], flax, optax, torch, timm); nothing to install.
# Order = priority; each part is time-boxed and stops at the overall deadline ($BUDGET_S seconds);
# each writes its JSON as rows complete, and the whole log goes to $OUT/log.txt:
#   1. W18 fp32 batch-1 latency (target: at most 3.7 ms, half the seed's TensorRT V100 figure),
#      scanned (with timm) and plain: the first failure stops the script
#   2. W18 bf16 train and inference at batch 256 against timm AMP (NCHW and channels-last), as a
#      user gets them (`--scan auto`: the plain training step, whose cold compile took about 100 s
#      on an H200; the scanned forward)
#   3. W18 bf16 train at batch 256, scanned
#   4. W48 bf16 train and inference at batch 256
#   5. W18 bf16 at 448 px, batch 64 (same pixels per step as 2: throughput should be about 1/4)
#   6. W18 fp32 batch-1 latency again, with XLA's command buffers (CUDA graphs) for every kind of
#      command it offers (loops included), down to one-operation graphs: the 9.7 ms measured on an
#      H200 (2026-11-30) looks like several hundred kernels at about 15 us each, i.e. launches
#      rather than arithmetic
set -uo pipefail
OUT="${OUT:-experiments/results/gpu_$(date +%F)}"
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
export HRNET_FLAX_XLA_CACHE=${HRNET_FLAX_XLA_CACHE:-/tmp/hrnet_flax_xla}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import jax, flax, optax, torch, timm; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'timm', timm.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
END=$((SECONDS + BUDGET_S))
part() {  # part SECONDS NAME ARGS...: one benchmark run, time-boxed and within the deadline
  local box=$1 name=$2 left=$((END - SECONDS)); shift 2
  ((left < 30)) && { echo "== $name: skipped, ${left}s left"; return 1; }
  echo "== $name (at most $((box < left ? box : left))s, ${SECONDS}s in)"
  timeout $((box < left ? box : left)) $PY experiments/benchmark.py --repeats 7 --no-unfolded --out "$OUT/$name.json" "$@"
}
part 100 w18_fp32_latency --variants hrnet_w18 --tasks latency --dtype float32 || exit 1
part 60 w18_fp32_latency_plain --variants hrnet_w18 --tasks latency --dtype float32 --scan off --no-timm
part 260 w18_bf16_b256 --variants hrnet_w18 --tasks train infer --dtype bfloat16 --batch 256 --repeats 5
part 100 w18_bf16_b256_scanned --variants hrnet_w18 --tasks train --dtype bfloat16 --batch 256 --scan on --no-timm --repeats 5
part 110 w48_bf16_b256 --variants hrnet_w48 --tasks train infer --dtype bfloat16 --batch 256 --repeats 5
part 70 w18_bf16_448_b64 --variants hrnet_w18 --sizes 448 --tasks train infer --dtype bfloat16 --batch 64 --no-timm --repeats 5
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1" \
  part 60 w18_fp32_latency_graphs --variants hrnet_w18 --tasks latency --dtype float32 --no-timm
echo "gpu_bench done in ${SECONDS}s"
