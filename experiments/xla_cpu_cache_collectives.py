"""Checks the XLA:CPU fault behind `runtime.speed_options`: a program with all-reduces inside loops,
run on several CPU devices, gives wrong results once it is loaded from the persistent compilation
cache (a freshly compiled one does not).

    python experiments/xla_cpu_cache_collectives.py [--runs 4] [--reps 100]

It runs the same small program (six independent `lax.scan`s with a `pmean` in each body, their
gradients, top-level `pmean`s; `shard_map` over 4 forced CPU devices) in fresh processes: first
compiling with the cache emptied each time, then loading it from the cache. Each process calls
the program `--reps` times and counts the results that differ from the first compiled one. With
jax 0.10.2 on a 2-core AVX-512 machine (defaults, 5.5 minutes; measured 2026-11-29), the 4
cache-loading processes returned 4, 3, 1 and 5 wrong values of 100 calls, the 4 compiling
processes none. If a newer jaxlib gives no wrong values for cached runs, `runtime.speed_options`'s
restriction may be lifted. Background: docs/performance.md (XLA:CPU caveats).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def program(reps: int) -> list[float]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    def body(c, w):
        return jnp.tanh((c - jax.lax.pmean(jnp.mean(c, axis=0), "d")) @ w), None  # BatchNorm-like

    def loss(xs, ws):
        out = []
        for x, w in zip(xs, ws):
            out.append(jax.lax.pmean(jnp.sum(jax.lax.scan(body, x, w)[0]), "d"))
            out += [jnp.sum(jax.lax.pmean(jnp.tanh(x @ w[k] + k), "d")) for k in range(8)]
        return sum(out)

    def step(xs, ws):
        value, grads = jax.value_and_grad(loss, argnums=1)(xs, ws)
        return value + sum(jnp.sum(jax.lax.pmean(g, "d") ** 2) for g in grads)

    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
    fn = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P("d"), P()), out_specs=P(), check_vma=False))
    rng = np.random.default_rng(0)
    widths = [16 * (b + 1) ** 2 for b in range(6)]
    xs = [jnp.asarray(rng.normal(size=(64, n)), jnp.float32) for n in widths]
    ws = [jnp.asarray(rng.normal(size=(8, n, n)) / (4 * (b + 1)), jnp.float32) for b, n in enumerate(widths)]
    return [float(fn(xs, ws)) for _ in range(reps)]


def run(cache: str, reps: int) -> list[float]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, __file__, "--child", cache, "--reps", str(reps)], env=env, capture_output=True, text=True)
    if out.returncode:
        return [float("nan")] * reps  # crashed (heap corruption): count every call as wrong
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import jax

        jax.config.update("jax_compilation_cache_dir", args.child)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        print(json.dumps(program(args.reps)))
        return
    report = {"compiled": [], "cached": []}
    reference = None
    for kind in ("compiled", "cached"):
        with tempfile.TemporaryDirectory() as cache:
            for i in range(args.runs + (kind == "cached")):
                values = run(cache if kind == "cached" else tempfile.mkdtemp(dir=cache), args.reps)
                reference = values[0] if reference is None else reference
                if kind == "cached" and i == 0:
                    continue  # this run compiles and writes the cache
                report[kind].append(sum(v != reference for v in values))
    print(json.dumps({"wrong_calls_per_process": report, "reps": args.reps}))


if __name__ == "__main__":
    main()
