"""Benchmark hrnet-flax against timm's PyTorch HRNet in one run, alternating the two.

Measures, per variant: inference latency at batch 1 (the seed's table: 224 crop), inference
throughput at a larger batch, training-step throughput (forward, backward, SGD update) and
memory; compilation / warm-up is timed separately; every figure is the median of `--repeats`
timed calls, ours and timm's interleaved call by call so machine noise hits both alike.

    # these 2-core CPU machines (about 15 minutes for W18; nothing else may run meanwhile)
    .venv/bin/python experiments/benchmark.py --variants hrnet_w18 --out experiments/results/cpu.json
    # a GPU: bf16 compute (timm with AMP) and fp32
    python experiments/benchmark.py --variants hrnet_w18 hrnet_w32 hrnet_w48 --dtype bfloat16 --batch 256

Rows: `ours` (jit, BatchNorm folded for inference), `ours-bn` (jit, unfolded), `timm` (eager NCHW),
`timm-cl` (eager channels-last) and, with `--torch-compile`, `timm-compile`. Ratios are
throughput(ours) / throughput(timm's best eager row): above 1 means we are faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hrnet_flax as hf
from hrnet_flax.compilation_cache import enable_compilation_cache


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- ours (JAX)
def ours(name: str, batch: int, size: int, dtype: str, task: str, fold: bool) -> tuple[Callable, float, dict]:
    """A no-argument callable running one step, its compile time, and XLA's memory figures."""
    compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    model = hf.create_model(name, dtype=compute, fold_bn=fold and task == "infer")
    variables = hf.init_variables(hf.create_model(name), jax.random.key(0))  # float32, unfolded
    images = jax.random.normal(jax.random.key(1), (batch, size, size, 3), jnp.float32)
    if task == "infer":
        if fold:
            variables = hf.fold_batchnorm(variables)
        compiled = jax.jit(model.apply).lower(variables, images)
        start = time.perf_counter()
        compiled = compiled.compile()
        compile_s = time.perf_counter() - start
        state = variables

        def run():
            compiled(state, images).block_until_ready()

    else:
        labels = jnp.arange(batch) % 1000
        tx = optax.sgd(0.1, momentum=0.9)
        train_state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

        def step(st, images, labels):
            params, stats, opt = st

            def loss_fn(p):
                logits, new = model.apply({"params": p, "batch_stats": stats}, images, train=True, mutable=["batch_stats"])
                return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new["batch_stats"]

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), stats, opt), loss

        lowered = jax.jit(step, donate_argnums=0).lower(train_state, images, labels)
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
        box = [train_state]

        def run():
            box[0], loss = compiled(box[0], images, labels)
            loss.block_until_ready()

    memory = {}
    analysis = compiled.memory_analysis()
    if analysis is not None:
        memory = {
            "temp_mb": analysis.temp_size_in_bytes / 2**20,
            "argument_mb": analysis.argument_size_in_bytes / 2**20,
        }
    return run, compile_s, memory


# ----------------------------------------------------------------------------- timm (PyTorch)
def reference(name: str, batch: int, size: int, dtype: str, task: str, layout: str) -> tuple[Callable, float]:
    import timm
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = timm.create_model(name, pretrained=False).to(device)
    fmt = torch.channels_last if layout in ("cl", "compile") else torch.contiguous_format
    model = model.to(memory_format=fmt)
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    labels = torch.arange(batch, device=device) % 1000
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    fn = torch.compile(model) if layout == "compile" else model
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if task == "infer":
        model.eval()

        def run():
            with torch.no_grad(), amp:
                fn(images)
            sync()

    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def run():
            with amp:
                loss = torch.nn.functional.cross_entropy(fn(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()

    warm = _timed(run)  # first call: torch.compile's compilation, cudnn autotuning
    return run, warm


# ----------------------------------------------------------------------------- driver
def measure(entries: dict[str, Callable], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each entry, calls interleaved round by round."""
    for _ in range(warmup):
        for run in entries.values():
            run()
    times = {k: [] for k in entries}
    for _ in range(repeats):
        for key, run in entries.items():
            times[key].append(_timed(run))
    return {k: statistics.median(v) for k, v in times.items()}


def bench(args) -> list[dict]:
    rows = []
    cases = [c for c in [("latency", 1), ("infer", args.batch), ("train", args.batch)] if c[0] in args.tasks]
    for name in args.variants:
        for size in args.sizes:
            for task, batch in cases:
                entries, setup = {}, {}
                for key, fold in (("ours", True), ("ours-bn", False)):
                    if key == "ours-bn" and task == "train":
                        continue
                    run, compile_s, memory = ours(name, batch, size, args.dtype, "train" if task == "train" else "infer", fold)
                    entries[key], setup[key] = run, {"compile_s": compile_s, **memory}
                if not args.no_timm:
                    layouts = ["nchw", "cl"] + (["compile"] if args.torch_compile else [])
                    for layout in layouts:
                        key = {"nchw": "timm", "cl": "timm-cl", "compile": "timm-compile"}[layout]
                        run, warm = reference(name, batch, size, args.dtype, "train" if task == "train" else "infer", layout)
                        entries[key], setup[key] = run, {"warmup_s": warm}
                seconds = measure(entries, args.repeats, args.warmup)
                row = {"variant": name, "size": size, "task": task, "batch": batch, "dtype": args.dtype}
                for key, s in seconds.items():
                    row[key] = {"ms_per_step": 1e3 * s, "images_per_s": batch / s, **setup[key]}
                eager = [k for k in ("timm", "timm-cl") if k in seconds]
                if eager:
                    best = min(seconds[k] for k in eager)
                    row["ratio_vs_best_timm_eager"] = best / seconds["ours"]
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    cells = [f"{row['variant']} {row['size']}px {row['task']} b{row['batch']} {row['dtype']}:"]
    for key in ("ours", "ours-bn", "timm", "timm-cl", "timm-compile"):
        if key in row:
            r = row[key]
            value = f"{r['ms_per_step']:.1f} ms" if row["batch"] == 1 else f"{r['images_per_s']:.2f} img/s"
            cells.append(f"{key} {value}")
    if "ratio_vs_best_timm_eager" in row:
        cells.append(f"ratio {row['ratio_vs_best_timm_eager']:.2f}x")
    return "  ".join(cells)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | size | task | batch | ours | ours (BN unfolded) | timm | timm channels-last | ours / best timm | compile (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        unit = (lambda e: f"{e['ms_per_step']:.1f} ms") if r["batch"] == 1 else (lambda e: f"{e['images_per_s']:.2f} img/s")
        cell = lambda k: unit(r[k]) if k in r else "-"  # noqa: E731
        ratio = f"{r['ratio_vs_best_timm_eager']:.2f}x" if "ratio_vs_best_timm_eager" in r else "-"
        lines.append(
            f"| {r['variant']} | {r['size']} | {r['task']} | {r['batch']} | {cell('ours')} | {cell('ours-bn')} "
            f"| {cell('timm')} | {cell('timm-cl')} | {ratio} | {r['ours']['compile_s']:.0f} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}  # fmt: skip
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["hrnet_w18", "hrnet_w32", "hrnet_w48"])
    p.add_argument("--sizes", nargs="+", type=int, default=[224])
    p.add_argument("--batch", type=int, default=None, help="throughput batch (default: 16 on CPU, 256 on GPU)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--tasks", nargs="+", choices=["latency", "infer", "train"], default=["latency", "infer", "train"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile (minutes to compile on CPU)")
    p.add_argument("--no-timm", action="store_true", help="ours only")
    p.add_argument("--out", help="write the rows and the machine description as JSON here")
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = 256 if jax.default_backend() == "gpu" else 16
    for size in args.sizes:
        hf.model.check_image_size((1, size, size, 3))
    enable_compilation_cache()
    rows = bench(args)
    print()
    print(markdown(rows))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
