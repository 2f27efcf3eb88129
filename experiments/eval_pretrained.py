"""Evaluate every registered pretrained weight on ImageNet-1k val and write a Markdown table
beside the published accuracy (needs the prepared tfds imagenet2012 or the manual tars, and
network access for the weights, or a warm download cache).

    python experiments/eval_pretrained.py --data-dir ~/tensorflow_datasets \
        [--manual-dir ~/imagenet] [--names 'hrnet_w18*'] [--batch-size 128] [--out results.md]

Each weight is evaluated with the preprocessing it was published with (the registry's `eval`;
also `test_eval` where one is reported, e.g. timm SSLD at 288). The table is rewritten after
every weight, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _spec_text(spec) -> str:
    resize = f"short {spec.short_side}"
    return f"{spec.style} {resize} crop {spec.size} {spec.interpolation}"


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def write_table(rows: list[dict], path: str) -> None:
    lines = [
        "| weight | preprocessing | top-1 | top-5 | published top-1 | published top-5 | Δ top-1 | images | unreadable | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = None if r["published_top1"] is None else r["top1"] - r["published_top1"]
        lines.append(
            f"| {r['name']} | {r['preprocessing']} | {r['top1']:.2f} | {r['top5']:.2f} | {_fmt(r['published_top1'])} | "
            f"{_fmt(r['published_top5'])} | {'' if delta is None else f'{delta:+.2f}'} | {r['count']} | "
            f"{r['unreadable']} | {r['seconds']:.0f} |"
        )
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--manual-dir")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--names", default="*", help="fnmatch pattern over registered weight names")
    parser.add_argument("--batch-size", type=int, default=128, help="per process")
    parser.add_argument("--out", default="pretrained_accuracy.md")
    parser.add_argument("--size", type=int, help="override the crop size (keeps each crop fraction); default: as published")
    args = parser.parse_args(argv)

    from hrnet_flax.data import DataSource, eval_dataset
    from hrnet_flax.data.preprocess import eval_spec
    from hrnet_flax.evaluate import evaluate
    from hrnet_flax.runtime import enable_compilation_cache, use_fast_cpu_flags
    from hrnet_flax.weights.pretrained import get_pretrained, list_pretrained, load_pretrained

    use_fast_cpu_flags()

    enable_compilation_cache()
    source = DataSource(args.data_dir, "imagenet", args.manual_dir)
    names = list_pretrained(args.names)
    if not names:
        parser.error(f"no registered weight matches {args.names!r}")
    rows: list[dict] = []
    for name in names:
        weight = get_pretrained(name)
        model, variables = load_pretrained(name)
        settings = [(weight.eval, weight.top1, weight.top5)]
        if weight.test_eval is not None:
            settings.append((weight.test_eval, weight.test_top1, None))
        for config, top1, top5 in settings:
            spec = eval_spec(config, size=args.size)
            batches = eval_dataset(source, batch_size_per_process=args.batch_size, spec=spec, split=args.split)
            start = time.perf_counter()
            result = evaluate(model, variables, batches, progress=True)
            row = {
                "name": name,
                "preprocessing": _spec_text(spec),
                "published_top1": top1,
                "published_top5": top5,
                "seconds": time.perf_counter() - start,
                **result,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_table(rows, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
