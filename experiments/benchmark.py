"""Benchmark hrnet-flax against timm's PyTorch HRNet in one run, alternating the two.

Measures, per variant: inference latency at batch 1 (the seed's table: 224 crop), inference
throughput at a larger batch, training-step throughput (forward, backward, SGD update) and
memory; compilation / warm-up is timed separately; every figure is the median of `--repeats`
timed samples (each `--inner` calls, synchronised after every call), ours and timm's interleaved
sample by sample so machine noise hits both alike.

    # these 2-core CPU machines (about 15 minutes for W18; nothing else may run meanwhile);
    # the `pipeline` task (tf.data rates, needs TensorFlow) runs on CPU machines only
    .venv/bin/python experiments/benchmark.py --variants hrnet_w18 --out experiments/results/cpu-2core-avx512_w18_$(date +%F).json
    # a GPU: bf16 compute (timm with AMP) and fp32; experiments/gpu_bench.sh runs the whole GPU set
    python experiments/benchmark.py --variants hrnet_w18 hrnet_w32 hrnet_w48 --dtype bfloat16 --batch 256

Rows: `ours` (jit; for inference BatchNorm folded, identical layers scanned, as the CLI runs it;
for training the training loop's step, `hrnet_flax.train.step`, on one device, scanned where the loop
scans by default (`runtime.speed_options`: one CPU device, there with `explicit_conv_grads=True`);
`--scan on|off` forces either), `ours-bn` (inference without folding), `timm` (eager NCHW),
`timm-cl` (eager channels-last) and, with `--torch-compile`, `timm-compile`; for inference on a
CPU also the deployment path (`--exports`): the model exported by `hrnet_flax.export` (BatchNorm
folded, fixed batch) run by `onnxrt` (ONNX Runtime, CPU) and `tflite` (the TFLite interpreter with
XNNPACK), each with as many threads as the machine has cores. Ratios are throughput(ours) /
throughput(timm's best eager row), and for the best deployable row (ours or an export) the same:
above 1 means we are faster.
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

# JAX and PyTorch share one GPU here: JAX must not take 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import hrnet_flax as hf  # noqa: E402
from hrnet_flax.runtime import enable_compilation_cache, use_fast_cpu_flags  # noqa: E402

# On import, before JAX starts its backend, so a script that imports this module and times `ours`
# (or experiments/conv_layers.py) runs what the entry points run: without these flags XLA:CPU puts
# convolutions on YNNPACK and an A/B comparison measures the wrong kernels (measured on a 2-core
# AVX-512 machine: a per-tap weight gradient made the W18 step 22% faster under XLA's defaults and
# 14% slower under these flags; docs/performance.md).
use_fast_cpu_flags()


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- ours (JAX)
def ours(name: str, batch: int, size: int, dtype: str, task: str, fold: bool, scan: bool = True) -> tuple[Callable, float, dict]:
    """A no-argument callable running one step, its compile time, and XLA's memory figures."""
    images = jax.random.normal(jax.random.key(1), (batch, size, size, 3), jnp.float32)
    if task == "infer":  # `fold`: the inference model, BatchNorm folded
        model = hf.create_model(name, dtype=jnp.dtype(dtype), fold_bn=fold, scan=scan)
        variables = hf.init_variables(hf.create_model(name), jax.random.key(0))  # float32, unfolded, unstacked
        variables = hf.stack_variables(variables) if scan else variables
        if fold:
            variables = hf.fold_batchnorm(variables)
        compiled = jax.jit(model.apply).lower(variables, images)
        start = time.perf_counter()
        compiled = compiled.compile()
        compile_s = time.perf_counter() - start
        state = variables

        def run():
            compiled(state, images).block_until_ready()

    else:  # the training loop's own step (hrnet_flax.train.step) on one device: SGD, momentum, L2
        from hrnet_flax.parallel import global_batch, make_mesh
        from hrnet_flax.train.config import TrainConfig
        from hrnet_flax.train.optim import create_optimizer
        from hrnet_flax.train.step import build_model, create_train_state, make_train_step

        config = TrainConfig(model=name, dtype=dtype, dataset="synthetic", image_size=size, global_batch_size=batch,
                             train_examples=batch, epochs=1, scan=scan)  # fmt: skip
        mesh, tx = make_mesh(jax.devices()[:1]), create_optimizer(config)
        step = make_train_step(config, build_model(config, scan=scan), tx, mesh)
        labels = np.arange(batch, dtype=np.int32) % 1000
        data = global_batch({"image": np.asarray(images), "label": labels, "mask": np.ones(batch, bool)}, mesh)
        box = [create_train_state(config, tx, mesh)]
        lowered = step.lower(box[0], data)
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start

        def run():
            box[0], metrics = compiled(box[0], data)
            metrics["loss"].block_until_ready()

    memory = {}
    analysis = compiled.memory_analysis()
    if analysis is not None:
        memory = {
            "temp_mb": analysis.temp_size_in_bytes / 2**20,
            "argument_mb": analysis.argument_size_in_bytes / 2**20,
        }
    return run, compile_s, memory


# ----------------------------------------------------------------------------- exports
EXPORT_ROWS = {"onnx": "onnxrt", "tflite": "tflite"}


def exported(name: str, batch: int, size: int, fmt: str, workdir: str) -> tuple[Callable, float, dict]:
    """The model exported to `fmt` at a fixed batch (verified against JAX on writing), run by its
    runtime; the export's seconds (trace, convert, verify) stand in for the compile time."""
    from hrnet_flax.export import export_model, load_exported

    model = hf.create_model(name)
    variables = hf.init_variables(model, jax.random.key(0))
    path = os.path.join(workdir, f"{name}_{size}px_b{batch}.{fmt}")
    start = time.perf_counter()
    result = export_model(model, variables, path, format=fmt, size=size, batch=batch, overwrite=True)
    export_s = time.perf_counter() - start
    call = load_exported(path, threads=os.cpu_count())
    images = np.random.default_rng(1).standard_normal((batch, size, size, 3)).astype(np.float32)
    return (lambda: call(images)), export_s, {"relative_error": result.relative_error}


def available_exports(formats: list[str]) -> list[str]:
    """The `--exports` formats whose runtime is installed (a note for each one that is not)."""
    import importlib.util

    needs = {"onnx": ("onnx", "onnxruntime"), "tflite": ("tensorflow",)}
    found = []
    for fmt in formats:
        missing = [m for m in needs[fmt] if importlib.util.find_spec(m) is None]
        if missing:
            print(f"no {fmt} rows: {', '.join(missing)} not installed", flush=True)
        else:
            found.append(fmt)
    return found


# ----------------------------------------------------------------------------- timm (PyTorch)
def reference(name: str, batch: int, size: int, dtype: str, task: str, layout: str) -> tuple[Callable, float, dict]:
    import timm
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # timm's own training scripts autotune convolutions too
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

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warm = timed(run)  # first call: torch.compile's compilation, cudnn autotuning
    memory = {"peak_mb": torch.cuda.max_memory_allocated() / 2**20} if device == "cuda" else {}
    return run, warm, memory


# ----------------------------------------------------------------------------- input pipeline
def pipeline_rates(size: int, batch: int, images: int = 256, seconds: float = 20.0) -> dict:
    """Images/s of the tf.data pipelines (train augmentation; eval resize + crop) on a folder of
    ImageNet-sized JPEGs (500x375, smooth random content), and per CPU core."""
    import tempfile

    from PIL import Image

    from hrnet_flax.data import eval_dataset, train_dataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        for i in range(images):
            os.makedirs(f"{root}/class{i % 4}", exist_ok=True)
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # upscaled: JPEG-typical content
            Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(f"{root}/class{i % 4}/{i}.jpg", quality=90)
        out = {}
        train = train_dataset(root, batch_size_per_process=batch, image_size=size)
        next(train)  # start-up: file listing, graph building, first shuffle buffer
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            count += len(next(train)["label"])
        out["train_images_per_s"] = count / (time.perf_counter() - start)
        list(eval_dataset(root, batch_size_per_process=batch, spec="timm", image_size=size))  # warm
        start = time.perf_counter()
        count = sum(int(b["mask"].sum()) for b in eval_dataset(root, batch_size_per_process=batch, spec="timm", image_size=size))
        out["eval_images_per_s"] = count / (time.perf_counter() - start)
    cores = os.cpu_count() or 1
    return {**out, "cores": cores, **{k.replace("_s", "_s_per_core"): v / cores for k, v in list(out.items())}}


# ----------------------------------------------------------------------------- driver
def measure(entries: dict[str, Callable], repeats: int, warmup: int, inner: int = 1) -> dict[str, float]:
    """Median seconds per call of each entry over `repeats` samples of `inner` calls, interleaved."""
    for _ in range(warmup):
        for run in entries.values():
            run()
    times = {k: [] for k in entries}
    for _ in range(repeats):
        for key, run in entries.items():
            times[key].append(timed(lambda: [run() for _ in range(inner)]) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def resolve_scan(choice: str, task: str) -> bool:
    """`--scan` for one row: inference always scans under auto, training as the training loop does."""
    if choice != "auto":
        return choice == "on"
    if task == "infer":
        return True
    from hrnet_flax.runtime import speed_options

    return speed_options(None, num_devices=1)["scan"]


def bench(args) -> list[dict]:
    import tempfile

    rows = []
    if not args.no_timm:
        import timm  # noqa: F401  before TensorFlow: timm imported after a TFLite conversion segfaults (triton's LLVM)
    exports = available_exports(args.exports) if jax.default_backend() == "cpu" and args.dtype == "float32" else []
    workdir = tempfile.mkdtemp(prefix="hrnet_flax_bench_")
    cases = [c for c in [("latency", 1), ("infer", args.batch), ("train", args.batch)] if c[0] in args.tasks]
    for name in args.variants:
        for size in args.sizes:
            for task, batch in cases:
                entries, setup = {}, {}
                kind = "train" if task == "train" else "infer"
                scan = resolve_scan(args.scan, kind)
                for key, fold in (("ours", True), ("ours-bn", False)):
                    if key == "ours-bn" and (task == "train" or args.no_unfolded):
                        continue
                    run, compile_s, memory = ours(name, batch, size, args.dtype, kind, fold, scan)
                    entries[key], setup[key] = run, {"compile_s": compile_s, "scan": scan, **memory}
                for fmt in exports if kind == "infer" else []:
                    run, export_s, info = exported(name, batch, size, fmt, workdir)
                    entries[EXPORT_ROWS[fmt]], setup[EXPORT_ROWS[fmt]] = run, {"export_s": export_s, **info}
                if not args.no_timm:
                    layouts = ["nchw", "cl"] + (["compile"] if args.torch_compile else [])
                    for layout in layouts:
                        key = {"nchw": "timm", "cl": "timm-cl", "compile": "timm-compile"}[layout]
                        run, warm, memory = reference(name, batch, size, args.dtype, kind, layout)
                        entries[key], setup[key] = run, {"warmup_s": warm, **memory}
                seconds = measure(entries, args.repeats, args.warmup, args.inner)
                row = {"variant": name, "size": size, "task": task, "batch": batch, "dtype": args.dtype}
                for key, s in seconds.items():
                    row[key] = {"ms_per_step": 1e3 * s, "images_per_s": batch / s, **setup[key]}
                eager = [k for k in ("timm", "timm-cl") if k in seconds]
                if eager:
                    best = min(seconds[k] for k in eager)
                    row["ratio_vs_best_timm_eager"] = best / seconds["ours"]
                    deployable = [k for k in ("ours", *EXPORT_ROWS.values()) if k in seconds]
                    fastest = min(deployable, key=seconds.get)
                    row["best_deployable"] = fastest
                    row["best_deployable_vs_best_timm_eager"] = best / seconds[fastest]
                rows.append(row)
                print(format_row(row), flush=True)
                if args.out:  # after every row, so a run stopped midway keeps what it measured
                    write_json(args.out, args, rows)
    if "pipeline" in args.tasks:
        for size in args.sizes:
            rates = pipeline_rates(size, args.batch, args.pipeline_images, args.pipeline_seconds)
            row = {"task": "pipeline", "size": size, "batch": args.batch, **rates}
            rows.append(row)
            print(format_pipeline(row), flush=True)
    return rows


def format_pipeline(row: dict) -> str:
    return (f"input pipeline {row['size']}px: train augmentation {row['train_images_per_s']:.0f} img/s "
            f"({row['train_images_per_s_per_core']:.0f} per core), eval preprocessing "
            f"{row['eval_images_per_s']:.0f} img/s ({row['eval_images_per_s_per_core']:.0f} per core), {row['cores']} cores")


def write_json(path: str, args: argparse.Namespace, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine(), "args": vars(args), "rows": rows}, f, indent=1)


def format_row(row: dict) -> str:
    cells = [f"{row['variant']} {row['size']}px {row['task']} b{row['batch']} {row['dtype']}:"]
    for key in ("ours", "ours-bn", *EXPORT_ROWS.values(), "timm", "timm-cl", "timm-compile"):
        if key in row:
            r = row[key]
            value = f"{r['ms_per_step']:.1f} ms" if row["batch"] == 1 else f"{r['images_per_s']:.2f} img/s"
            cells.append(f"{key} {value}")
    if "ratio_vs_best_timm_eager" in row:
        cells.append(f"ratio {row['ratio_vs_best_timm_eager']:.2f}x")
    if row.get("best_deployable", "ours") != "ours":
        cells.append(f"best deployable {row['best_deployable']} {row['best_deployable_vs_best_timm_eager']:.2f}x")
    return "  ".join(cells)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | size | task | batch | ours | ours (plain model) | ONNX Runtime | TFLite | timm | timm channels-last "
        "| ours / best timm | best deployable / best timm | compile (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [r for r in rows if r["task"] != "pipeline"]:
        unit = (lambda e: f"{e['ms_per_step']:.1f} ms") if r["batch"] == 1 else (lambda e: f"{e['images_per_s']:.2f} img/s")
        cell = lambda k: unit(r[k]) if k in r else "-"  # noqa: E731
        ratio = f"{r['ratio_vs_best_timm_eager']:.2f}x" if "ratio_vs_best_timm_eager" in r else "-"
        deploy = "-"
        if "best_deployable" in r:
            deploy = f"{r['best_deployable_vs_best_timm_eager']:.2f}x ({r['best_deployable']})"
        lines.append(
            f"| {r['variant']} | {r['size']} | {r['task']} | {r['batch']} | {cell('ours')} | {cell('ours-bn')} "
            f"| {cell('onnxrt')} | {cell('tflite')} | {cell('timm')} | {cell('timm-cl')} | {ratio} | {deploy} "
            f"| {r['ours']['compile_s']:.0f} |"
        )
    lines += ["", *(format_pipeline(r) for r in rows if r["task"] == "pipeline")]
    return "\n".join(lines).rstrip()


def machine() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "xla_flags": os.environ.get("XLA_FLAGS", "")}  # fmt: skip
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
            info["torch_cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["jax_default_matmul_precision"] = str(getattr(jax.config, "jax_default_matmul_precision", None))
    except ImportError:
        pass
    return info


def parser() -> argparse.ArgumentParser:
    """The command line (also checked against `gpu_bench.sh`'s runs by the tests)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)  # no silent prefixes
    p.add_argument("--variants", nargs="+", default=["hrnet_w18", "hrnet_w32", "hrnet_w48"])
    p.add_argument("--sizes", nargs="+", type=int, default=[224])
    p.add_argument("--batch", type=int, default=None, help="throughput batch (default: 16 on CPU, 256 on GPU)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--tasks", nargs="+", choices=["latency", "infer", "train", "pipeline"],
                   default=["latency", "infer", "train", "pipeline"])  # fmt: skip
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--inner", type=int, default=None, help="calls per timed sample (default: 1 on CPU, 10 on GPU)")
    p.add_argument("--no-unfolded", action="store_true", help="skip the BatchNorm-unfolded inference row")
    p.add_argument("--pipeline-images", type=int, default=256, help="JPEGs in the input-pipeline folder")
    p.add_argument("--pipeline-seconds", type=float, default=20.0, help="time the training pipeline this long")
    p.add_argument("--scan", choices=["auto", "on", "off"], default="auto",
                   help="scanned layers in our rows: auto = as the CLI (inference) and the training loop (training) do")
    p.add_argument("--exports", nargs="+", choices=["onnx", "tflite", "none"], default=["onnx", "tflite"],
                   help="inference rows of exported models on a CPU (float32; those whose runtime is installed)")
    p.add_argument("--torch-compile", action="store_true", help="also time torch.compile (minutes to compile on CPU)")
    p.add_argument("--no-timm", action="store_true", help="ours only")
    p.add_argument("--out", help="write the rows and the machine description as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.exports = [f for f in args.exports if f != "none"]
    if args.batch is None:
        args.batch = 256 if jax.default_backend() == "gpu" else 16
    if args.inner is None:
        args.inner = 10 if jax.default_backend() == "gpu" else 1
    for size in args.sizes:
        hf.models.hrnet.check_image_size((1, size, size, 3))
    enable_compilation_cache()
    rows = bench(args)
    print()
    print(markdown(rows))
    if args.out:
        write_json(args.out, args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
