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
    from hrnet_flax import info

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

    from hrnet_flax import create_model

    model = create_model(args.name, dtype=jnp.dtype(args.dtype))
    images = jax.random.normal(jax.random.key(0), (args.batch_size, args.size, args.size, 3))
    start = time.perf_counter()
    variables = jax.jit(model.init)(jax.random.key(1), images[:1])
    logits = jax.jit(model.apply)(variables, images)
    logits.block_until_ready()
    print(
        f"{args.name}: logits {tuple(logits.shape)} {logits.dtype}, finite={bool(jnp.isfinite(logits).all())}, "
        f"{time.perf_counter() - start:.1f} s including compilation"
    )
    return 0


COMMANDS = [add_info, add_forward]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hrnet-flax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    from hrnet_flax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        print(f"hrnet-flax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
