"""Command line: `python -m hrnet_flax COMMAND` (or `hrnet-flax COMMAND`).

Each command is one `add_<command>` function below that declares its arguments and
points at the function that runs it (imported lazily, so `--help` is instant).
"""

from __future__ import annotations

import argparse
import os
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


def _add_model_args(p, pose: bool = False) -> None:
    p.add_argument("--model", required=True, help="weights: registered name, file or URL (see load_pretrained)")
    p.add_argument("--arch", help="variant name, when it cannot be read from the weights")
    p.add_argument("--num-classes", type=int, help="classifier size (default: the checkpoint's)")
    p.add_argument("--preset", help="evaluation preprocessing: paddle, timm, timm_095, ... (default: the weight's own)")
    if pose:
        p.add_argument(
            "--size",
            type=_side_or_size,
            help="classification: input side (a multiple of 32; keeps the preset's crop fraction); pose: the "
            "person crop HxW (multiples of 32; default: the registered weight's, else 256x192, figures 64x64)",
        )
    else:
        p.add_argument("--size", type=int, help="input side (a multiple of 32; keeps the preset's crop fraction)")


def _add_test_time_args(p) -> None:
    """Test-time options of segmentation (scales, flip, windows); `--flip` is also the pose flip test."""
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="segmentation: multi-scale testing")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="segmentation: add the horizontally flipped prediction (default: off); pose: the flip test "
        "(default: on, --no-flip to turn it off)",
    )
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
        flip=bool(args.flip),
        window=args.window,
    )


def add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="exact top-1/top-5 (ImageNet or an image folder), mIoU (segmentation models: an image/mask "
        "folder or Cityscapes), or COCO keypoint AP / PCK (pose models: COCO or the demo figures); prints "
        "one JSON line",
    )
    _add_model_args(p, pose=True)
    p.add_argument(
        "--data-dir",
        required=True,
        help="classification: tfds data_dir holding imagenet2012, or an image folder root; segmentation: a "
        "folder with <split>/images and <split>/masks, or cityscapes[:<tfds data_dir>]; pose: coco:<root> "
        "(annotations/person_keypoints_val2017.json and val2017/) or figures (the demo's stick figures)",
    )
    p.add_argument(
        "--detections",
        help="pose, COCO: person boxes from a detection results JSON (e.g. the official "
        "COCO_val2017_detections_AP_H_56_person.json; default: the ground-truth boxes)",
    )
    p.add_argument("--manual-dir", help="folder with the downloaded archives (ImageNet tars, Cityscapes zips) to prepare from")
    p.add_argument("--split", default="validation", help="classification split (segmentation: val)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="per process (default: 64; segmentation: one image per local device; pose: 32 crops)",
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
    head = model.config.head
    unused = {
        "classification": {
            "--scales": args.scales != [1.0], "--flip": args.flip is not None, "--window": args.window,
            "--detections": args.detections,
        },
        "segmentation": {"--preset": args.preset, "--size": args.size, "--detections": args.detections},
        "pose": {
            "--preset": args.preset, "--scales": args.scales != [1.0], "--window": args.window,
            "--align-corners": args.align_corners is not None, "--manual-dir": args.manual_dir,
        },
    }[head]  # fmt: skip
    given = [flag for flag, value in unused.items() if value]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply to {args.model}, a {head} model")
    if head == "segmentation":
        return _eval_segmentation(args, model, variables)
    if head == "pose":
        return _eval_pose(args, model, variables)
    if isinstance(args.size, tuple):
        raise ValueError(f"--size {args.size[0]}x{args.size[1]}: a classifier's input is square; give one side")
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


def _pose_options(args, default_size: tuple[int, int] | None = None) -> dict:
    """`estimate_poses` settings of the command line: the registered weight's `PoseSpec` when
    `--model` names one, else the defaults (256x192 crops, or `default_size`; msra); `--size`,
    `--codec` and `--flip/--no-flip` override them. The flip test's heatmap shift follows the codec
    (msra shifts, udp does not) unless the weight's own codec is kept."""
    from hrnet_flax.predict import DEFAULT_POSE_SIZE, pose_options
    from hrnet_flax.weights.pretrained import default_spec

    spec = getattr(default_spec(args.model), "pose", None)
    if spec is not None:
        options = pose_options(spec)
    else:
        options = {"input_size": default_size or DEFAULT_POSE_SIZE, "codec": "msra", "shift_heatmap": True}
    size = getattr(args, "size", None)
    if size is not None:
        options["input_size"] = (size, size) if isinstance(size, int) else tuple(size)
    codec = getattr(args, "codec", None)
    if codec is not None and codec != options["codec"]:
        options.update(codec=codec, shift_heatmap=codec == "msra")
    if args.flip is not None:
        options["flip_test"] = args.flip
    return options


def _refuse_other_heads(args, model, command: str, head: str) -> None:
    """A clear error when `command` is given a model with another head, naming its command."""
    found = model.config.head
    if found != head:
        other = {"classification": "predict", "segmentation": "segment", "pose": "pose"}[found]
        raise ValueError(
            f"{args.model} is a {found} model; `{command}` needs a {head} model (use `hrnet-flax {other}` for it)"
        )


def _pose_source(data_dir: str, detections: str | None, size: tuple[int, int]):
    """The pose source of `--data-dir`: coco:<root> or figures (drawn at the crop size, as the demo)."""
    from hrnet_flax.tasks.pose import source_of

    if data_dir == "figures":
        if detections is not None:
            raise ValueError("--detections applies to COCO (--data-dir coco:<root>), not to the figures")
        return source_of(data_dir, tuple(size))
    if data_dir.startswith("coco:") and len(data_dir) > len("coco:"):
        root = data_dir[len("coco:") :]
        if not os.path.isdir(root):
            raise ValueError(f"COCO keypoints root {root!r}: no such folder")
        return source_of(data_dir, tuple(size), detections)
    raise ValueError(
        f"--data-dir {data_dir!r} is no pose dataset: use coco:<root> (a folder with "
        "annotations/person_keypoints_val2017.json and val2017/) or figures (the demo's stick figures)"
    )


def _eval_pose(args, model, variables) -> int:
    import json

    import numpy as np

    from hrnet_flax.data import pose as pose_data
    from hrnet_flax.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from hrnet_flax.evaluate import evaluate
    from hrnet_flax.tasks.pose import Pose

    options = _pose_options(args, default_size=(64, 64) if args.data_dir == "figures" else None)
    size = pose_data.check_image_size(options["input_size"])
    mean, std = options.get("mean", IMAGENET_MEAN), options.get("std", IMAGENET_STD)
    if not (np.allclose(mean, IMAGENET_MEAN) and np.allclose(std, IMAGENET_STD)):
        raise ValueError(
            f"{args.model} normalises images with mean {mean} and std {std}; pose evaluation crops use ImageNet's"
        )
    source = _pose_source(args.data_dir, args.detections, size)
    if source.num_joints != model.num_classes:
        raise ValueError(
            f"{args.model} predicts {model.num_classes} joints but {args.data_dir} has {source.num_joints}"
        )
    split = "val" if args.split == "validation" else args.split
    batches = pose_data.eval_dataset(
        source, split, batch_size_per_process=args.batch_size or 32, image_size=size, codec=options["codec"]
    )
    task = Pose(
        num_joints=model.num_classes, codec=options["codec"], flip_pairs=tuple(source.flip_pairs),
        flip_test=options.get("flip_test", True), shift_heatmap=options["shift_heatmap"],
    )  # fmt: skip
    print(
        f"evaluating {args.model} on {batches.total_examples} person crops ({size[0]}x{size[1]}) of {args.data_dir} "
        f"({split}), {task}",
        file=sys.stderr,
    )
    result = evaluate(model, variables, batches, task=task, progress=True)
    if batches.unreadable:
        print(f"{len(batches.unreadable)} unreadable image(s) skipped: {', '.join(batches.unreadable)}", file=sys.stderr)
    print(json.dumps(result, default=float))
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
    _refuse_other_heads(args, model, "segment", "segmentation")
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
        other = "segment" if model.config.head == "segmentation" else "pose"
        raise ValueError(f"{args.model} is a {model.config.head} model; use `hrnet-flax {other}` for it")
    spec = args.preset or default_spec(args.model)
    results = predict(model, variables, args.images, spec=spec, size=args.size, k=args.top_k)
    for path, best in zip(args.images, results):
        print(path)
        for name, prob in best:
            print(f"  {prob:7.2%}  {name}")
    return 0


def add_pose(sub) -> None:
    p = sub.add_parser(
        "pose",
        help="keypoints of the people in boxes of image files, printed and drawn as skeletons (pose models)",
    )
    p.add_argument("--model", required=True, help="weights: registered name, file or URL (see load_pretrained)")
    p.add_argument("--arch", help="variant name, when it cannot be read from the weights")
    p.add_argument("--num-classes", type=int, help=argparse.SUPPRESS)
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument(
        "--box",
        type=_box,
        action="append",
        metavar="X,Y,W,H",
        help="a person box in pixels, once per person, the same for every image (default: the whole "
        "image); write --box=-5,10,80,200 when x starts with a minus",
    )
    p.add_argument(
        "--size", type=_size, help="person crop HxW, multiples of 32 (default: the registered weight's, else 256x192)"
    )
    p.add_argument("--codec", choices=["msra", "udp"], help="heatmap codec (default: the registered weight's, else msra)")
    p.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, help="the flip test (default: on, as the weight's authors test)"
    )
    p.add_argument(
        "--out",
        help="drawn image; with several images a folder (default: <image stem>_pose.png beside the image)",
    )
    p.add_argument("--threshold", type=float, default=0.2, help="joints scoring below this are not drawn")
    p.set_defaults(run=run_pose)


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a box x,y,w,h (four numbers), e.g. 10,20,120,300; got {text!r}") from None
    return x, y, w, h


def run_pose(args) -> int:
    """Per image: the drawn file, then per person its box and each joint's name, x, y and score."""
    from hrnet_flax.predict import joint_names, pose_files

    options = _pose_options(args)
    model, variables = _load_model(args, scan=True)  # traced once per run of identical layers: a fast compile
    _refuse_other_heads(args, model, "pose", "pose")
    names = joint_names(model.num_classes)
    width = max(len(n) for n in names)
    results = pose_files(model, variables, args.images, boxes=args.box, out=args.out, score_threshold=args.threshold, **options)
    for path, (drawn, poses) in zip(args.images, results):
        print(f"{path}: {len(poses)} person(s), drawn {drawn}")
        for i, person in enumerate(poses):
            box = "whole image" if args.box is None else ",".join(f"{v:g}" for v in args.box[i])
            print(f"  person {i} (box {box}):")
            for name, (x, y, score) in zip(names, person):
                print(f"    {name:<{width}}  x {x:8.2f}  y {y:8.2f}  score {score:.3f}")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train on bundled or drawn data (no download): hrnet_w18_small classifies handwritten digits, "
        "(--task segmentation) hrnetv2_w18_small_seg segments digits pasted on canvases, or (--task pose) "
        "pose_hrnet_w18_small finds the 17 COCO joints of drawn stick figures (PCK)",
    )
    p.add_argument("--task", choices=["classification", "segmentation", "pose"], default="classification")
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


def add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a model for another runtime (StableHLO, SavedModel, TFLite, ONNX), BatchNorm folded, and "
        "check it against the JAX model",
    )
    p.add_argument("model", help="weights: registered name, checkpoint file or URL (see load_pretrained)")
    p.add_argument("out", help="output: a file (stablehlo, tflite, onnx; metadata in OUT.json or inside) or a folder (savedmodel)")
    p.add_argument("--format", required=True, choices=["stablehlo", "savedmodel", "tflite", "onnx"])
    p.add_argument("--batch", type=_batch, default=None, help="a fixed batch size, or dynamic (default)")
    p.add_argument("--size", type=_side_or_size, help="input side or HxW, multiples of 32 (default: the weights' own)")
    p.add_argument(
        "--dtype",
        default="float32",
        help="float32 (all formats), float16 (tflite: float16 weights), bfloat16 (stablehlo: bfloat16 compute)",
    )
    p.add_argument("--layout", type=str.upper, default="NHWC", help="onnx only: NCHW input and 4-D outputs")
    p.add_argument("--arch", help="variant name, when it cannot be read from the weights")
    p.add_argument("--num-classes", type=int, help="classifier size (default: the checkpoint's)")
    p.add_argument("--task", choices=["classification", "segmentation", "pose"], help="a dense model from a classifier's weights")
    p.add_argument("--preset", help="classification preprocessing to record: paddle, timm, ... (default: the weights' own)")
    p.add_argument("--verify-image", nargs="+", default=[], help="image files to verify on (default: a synthetic scene)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (only after the new one passed)")
    p.set_defaults(run=run_export)


def _batch(text: str) -> int | None:
    if text.lower() == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive batch size or 'dynamic'; got {text!r}")
    return value


def run_export(args) -> int:
    from hrnet_flax.data.images import load_rgb
    from hrnet_flax.export import export

    images = [load_rgb(p) for p in args.verify_image]
    result = export(
        args.model,
        args.out,
        format=args.format,
        arch=args.arch,
        num_classes=args.num_classes,
        task=args.task,
        batch=args.batch,
        size=args.size,
        dtype=args.dtype,
        layout=args.layout,
        images=images,
        preset=args.preset,
        overwrite=args.overwrite,
    )
    meta = result.metadata
    print(
        f"{args.model} -> {result.path} ({result.format}, {meta['dtype']}): {meta['input']['name']} "
        f"{meta['input']['shape']} {meta['input']['layout']} -> {meta['output']['name']} {meta['output']['shape']}; "
        f"{meta['verified']['runtime']} matches the JAX model within {result.relative_error:.1e} (relative)"
    )
    return 0


COMMANDS = [add_info, add_forward, add_convert, add_demo, add_eval, add_predict, add_segment, add_pose, add_export]


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
    except (ValueError, FileNotFoundError, KeyError, OSError, ImportError) as e:
        print(f"hrnet-flax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
