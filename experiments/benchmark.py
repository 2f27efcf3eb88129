"""Benchmark hrnet-flax against PyTorch's HRNets in one run, alternating the two.

Measures, per variant: inference latency at batch 1 (the seed's table: 224 crop), inference
throughput at a larger batch, training-step throughput (forward, backward, SGD update) and
memory; compilation / warm-up is timed separately; every figure is the median of `--repeats`
timed samples (each `--inner` calls, synchronised after every call), ours and PyTorch's interleaved
sample by sample so machine noise hits both alike. The PyTorch reference of a classifier is timm's
model of that name; of a segmenter (`hrnetv2_*_seg`) and a pose network (`pose_hrnet_*`) the
official networks of tests/dense_reference.py (`OfficialSegHRNet`, `OfficialPoseHRNet`) built from
the same `HRNetConfig`, at 512x1024 and 256x192 unless `--sizes` says otherwise (`224` or `HxW`).

    # these 2-core CPU machines (about 15 minutes for W18; nothing else may run meanwhile);
    # the `pipeline` task (tf.data rates, needs TensorFlow) runs on CPU machines only
    .venv/bin/python experiments/benchmark.py --variants hrnet_w18 --out experiments/results/cpu-2core-avx512_w18_$(date +%F).json
    # a GPU: bf16 compute (timm with AMP) and fp32; experiments/gpu_bench.sh runs the whole GPU set
    python experiments/benchmark.py --variants hrnet_w18 hrnet_w32 hrnet_w48 --dtype bfloat16 --batch 256
    # the dense models: training step and inference against the official PyTorch networks
    python experiments/benchmark.py --variants hrnetv2_w48_seg --tasks train infer --dtype bfloat16 --batch 8

Rows: `ours` (jit; for inference BatchNorm folded, identical layers scanned, as the CLI runs it;
for training the training loop's step, `hrnet_flax.train.step`, on one device, scanned where the loop
scans by default (`runtime.speed_options`: one CPU device, there with `explicit_conv_grads=True`);
`--scan on|off` forces either; the step of the variant's task: cross-entropy, the segmentation
cross-entropy of logits resized to the labels with ignored pixels, or the heatmap MSE), `ours-bn`
(inference without folding), the PyTorch rows `timm` / `torch` (classifier / dense reference;
eager NCHW), `timm-cl` / `torch-cl` (eager channels-last) and, with `--layouts ... compile`,
`timm-compile` / `torch-compile`, with AMP in bfloat16 and the matching loss and an SGD update for
training; for classifiers' inference on a CPU also the deployment path (`--exports`; none for the
dense variants): the model exported by `hrnet_flax.export` (BatchNorm folded, fixed batch) run by
`onnxrt` (ONNX Runtime, CPU) and `tflite` (the TFLite interpreter with XNNPACK), each with as many
threads as the machine has cores. Ratios are throughput(ours) / throughput(the best eager PyTorch
row), and for the best deployable row (ours or an export) the same: above 1 means we are faster.
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
from hrnet_flax.models.config import DEFAULT_CLASSES  # noqa: E402
from hrnet_flax.models.hrnet import check_image_size, size_multiple  # noqa: E402
from hrnet_flax.models.registry import canonical_name, get_config  # noqa: E402
from hrnet_flax.runtime import enable_compilation_cache, use_fast_cpu_flags  # noqa: E402
from hrnet_flax.train.config import TrainConfig  # noqa: E402

# On import, before JAX starts its backend, so a script that imports this module and times `ours`
# (or experiments/conv_layers.py) runs what the entry points run: without these flags XLA:CPU puts
# convolutions on YNNPACK and an A/B comparison measures the wrong kernels (measured on a 2-core
# AVX-512 machine: a per-tap weight gradient made the W18 step 22% faster under XLA's defaults and
# 14% slower under these flags; docs/performance.md).
use_fast_cpu_flags()


IGNORE_LABEL = TrainConfig.ignore_label  # segmentation label pixels that count for nothing (both sides' loss)
DEFAULT_SIZES = {"classification": 224, "segmentation": "512x1024", "pose": "256x192"}  # per head


def parse_size(text: str) -> int | str:
    """`--sizes` entry: `224` (square, kept an int) or `HxW` (e.g. `512x1024`)."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"size {text!r}: give a side (224) or HxW (512x1024), positive integers")
    return int(parts[0]) if len(parts) == 1 else f"{int(parts[0])}x{int(parts[1])}"


def hw(size: int | str) -> tuple[int, int]:
    """(H, W) of a `parse_size` value."""
    if isinstance(size, int):
        return size, size
    h, w = size.split("x")
    return int(h), int(w)


def head(name: str) -> str:
    """The variant's task: classification, segmentation or pose."""
    return get_config(name).head


def reference_prefix(name: str) -> str:
    """Row-key prefix of the variant's PyTorch rows: `timm` (classifiers) or `torch` (dense references)."""
    return "timm" if head(name) == "classification" else "torch"


def targets(task: str, batch: int, size: tuple[int, int], classes: int) -> dict[str, np.ndarray]:
    """Random training targets of `task`, shared by ours and the PyTorch rows: class labels, label
    maps (the top eighth ignored, as in padded crops) or stride-4 heatmaps (NHWC) with joint weights."""
    rng = np.random.default_rng(0)
    if task == "classification":
        return {"label": np.arange(batch, dtype=np.int32) % classes}
    if task == "segmentation":
        label = rng.integers(0, classes, (batch, *size), dtype=np.int32)
        label[:, : size[0] // 8] = IGNORE_LABEL
        return {"label": label}
    heatmaps = rng.random((batch, size[0] // 4, size[1] // 4, classes), dtype=np.float32)
    return {"target": heatmaps, "target_weight": np.ones((batch, classes), np.float32)}


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- ours (JAX)
def ours(
    name: str, batch: int, size: tuple[int, int], dtype: str, task: str, fold: bool, scan: bool = True
) -> tuple[Callable, float, dict]:
    """A no-argument callable running one step on (H, W) = `size` images, its compile time, and
    XLA's memory figures."""
    images = jax.random.normal(jax.random.key(1), (batch, *size, 3), jnp.float32)
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

    else:  # the training loop's own step (hrnet_flax.train.step) for the variant's task on one device: SGD, momentum, L2
        from hrnet_flax.parallel import global_batch, make_mesh
        from hrnet_flax.train.optim import create_optimizer
        from hrnet_flax.train.step import build_model, create_train_state, make_train_step

        kind = head(name)  # the pose task takes its joints' flip pairs from a dataset: the embedded one
        config = TrainConfig(task=kind, model=name, num_classes=DEFAULT_CLASSES[kind], dtype=dtype,
                             dataset="figures" if kind == "pose" else "synthetic", image_size=size[0], crop_size=size,
                             global_batch_size=batch, train_examples=batch, epochs=1, scan=scan)  # fmt: skip
        mesh, tx = make_mesh(jax.devices()[:1]), create_optimizer(config)
        step = make_train_step(config, build_model(config, scan=scan), tx, mesh)
        arrays = {"image": np.asarray(images), "mask": np.ones(batch, bool), **targets(kind, batch, size, config.num_classes)}
        data = global_batch(arrays, mesh)
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
LAYOUT_ROWS = {"nchw": "", "cl": "-cl", "compile": "-compile"}  # PyTorch row key: `timm` or `torch` + suffix


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


# ----------------------------------------------------------------------------- PyTorch references
def torch_model(name: str):
    """The variant's PyTorch network: timm's classifier, or the official dense network."""
    config, kind = get_config(name), head(name)
    if kind == "classification":
        import timm

        return timm.create_model(canonical_name(name), pretrained=False)
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    if tests not in sys.path:  # the dense references live with their parity tests, not in the package
        sys.path.insert(0, tests)
    from dense_reference import OfficialPoseHRNet, OfficialSegHRNet

    if kind == "segmentation":
        return OfficialSegHRNet(config, DEFAULT_CLASSES[kind], align_corners=config.align_corners)
    return OfficialPoseHRNet(config, DEFAULT_CLASSES[kind])


def torch_loss(name: str, outputs, target: dict):
    """The task's training loss as our step computes it: cross-entropy; per-pixel cross-entropy of
    the logits resized (bilinear) to the labels, ignored pixels left out; 0.5 x the weighted heatmap MSE."""
    import torch.nn.functional as F

    kind = head(name)
    if kind == "classification":
        return F.cross_entropy(outputs, target["label"])
    if kind == "segmentation":
        label = target["label"]
        logits = F.interpolate(outputs, size=label.shape[-2:], mode="bilinear", align_corners=get_config(name).align_corners)
        return F.cross_entropy(logits, label, ignore_index=IGNORE_LABEL)
    weight = target["target_weight"][:, :, None, None]
    return 0.5 * F.mse_loss(outputs * weight, target["target"] * weight)


def reference(name: str, batch: int, size: tuple[int, int], dtype: str, task: str, layout: str) -> tuple[Callable, float, dict]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # timm's own training scripts autotune convolutions too
    model = torch_model(name).to(device)
    fmt = torch.channels_last if layout in ("cl", "compile") else torch.contiguous_format
    model = model.to(memory_format=fmt)
    images = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=fmt)
    kind = head(name)
    target = {k: torch.from_numpy(v).to(device) for k, v in targets(kind, batch, size, DEFAULT_CLASSES[kind]).items()}
    if "label" in target:
        target["label"] = target["label"].long()
    if "target" in target:  # NHWC heatmaps -> the network's NCHW
        target["target"] = target["target"].permute(0, 3, 1, 2).contiguous(memory_format=fmt)
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
                loss = torch_loss(name, fn(images), target)
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
    import shutil
    import tempfile

    if not args.no_timm:
        import timm  # before TensorFlow: timm imported after a TFLite conversion segfaults (triton's LLVM)

        missing = [n for n in args.variants if head(n) == "classification" and canonical_name(n) not in timm.list_models()]
        if missing:
            raise SystemExit(f"timm has no model {', '.join(missing)} (timm {timm.__version__}): pass --no-timm for ours only")
    exports = available_exports(args.exports) if jax.default_backend() == "cpu" and args.dtype == "float32" else []
    workdir = tempfile.mkdtemp(prefix="hrnet_flax_bench_")  # exported models, 80-600 MB each
    try:
        rows = measure_all(args, exports, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "pipeline" in args.tasks:
        for size in args.sizes or [224]:
            rates = pipeline_rates(hw(size)[0], args.batch, args.pipeline_images, args.pipeline_seconds)
            row = {"task": "pipeline", "size": size, "batch": args.batch, **rates}
            rows.append(row)
            print(format_pipeline(row), flush=True)
    return rows


def measure_all(args, exports: list[str], workdir: str) -> list[dict]:
    """One row per variant, size and task: ours, its exports and the reference, timed in turns."""
    rows = []
    cases = [(t, 1 if t == "latency" else args.batch) for t in dict.fromkeys(args.tasks) if t != "pipeline"]  # in the given order
    for name in args.variants:
        ref = reference_prefix(name)
        for size in args.sizes or [DEFAULT_SIZES[head(name)]]:
            for task, batch in cases:
                entries, setup = {}, {}
                kind = "train" if task == "train" else "infer"
                scan = resolve_scan(args.scan, kind)
                for key, fold in (("ours", True), ("ours-bn", False)):
                    if key == "ours-bn" and (task == "train" or args.no_unfolded):
                        continue
                    run, compile_s, memory = ours(name, batch, hw(size), args.dtype, kind, fold, scan)
                    entries[key], setup[key] = run, {"compile_s": compile_s, "scan": scan, **memory}
                for fmt in exports if kind == "infer" and ref == "timm" and isinstance(size, int) else []:  # classifiers only
                    run, export_s, info = exported(name, batch, size, fmt, workdir)
                    entries[EXPORT_ROWS[fmt]], setup[EXPORT_ROWS[fmt]] = run, {"export_s": export_s, **info}
                for layout in [] if args.no_timm else args.layouts:
                    run, warm, memory = reference(name, batch, hw(size), args.dtype, kind, layout)
                    entries[ref + LAYOUT_ROWS[layout]], setup[ref + LAYOUT_ROWS[layout]] = run, {"warmup_s": warm, **memory}
                seconds = measure(entries, args.repeats, args.warmup, args.inner)
                row = {"variant": name, "size": size, "task": task, "batch": batch, "dtype": args.dtype}
                for key, s in seconds.items():
                    row[key] = {"ms_per_step": 1e3 * s, "images_per_s": batch / s, **setup[key]}
                eager = [k for k in (ref, ref + "-cl") if k in seconds]
                if eager:
                    best = min(seconds[k] for k in eager)
                    row[f"ratio_vs_best_{ref}_eager"] = best / seconds["ours"]
                    deployable = [k for k in ("ours", *EXPORT_ROWS.values()) if k in seconds]
                    fastest = min(deployable, key=seconds.get)
                    row["best_deployable"] = fastest
                    row[f"best_deployable_vs_best_{ref}_eager"] = best / seconds[fastest]
                rows.append(row)
                print(format_row(row), flush=True)
                if args.out:  # after every row, so a run stopped midway keeps what it measured
                    write_json(args.out, args, rows)
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
    ref = reference_prefix(row["variant"])
    cells = [f"{row['variant']} {row['size']}px {row['task']} b{row['batch']} {row['dtype']}:"]
    for key in ("ours", "ours-bn", *EXPORT_ROWS.values(), *(ref + suffix for suffix in LAYOUT_ROWS.values())):
        if key in row:
            r = row[key]
            value = f"{r['ms_per_step']:.1f} ms" if row["batch"] == 1 else f"{r['images_per_s']:.2f} img/s"
            cells.append(f"{key} {value}")
    if f"ratio_vs_best_{ref}_eager" in row:
        cells.append(f"ratio {row[f'ratio_vs_best_{ref}_eager']:.2f}x")
    if row.get("best_deployable", "ours") != "ours":
        cells.append(f"best deployable {row['best_deployable']} {row[f'best_deployable_vs_best_{ref}_eager']:.2f}x")
    return "  ".join(cells)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | size | task | batch | ours | ours (plain model) | ONNX Runtime | TFLite | PyTorch | PyTorch channels-last "
        "| ours / best PyTorch | best deployable / best PyTorch | compile (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [r for r in rows if r["task"] != "pipeline"]:
        unit = (lambda e: f"{e['ms_per_step']:.1f} ms") if r["batch"] == 1 else (lambda e: f"{e['images_per_s']:.2f} img/s")
        cell = lambda k: unit(r[k]) if k in r else "-"  # noqa: E731
        ref = reference_prefix(r["variant"])
        ratio = f"{r[f'ratio_vs_best_{ref}_eager']:.2f}x" if f"ratio_vs_best_{ref}_eager" in r else "-"
        deploy = "-"
        if "best_deployable" in r:
            deploy = f"{r[f'best_deployable_vs_best_{ref}_eager']:.2f}x ({r['best_deployable']})"
        lines.append(
            f"| {r['variant']} | {r['size']} | {r['task']} | {r['batch']} | {cell('ours')} | {cell('ours-bn')} "
            f"| {cell('onnxrt')} | {cell('tflite')} | {cell(ref)} | {cell(ref + '-cl')} | {ratio} | {deploy} "
            f"| {r['ours']['compile_s']:.0f} |"
        )
    lines += ["", "PyTorch: timm's classifiers; the segmentation and pose networks of tests/dense_reference.py."]
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
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None,
                   help="input sides (224) or HxW (512x1024); default per task: 224, 512x1024 (segmentation), 256x192 (pose)")
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
    p.add_argument("--layouts", nargs="+", choices=list(LAYOUT_ROWS), default=["nchw", "cl"],
                   help="PyTorch rows: eager NCHW, eager channels-last, torch.compile channels-last")
    p.add_argument("--torch-compile", action="store_true",
                   help="also time torch.compile (= --layouts ... compile; minutes to compile on CPU)")
    p.add_argument("--no-timm", action="store_true", help="ours only (no PyTorch rows)")
    p.add_argument("--out", help="write the rows and the machine description as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.exports = [f for f in args.exports if f != "none"]
    if args.torch_compile and "compile" not in args.layouts:
        args.layouts.append("compile")
    if args.batch is None:
        args.batch = 256 if jax.default_backend() == "gpu" else 16
    if args.inner is None:
        args.inner = 10 if jax.default_backend() == "gpu" else 1
    for name in args.variants:  # an unknown name or a size the variant cannot take fails here, before any work
        for size in args.sizes or [DEFAULT_SIZES[head(name)]]:
            check_image_size((1, *hw(size), 3), size_multiple(get_config(name)))
    if "pipeline" in args.tasks and any(isinstance(s, str) for s in args.sizes or []):
        raise SystemExit("--tasks pipeline: give square --sizes (224), not HxW")
    enable_compilation_cache()
    rows = bench(args)
    print()
    print(markdown(rows))
    if args.out:
        write_json(args.out, args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
