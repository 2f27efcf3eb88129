#!/usr/bin/env bash
# Every GPU measurement of the speed issue in one call (at most 8 minutes on one H100/H200):
#
#     OUT=experiments/results/gpu bash experiments/gpu_bench.sh
#
# Runs under the machine's own python3 (jax[cuda], flax, optax, torch, timm); nothing to install.
# Order = priority, each part time-boxed, each writes its JSON as rows complete:
#   1. W18 fp32 batch-1 latency (target: at most 3.7 ms, half the seed's TensorRT V100 figure)
#   2. W18 bf16 train and inference at batch 256 against timm AMP (NCHW and channels-last)
#   3. W18 bf16 at 448 px, batch 64 (same pixels per step as 2: throughput should be about 1/4)
#   4. W48 bf16 train and inference at batch 256
set -uo pipefail
OUT=${OUT:-experiments/results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export HRNET_FLAX_XLA_CACHE=${HRNET_FLAX_XLA_CACHE:-/tmp/hrnet_flax_xla}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import jax, flax, optax, torch, timm; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, 'timm', timm.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
B="$PY experiments/benchmark.py --repeats 10 --no-unfolded"
timeout 100 $B --variants hrnet_w18 --tasks latency --dtype float32 --out "$OUT/w18_fp32_latency.json"
timeout 170 $B --variants hrnet_w18 --tasks train infer --dtype bfloat16 --batch 256 --out "$OUT/w18_bf16_b256.json"
timeout 100 $B --variants hrnet_w18 --sizes 448 --tasks train infer --dtype bfloat16 --batch 64 --out "$OUT/w18_bf16_448_b64.json"
timeout 120 $B --variants hrnet_w48 --tasks train infer --dtype bfloat16 --batch 256 --out "$OUT/w48_bf16_b256.json"
echo "gpu_bench done"
