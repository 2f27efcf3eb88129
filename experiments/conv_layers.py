"""Every distinct convolution of an HRNet, timed alone against PyTorch's, forward and both gradients.

Ours is `hrnet_flax.models.conv.conv2d` with the hand-written gradients that the scanned CPU training step
uses (each part jitted on its own); PyTorch's is `conv2d` and `convolution_backward`, channels-last,
timed in the same run and alternating with ours. Each row is one layer shape with how often the
model applies it; the totals weight each row by that count. It shows which layers hold the training
step's convolution time and where XLA:CPU's kernels trail PyTorch's (about a minute for W18):

    .venv/bin/python experiments/conv_layers.py --variant hrnet_w18 --out experiments/results/cpu-2core-avx512_conv-layers-w18_$(date +%F).json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from benchmark import machine, timed  # experiments/benchmark.py, beside this script (sets the fast CPU flags)

from hrnet_flax.models import conv, info
from hrnet_flax.runtime import enable_compilation_cache

PARTS = ("fwd", "dx", "dw")


def ours(layer: info.Layer, batch: int) -> dict[str, Callable[[], object]]:
    """No-argument callables for the forward, the input gradient and the weight gradient."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, *layer.input_shape)), jnp.float32)
    w = jnp.asarray(rng.normal(size=layer.kernel_shape), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(batch, *layer.output_shape)), jnp.float32)
    fn = lambda x, w: conv.conv2d(x, w, layer.strides, layer.padding)  # noqa: E731
    fwd = jax.jit(fn)
    dx = jax.jit(lambda x, w, dy: jax.vjp(lambda x: fn(x, w), x)[1](dy)[0])
    dw = jax.jit(lambda x, w, dy: jax.vjp(lambda w: fn(x, w), w)[1](dy)[0])
    return {
        "fwd": lambda: fwd(x, w).block_until_ready(),
        "dx": lambda: dx(x, w, dy).block_until_ready(),
        "dw": lambda: dw(x, w, dy).block_until_ready(),
    }


def reference(layer: info.Layer, batch: int) -> dict[str, Callable[[], object]]:
    import torch

    cl = torch.channels_last
    h, w_, cin = layer.input_shape
    kh, kw, _, cout = layer.kernel_shape
    x = torch.randn(batch, cin, h, w_).contiguous(memory_format=cl)
    w = torch.randn(cout, cin, kh, kw).contiguous(memory_format=cl)
    dy = torch.randn(batch, cout, *layer.output_shape[:2]).contiguous(memory_format=cl)
    if any(lo != hi for lo, hi in layer.padding):
        raise ValueError(f"PyTorch's conv2d pads symmetrically; this layer has padding {layer.padding} ({layer})")
    stride, pad = list(layer.strides), [lo for lo, _ in layer.padding]
    backward = torch.ops.aten.convolution_backward

    def grad(mask):
        with torch.no_grad():
            return backward(dy, x, w, None, stride, pad, [1, 1], False, [0, 0], 1, mask)

    def fwd():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, None, stride, pad)

    return {"fwd": fwd, "dx": lambda: grad([True, False, False]), "dw": lambda: grad([False, True, False])}


def bench(args: argparse.Namespace) -> list[dict]:
    layers, _ = info.layers(args.variant, args.size)
    convs = collections.Counter(layer for layer in layers if layer.kind == "conv")
    rows = []
    for layer, count in convs.most_common():
        entries = {"ours": ours(layer, args.batch)}
        if not args.no_torch:
            entries["torch"] = reference(layer, args.batch)
        for runs in entries.values():  # compile and warm up
            for run in runs.values():
                run()
        times = {(who, part): [] for who in entries for part in PARTS}
        for _ in range(args.repeats):
            for who, runs in entries.items():
                for part, run in runs.items():
                    times[who, part].append(1e3 * timed(run))
        row = {
            "input": layer.input_shape, "kernel": layer.kernel_shape, "stride": layer.strides[0], "count": count,
            "gmacs": args.batch * layer.macs / 1e9,
            **{who: {part: statistics.median(times[who, part]) for part in PARTS} for who in entries},
        }  # fmt: skip
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    (h, w, cin), (k, _, _, cout) = row["input"], row["kernel"]
    cells = [f"{h}x{w} {cin}->{cout} {k}x{k}/{row['stride']} x{row['count']}:"]
    for who in ("ours", "torch"):
        if who in row:
            cells.append(f"{who} " + " ".join(f"{part} {row[who][part]:.2f}" for part in PARTS))
    return "  ".join(cells) + " (ms)"


def totals(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Milliseconds per batch of each part, summed over the model's layers (each row times its count)."""
    whos = [w for w in ("ours", "torch") if rows and w in rows[0]]
    return {who: {part: sum(r["count"] * r[who][part] for r in rows) for part in PARTS} for who in whos}


def markdown(rows: list[dict]) -> str:
    torch = bool(rows) and "torch" in rows[0]
    head = "| input | Cin -> Cout | kernel / stride | count | " + " | ".join(f"ours {p}" for p in PARTS)
    head += (" | " + " | ".join(f"torch {p}" for p in PARTS) + " | ours / torch, speed |") if torch else " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    key = lambda r: -r["count"] * sum(r["ours"].values())  # noqa: E731
    for r in sorted(rows, key=key):
        (h, w, cin), (k, _, _, cout) = r["input"], r["kernel"]
        cells = [f"{h}x{w}", f"{cin} -> {cout}", f"{k}x{k} / {r['stride']}", str(r["count"])]
        cells += [f"{r['ours'][p]:.2f}" for p in PARTS]
        if torch:
            cells += [f"{r['torch'][p]:.2f}" for p in PARTS]
            cells.append(f"{sum(r['torch'].values()) / sum(r['ours'].values()):.2f}x")  # above 1: ours faster
        lines.append("| " + " | ".join(cells) + " |")
    for who, parts in totals(rows).items():
        lines.append(f"\n{who}, whole model (ms per batch): " + ", ".join(f"{p} {v:.0f}" for p, v in parts.items())
                     + f", all {sum(parts.values()):.0f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--variant", default="hrnet_w18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="ours only")
    p.add_argument("--out", help="write the rows, totals and the machine as JSON here")
    args = p.parse_args(argv)
    enable_compilation_cache()
    rows = bench(args)
    print()
    print(markdown(rows))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        report = {"machine": machine(), "args": vars(args), "totals_ms": totals(rows), "rows": rows}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
