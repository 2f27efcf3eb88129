"""Command line: `python -m hrnet_flax COMMAND` (or `hrnet-flax COMMAND`).

Each command is one `add_<command>` function below that declares its arguments and
points at the function that runs it (imported lazily, so `--help` is instant).
"""

from __future__ import annotations

import argparse
import sys


def add_info(sub) -> None:
    p = sub.add_parser("info", help="parameters, MACs and FLOPs of the variants at 224x224")
    p.add_argument("names", nargs="*", help="variant names (default: all)")
    p.add_argument("--size", type=_side_or_size, default=224, help="input side or HxW (multiples of 32), e.g. 1024x2048")
    p.set_defaults(run=run_info)


def run_info(args) -> int:
    from hrnet_flax.models import info

    print(info.table(args.names or None, args.size))
    return 0


def add_forward(sub) -> None:
    p = sub.add_parser("forward", help="build a variant and run one forward pass on random images")
    p.add_argument("name", nargs="?", default="hrnet_w18_small")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.set_defaults(run=run_forward)


def run_forward(args) -> int:
    import time

    import jax
    import jax.numpy as jnp

    from hrnet_flax.models.initialization import init_variables
    from hrnet_flax.models.registry import create_model

    model = create_model(args.name, dtype=jnp.dtype(args.dtype), scan=True)  # inference: compiles faster
    images = jax.random.normal(jax.random.key(0), (args.batch_size, args.size, args.size, 3))
    start = time.perf_counter()
    variables = init_variables(model, jax.random.key(1))
    logits = jax.jit(model.apply)(variables, images)
    logits.block_until_ready()
    print(
        f"{args.name}: logits {tuple(logits.shape)} {logits.dtype}, finite={bool(jnp.isfinite(logits).all())}, "
        f"{time.perf_counter() - start:.1f} s including compilation"
    )
    return 0


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint (PaddleClas, timm/official, mmpretrain, ours)")
    p.add_argument("src", help="checkpoint file, http(s) URL or registered pretrained name")
    p.add_argument("dst", help="output .safetensors file (written atomically)")
    p.add_argument("--arch", help="expected variant (default: detected from the checkpoint)")
    p.add_argument("--num-classes", type=int, help="re-initialise the classifier for this many classes")
    p.add_argument("--to", choices=["flax", "timm"], default="flax", help="our format, or a timm state dict")
    p.set_defaults(run=run_convert)


def run_convert(args) -> int:
    from hrnet_flax.weights.pretrained import convert

    arch = convert(args.src, args.dst, arch=args.arch, num_classes=args.num_classes, to=args.to)
    print(f"{args.src} -> {args.dst} ({arch}, {args.to} layout)")
    return 0


def _add_model_args(p) -> None:
    p.add_argument("--model", required=True, help="weights: registered name, file or URL (see load_pretrained)")
    p.add_argument("--arch", help="variant name, when it cannot be read from the weights")
    p.add_argument("--num-classes", type=int, help="classifier size (default: the checkpoint's)")
    p.add_argument("--preset", help="evaluation preprocessing: paddle, timm, timm_095, ... (default: the weight's own)")
    p.add_argument("--size", type=int, help="input side (a multiple of 32; keeps the preset's crop fraction)")


def _add_test_time_args(p) -> None:
    """Segmentation inference options (test-time augmentation)."""
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="segmentation: multi-scale testing")
    p.add_argument("--flip", action="store_true", help="segmentation: add the horizontally flipped prediction")
    p.add_argument("--window", type=_size, help="segmentation: sliding-window inference with HxW windows")
    p.add_argument("--align-corners", type=_bool, help="override the weights' align_corners (true/false)")


def _side_or_size(text: str) -> int | tuple[int, int]:
    return _size(text) if "x" in text.lower() else int(text)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 512x1024; got {text!r}") from None
    return h, w


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")
    return text.lower() in ("true", "1")


def _load_model(args, **kwargs):
    """`(model, variables)` of `--model`, with the options the command line gives."""
    from hrnet_flax.weights.pretrained import load_pretrained

    if getattr(args, "align_corners", None) is not None:
        kwargs["align_corners"] = args.align_corners
    return load_pretrained(args.model, arch=args.arch, num_classes=args.num_classes, **kwargs)


def _segmentation_task(args, model):
    from hrnet_flax.tasks.segmentation import Segmentation

    return Segmentation(
        num_classes=model.num_classes,
        align_corners=model.config.align_corners,
        scales=tuple(args.scales),
        flip=args.flip,
        window=args.window,
    )


def add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="exact top-1/top-5 (ImageNet or an image folder), or mIoU (segmentation models: an image/mask "
        "folder or Cityscapes); prints one JSON line",
    )
    _add_model_args(p)
    p.add_argument(
        "--data-dir",
        required=True,
        help="classification: tfds data_dir holding imagenet2012, or an image folder root; segmentation: a "
        "folder with <split>/images and <split>/masks, or cityscapes[:<tfds data_dir>]",
    )
    p.add_argument("--manual-dir", help="folder with the downloaded archives (ImageNet tars, Cityscapes zips) to prepare from")
    p.add_argument("--split", default="validation", help="classification split (segmentation: val)")
    p.add_argument(
        "--batch-size", type=int, help="per process (default: 64; segmentation: one image per local device)"
    )
    _add_test_time_args(p)
    p.set_defaults(run=run_eval)


def run_eval(args) -> int:
    """Prints a progress bar, then one JSON line of metrics."""
    import json

    from hrnet_flax.data import DataSource, eval_dataset
    from hrnet_flax.evaluate import evaluate
    from hrnet_flax.weights.pretrained import default_spec

    model, variables = _load_model(args, scan=True)
    segmentation = model.config.head == "segmentation"
    unused = (
        {"--preset": args.preset, "--size": args.size}
        if segmentation
        else {"--scales": args.scales != [1.0], "--flip": args.flip, "--window": args.window}
    )
    given = [flag for flag, value in unused.items() if value]
    if given:
        kind = "segmentation" if segmentation else "classification"
        raise ValueError(f"{', '.join(given)} do(es) not apply to {args.model}, a {kind} model")
    if segmentation:
        return _eval_segmentation(args, model, variables)
    source = DataSource(args.data_dir, "imagenet" if args.manual_dir else "auto", args.manual_dir)
    spec = args.preset or default_spec(args.model)
    batches = eval_dataset(source, batch_size_per_process=args.batch_size or 64, spec=spec, image_size=args.size, split=args.split)
    print(
        f"evaluating {args.model} on {batches.total_examples} images of {args.data_dir} ({args.split}), "
        f"preprocessing {batches.spec}",
        file=sys.stderr,
    )
    result = evaluate(model, variables, batches, progress=True)
    if batches.unreadable:
        print(f"{len(batches.unreadable)} unreadable image(s) skipped: {', '.join(batches.unreadable)}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def _eval_segmentation(args, model, variables) -> int:
    import json

    import jax

    from hrnet_flax.data import segmentation as seg_data
    from hrnet_flax.evaluate import evaluate

    # The dataset must have the model's classes (a folder without classes.txt takes them).
    source = seg_data.segmentation_source(args.data_dir, manual_dir=args.manual_dir, num_classes=model.num_classes)
    split = "val" if args.split == "validation" else args.split
    # Whole images (Cityscapes: 1024x2048) take far more memory than classification crops.
    batch_size = args.batch_size or jax.local_device_count()
    batches = seg_data.eval_dataset(source, batch_size_per_process=batch_size, split=split)
    task = _segmentation_task(args, model)
    print(f"evaluating {args.model} on {len(batches)} batches of {args.data_dir} ({split}), {task}", file=sys.stderr)
    result = evaluate(model, variables, batches, task=task, progress=True)
    if getattr(batches, "unreadable", None):
        print(f"{len(batches.unreadable)} unreadable image(s) skipped: {', '.join(batches.unreadable)}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def add_segment(sub) -> None:
    p = sub.add_parser("segment", help="label map and coloured overlay of image files (segmentation models)")
    p.add_argument("--model", required=True, help="weights: registered name, file or URL (see load_pretrained)")
    p.add_argument("--arch", help="variant name, when it cannot be read from the weights")
    p.add_argument("--num-classes", type=int, help=argparse.SUPPRESS)
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument(
        "--out",
        help="label map PNG (palette: pixel value = class); with several images a folder "
        "(default: <image stem>_labels.png beside the image)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    _add_test_time_args(p)
    p.set_defaults(run=run_segment)


def run_segment(args) -> int:
    """Writes `<out>` (the label map) and `<out stem>_overlay.png` per image; prints class areas."""
    from hrnet_flax.predict import segment_files

    model, variables = _load_model(args)
    if model.config.head != "segmentation":
        raise ValueError(f"{args.model} is a {model.config.head} model; `segment` needs a segmentation model")
    task = _segmentation_task(args, model)
    for path, (labels_path, overlay_path, areas) in zip(args.images, segment_files(model, variables, args.images, task, args.out, alpha=args.alpha)):
        top = ", ".join(f"class {c}: {share:.1%}" for c, share in areas[:5])
        print(f"{path}: labels {labels_path}, overlay {overlay_path}; {top}")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="top-5 ImageNet classes with probabilities for image files")
    _add_model_args(p)
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(run=run_predict)


def run_predict(args) -> int:
    """Top-k class names with probabilities for each image."""
    from hrnet_flax.predict import predict
    from hrnet_flax.weights.pretrained import default_spec

    model, variables = _load_model(args, scan=True)
    if model.config.head != "classification":
        raise ValueError(f"{args.model} is a {model.config.head} model; use `hrnet-flax segment` for it")
    spec = args.preset or default_spec(args.model)
    results = predict(model, variables, args.images, spec=spec, size=args.size, k=args.top_k)
    for path, best in zip(args.images, results):
        print(path)
        for name, prob in best:
            print(f"  {prob:7.2%}  {name}")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train on the bundled handwritten digits (no download): hrnet_w18_small classifies digits, or "
        "(--task segmentation) hrnetv2_w18_small_seg segments digits pasted on canvases",
    )
    p.add_argument("--task", choices=["classification", "segmentation"], default="classification")
    p.add_argument("--workdir", help="checkpoints and metrics (default: a new temporary folder)")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. epochs=2 global_batch_size=32"
    )
    p.set_defaults(run=run_demo)


def run_demo(args) -> int:
    import tempfile
    import time

    from hrnet_flax.train import apply_overrides, demo_config, summary_line, train_and_evaluate

    config = apply_overrides(demo_config(args.task), args.set)
    workdir = args.workdir or tempfile.mkdtemp(prefix="hrnet_flax_demo_")
    start = time.perf_counter()
    result = train_and_evaluate(config, workdir)
    print(summary_line(config, result, workdir, time.perf_counter() - start))
    return 0


COMMANDS = [add_info, add_forward, add_convert, add_demo, add_eval, add_predict, add_segment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hrnet-flax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    from hrnet_flax.runtime import enable_compilation_cache, use_fast_cpu_flags

    use_fast_cpu_flags()
    enable_compilation_cache()
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        print(f"hrnet-flax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
