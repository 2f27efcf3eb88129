"""Launch a training run: `python experiments/train.py --config CONFIG --workdir DIR [--config.KEY=VALUE ...]`.

CONFIG is a file of `experiments/configs/` (with `:ARG` for configs taking one, e.g.
`experiments/configs/paddleclas.py:hrnet_w48_c`); `--config.base_lr=0.2` style flags override
its fields. Re-running with the same `--workdir` resumes from the latest checkpoint.

Several hosts: start the same command on every host with `--distributed` (cluster
auto-detection: TPU pods, SLURM, ...) or with `--coordinator HOST:PORT --num-processes N
--process-id I`; each host feeds its own part of every global batch.
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config file (optionally path.py:ARG)")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and the final model.safetensors")
    parser.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() with auto-detection")
    parser.add_argument("--coordinator", help="HOST:PORT of process 0 (multi-host without auto-detection)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args, rest = parser.parse_known_args(argv)
    overrides, unknown = [], []
    for i, item in enumerate(rest):
        if item.startswith("--config."):
            if "=" not in item:
                parser.error(f"{item}: write config overrides as --config.KEY=VALUE")
            overrides.append(item[len("--config.") :])
        else:
            unknown.append(item)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    import jax

    if args.coordinator or args.distributed:
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    from hrnet_flax.runtime import enable_compilation_cache, use_fast_cpu_flags
    from hrnet_flax.train import load_config, summary_line, train_and_evaluate

    use_fast_cpu_flags()

    enable_compilation_cache()
    config = load_config(args.config, overrides)
    start = time.perf_counter()
    result = train_and_evaluate(config, args.workdir)
    if jax.process_index() == 0:
        print(summary_line(config, result, args.workdir, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
