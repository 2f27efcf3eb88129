"""Data-parallel scaling on paper: from a single-device training step measured by
experiments/benchmark.py, the expected efficiency of synchronous data-parallel training on 8, 64
and 512 accelerators (weak scaling: every device keeps the measured per-device batch).

    .venv/bin/python experiments/scaling.py experiments/results/gpu-h200_2026-11-30/w18_bf16_b256_train_plain.json
    .venv/bin/python experiments/scaling.py experiments/results/gpu-h200_2026-11-30/w48_bf16_b256.json --json out.json

It reads the benchmark JSON's training row of `--variant` (default: the file's first variant) for
the step time T; parameter and BatchNorm counts come from the model itself. Per scale, network and
gradient precision it prints:

- gradient bytes per step: parameters x 4 (float32, what the training loop all-reduces) or x 2
  (bfloat16 gradients);
- the ring all-reduce volume each device sends (and receives): 2(N-1)/N x gradient bytes;
- the all-reduce's time on the assumed links (`NETWORKS`): for GPUs a hierarchical all-reduce
  (reduce-scatter and all-gather over NVLink inside each node of 8, a ring across nodes over each
  GPU's own InfiniBand port for its 1/8 of the gradients), for TPU chips one ring over ICI;
- the synchronised BatchNorm's all-reduces: two per BatchNorm layer and step (forward statistics,
  their backward), each a few bytes, so latency-bound, and on the critical path (at most: XLA may
  combine independent ones);
- the step time at which the efficiency would be 90% with no overlap, 9 x (all-reduce + BatchNorm);
- with a measured step: the efficiency T / (T + exposed communication) with no overlap (all of it
  after the backward pass) and with full overlap of the gradient all-reduce with the backward pass
  (assumed to be 2/3 of the step): exposed = max(0, all-reduce - 2T/3) + BatchNorm.

Every link figure and latency is an assumption (`NETWORKS`), not a measurement; the TPU rows use the
GPU's measured step as the chip's (a v5p chip has about half an H200's bf16 peak, so its step is
likely longer and its efficiency higher than shown).
"""

from __future__ import annotations

import argparse
import json
import sys

BACKWARD_SHARE = 2 / 3  # of a training step: the backward pass, about twice the forward
SCALES = (8, 64, 512)
GRADIENT_BYTES = {"float32": 4, "bfloat16": 2}
# Effective one-direction bandwidths (bytes/s, about 80% of the nominal link rate) and latencies of one
# small all-reduce (s) per scale: assumptions, not measurements.
NETWORKS = {
    "H200": {
        "describe": "8 GPUs a node on NVLink 4 (450 GB/s a direction, 360 effective), "
        "400 Gb/s InfiniBand per GPU across nodes (40 GB/s effective)",
        "node": 8,
        "intra_bw": 360e9,
        "inter_bw": 40e9,
        "latency": {8: 15e-6, 64: 35e-6, 512: 60e-6},
    },
    "TPU v5p": {
        "describe": "one ring over ICI (4800 Gb/s a chip over its 6 links; 300 GB/s effective for the all-reduce)",
        "node": None,
        "intra_bw": 300e9,
        "inter_bw": None,
        "latency": {8: 10e-6, 64: 20e-6, 512: 30e-6},
    },
}


def model_counts(variant: str) -> tuple[int, int]:
    """(trainable parameters as `hrnet_flax.models.info` counts them, BatchNorm layers) of a variant,
    from its shapes (no compilation)."""
    import jax
    import jax.numpy as jnp

    import hrnet_flax as hf
    from hrnet_flax.models import info

    stats = jax.eval_shape(hf.create_model(variant).init, jax.random.key(0), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))["batch_stats"]
    norms = sum(1 for path, _ in jax.tree_util.tree_flatten_with_path(stats)[0] if path[-1].key == "mean")
    return info.count(variant, 64).params, norms


def allreduce_seconds(nbytes: float, devices: int, net: dict) -> float:
    """Bandwidth time of one all-reduce of `nbytes` over `devices` (hierarchical across GPU nodes)."""
    node = net["node"]
    if node is None or devices <= node:
        return 2 * (devices - 1) / devices * nbytes / net["intra_bw"]
    nodes = devices // node
    inside = 2 * (node - 1) / node * nbytes / net["intra_bw"]  # reduce-scatter + all-gather in the node
    return inside + 2 * (nodes - 1) / nodes * (nbytes / node) / net["inter_bw"]


def scaling_rows(params: int, norms: int, step_s: float | None) -> list[dict]:
    """One row per network, scale and gradient precision."""
    rows = []
    for network, net in NETWORKS.items():
        for n in SCALES:
            for dtype, width in GRADIENT_BYTES.items():
                nbytes = params * width
                grad_s = allreduce_seconds(nbytes, n, net)
                bn_s = 2 * norms * net["latency"][n]
                row = {"network": network, "devices": n, "gradient_dtype": dtype, "gradient_mb": nbytes / 1e6,
                       "ring_volume_mb": 2 * (n - 1) / n * nbytes / 1e6, "allreduce_ms": 1e3 * grad_s,
                       "batchnorm_ms": 1e3 * bn_s, "step_for_90_ms": 1e3 * 9 * (grad_s + bn_s)}  # fmt: skip
                if step_s is not None:
                    row["efficiency_no_overlap"] = step_s / (step_s + grad_s + bn_s)
                    row["efficiency_overlap"] = step_s / (step_s + max(0.0, grad_s - BACKWARD_SHARE * step_s) + bn_s)
                rows.append(row)
    return rows


def train_row(report: dict, variant: str | None, path: str) -> tuple[str, dict | None]:
    """(variant, its training row or None) of a benchmark report."""
    rows = [r for r in report.get("rows", []) if "variant" in r]
    if not rows:
        raise SystemExit(f"{path}: no benchmark rows (expected experiments/benchmark.py's JSON with 'rows')")
    variant = variant or rows[0]["variant"]
    found = [r for r in rows if r["variant"] == variant and r["task"] == "train" and "ours" in r]
    if not any(r["variant"] == variant for r in rows):
        raise SystemExit(f"{path}: no rows for {variant!r} (variants: {', '.join(sorted({r['variant'] for r in rows}))})")
    return variant, found[0] if found else None


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| accelerators | gradients | gradient MB | ring volume / device MB | all-reduce ms | sync BatchNorm ms "
             "| step for 90% ms | efficiency, no overlap | efficiency, overlap |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    pct = lambda r, k: f"{100 * r[k]:.1f}%" if k in r else "-"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['devices']} x {r['network']} | {r['gradient_dtype']} | {r['gradient_mb']:.1f} | {r['ring_volume_mb']:.1f} "
            f"| {r['allreduce_ms']:.2f} | {r['batchnorm_ms']:.2f} | {r['step_for_90_ms']:.0f} "
            f"| {pct(r, 'efficiency_no_overlap')} | {pct(r, 'efficiency_overlap')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("benchmark", help="a JSON file written by experiments/benchmark.py")
    p.add_argument("--variant", help="the variant whose training row gives the step (default: the file's first)")
    p.add_argument("--json", help="also write the figures and the assumptions here")
    args = p.parse_args(argv)
    try:
        with open(args.benchmark) as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"cannot read the benchmark JSON {args.benchmark}: {e}") from None
    variant, row = train_row(report, args.variant, args.benchmark)
    params, norms = model_counts(variant)
    step_s = row["ours"]["ms_per_step"] / 1e3 if row else None
    rows = scaling_rows(params, norms, step_s)
    device = report.get("machine", {}).get("gpu") or report.get("machine", {}).get("backend", "?")
    if row:
        print(f"{variant}: measured step {1e3 * step_s:.1f} ms at batch {row['batch']} per device, {row['dtype']} "
              f"({device}, {args.benchmark})")  # fmt: skip
    else:
        print(f"{variant}: {args.benchmark} has no training row, so no efficiency; the step-for-90% column still holds")
    print(f"{params / 1e6:.2f} M parameters, {norms} BatchNorm layers (2 all-reduces each per step)")
    for network, net in NETWORKS.items():
        print(f"assumed {network}: {net['describe']}; one small all-reduce "
              + ", ".join(f"{1e6 * s:.0f} us on {n}" for n, s in net["latency"].items()))  # fmt: skip
    print(f"assumed backward pass: {BACKWARD_SHARE:.2f} of the step\n")
    print(table(rows))
    if args.json:
        out = {"source": args.benchmark, "variant": variant, "params": params, "batchnorm_layers": norms,
               "step_ms": None if step_s is None else 1e3 * step_s, "batch_per_device": row["batch"] if row else None,
               "assumptions": {"backward_share": BACKWARD_SHARE, "networks": NETWORKS}, "rows": rows}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
