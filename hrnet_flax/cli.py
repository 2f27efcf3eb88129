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
    p.add_argument("--size", type=int, default=224, help="square input side (a multiple of 32)")
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


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="exact top-1/top-5 on ImageNet (tfds) or an image folder; prints one JSON line")
    _add_model_args(p)
    p.add_argument("--data-dir", required=True, help="tfds data_dir holding imagenet2012, or an image folder root")
    p.add_argument("--manual-dir", help="folder with ILSVRC2012_img_train.tar / ILSVRC2012_img_val.tar to prepare from")
    p.add_argument("--split", default="validation")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.set_defaults(run=run_eval)


def run_eval(args) -> int:
    """Prints a progress bar, then one JSON line of metrics."""
    import json

    from hrnet_flax.data import DataSource, eval_dataset
    from hrnet_flax.evaluate import evaluate
    from hrnet_flax.weights.pretrained import default_spec, load_pretrained

    source = DataSource(args.data_dir, "imagenet" if args.manual_dir else "auto", args.manual_dir)
    spec = args.preset or default_spec(args.model)
    batches = eval_dataset(source, batch_size_per_process=args.batch_size, spec=spec, image_size=args.size, split=args.split)
    model, variables = load_pretrained(args.model, arch=args.arch, num_classes=args.num_classes, scan=True)
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


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="top-5 ImageNet classes with probabilities for image files")
    _add_model_args(p)
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(run=run_predict)


def run_predict(args) -> int:
    """Top-k class names with probabilities for each image."""
    from hrnet_flax.predict import predict
    from hrnet_flax.weights.pretrained import default_spec, load_pretrained

    model, variables = load_pretrained(args.model, arch=args.arch, num_classes=args.num_classes, scan=True)
    spec = args.preset or default_spec(args.model)
    results = predict(model, variables, args.images, spec=spec, size=args.size, k=args.top_k)
    for path, best in zip(args.images, results):
        print(path)
        for name, prob in best:
            print(f"  {prob:7.2%}  {name}")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train hrnet_w18_small on the bundled handwritten digits (no download)")
    p.add_argument("--workdir", help="checkpoints and metrics (default: a new temporary folder)")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. epochs=2 global_batch_size=32"
    )
    p.set_defaults(run=run_demo)


def run_demo(args) -> int:
    import tempfile
    import time

    from hrnet_flax.train import apply_overrides, demo_config, summary_line, train_and_evaluate

    config = apply_overrides(demo_config(), args.set)
    workdir = args.workdir or tempfile.mkdtemp(prefix="hrnet_flax_demo_")
    start = time.perf_counter()
    result = train_and_evaluate(config, workdir)
    print(summary_line(config, result, workdir, time.perf_counter() - start))
    return 0


COMMANDS = [add_info, add_forward, add_convert, add_demo, add_eval, add_predict]


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
