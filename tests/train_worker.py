"""Subprocess side of the multi-device tests (XLA_FLAGS must be set before jax is imported).

    python tests/train_worker.py equivalence OUT.npz [PROCESS_ID NUM_PROCESSES PORT]
    python tests/train_worker.py train WORKDIR OUT.npz [PROCESS_ID NUM_PROCESSES PORT]

`equivalence`: one step's loss, gradients and BatchNorm statistics on one fixed batch, computed in
float64 (`jax_enable_x64`, the model's compute dtype float64) so that no ReLU input near 0 rounds to
the other side in one device layout and not in another: the layouts then agree to ~1e-13.
With several processes, `TRAIN_WORKER_DELAY=S` holds process `i` back `i * S` seconds before it
compiles (a slower host).
`train`: `train_and_evaluate` (four steps on `random_train_dataset`, digits eval); the final
and the initial parameters and statistics.
"""

import os
import sys
import time

MODE = sys.argv[1]


def small_config():
    """The demo's model at global batch 8, four steps of 64x64 train images (digits eval)."""
    from hrnet_flax.train.config import apply_overrides, demo_config

    return apply_overrides(
        demo_config(),
        ["global_batch_size=8", "eval_batch_size=8", "total_steps=4", "train_examples=64", "warmup_epochs=0",
         "image_size=64", "base_lr=0.002", "checkpoint_every_steps=2", "log_every_steps=1", "eval_every_steps=100",
         "progress_bar=False"]
        + os.environ.get("TRAIN_WORKER_OVERRIDES", "").split(),
    )


def random_train_dataset(*, batch_size_per_process: int, image_size: int, seed: int = 0, start_step: int = 0):
    """Stands in for `demo_data.train_dataset`: step `s` is the global batch of seeded normal
    noise images and labels `rng([seed, s])`, each process taking its consecutive rows."""
    import jax
    import numpy as np

    from hrnet_flax.data.digits import NUM_CLASSES

    rows = slice(jax.process_index() * batch_size_per_process, (jax.process_index() + 1) * batch_size_per_process)
    step = start_step
    while True:
        rng = np.random.default_rng([seed, step])
        n = batch_size_per_process * jax.process_count()
        images = rng.normal(size=(n, image_size, image_size, 3)).astype(np.float32)
        labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
        yield {"image": images[rows], "label": labels[rows], "mask": np.ones(batch_size_per_process, bool)}
        step += 1


def equivalence(out: str, distributed: tuple[int, int, int] | None = None) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)

    if distributed:
        process_id, num_processes, port = distributed
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from hrnet_flax.models.initialization import init_variables
    from hrnet_flax.parallel import AXIS, compile_for_all_processes, data_parallel, global_batch, make_mesh
    from hrnet_flax.tasks import Classification
    from hrnet_flax.train.step import build_model, loss_and_grads

    assert jax.device_count() == 4, jax.devices()
    counts = (4,) if distributed else (1, 4)
    cfg = small_config()
    model = build_model(cfg, scan=bool(cfg.scan)).clone(dtype=jnp.float64)  # plain unless overridden
    variables = init_variables(build_model(cfg, axis_name=None), jax.random.key(1), (1, 32, 32, 3))
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, 10, 8).astype(np.int32),
        "mask": np.ones(8, bool),
    }
    results = {}
    for n in counts:
        mesh = make_mesh(jax.devices()[:n])
        fn = data_parallel(lambda p, s, b: loss_and_grads(p, s, b, model=model, task=Classification()), mesh, (P(), P(), P(AXIS)), P())
        local = batch
        if distributed:
            rows = slice(jax.process_index() * 4, jax.process_index() * 4 + 4)
            local = {k: v[rows] for k, v in batch.items()}
        args = (variables["params"], variables["batch_stats"], global_batch(local, mesh))
        if distributed:  # gloo gives the processes 30 s to meet: none runs before all have compiled
            time.sleep(float(os.environ.get("TRAIN_WORKER_DELAY", 0)) * jax.process_index())
            fn = compile_for_all_processes(fn, *args)
        loss, metrics, grads, stats = fn(*args)
        flat = {"loss": loss, "accuracy": metrics["accuracy"]}
        for prefix, tree in (("grad", grads), ("stats", stats)):
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
                flat[prefix + jax.tree_util.keystr(path)] = leaf
        results.update({f"{n}:{k}": np.asarray(v) for k, v in flat.items()})
    np.savez(out, **results)


def train(workdir: str, out: str, process_id: int | None = None, num_processes: int | None = None, port: int | None = None) -> None:
    import jax

    if num_processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
    import numpy as np

    from hrnet_flax.data import digits as demo_data
    from hrnet_flax.train.loop import train_and_evaluate
    from hrnet_flax.train.step import initial_variables

    demo_data.train_dataset = random_train_dataset  # well-conditioned inputs (see test_train_parallel)
    init = initial_variables(small_config())
    result = train_and_evaluate(small_config(), workdir)
    params = jax.tree_util.tree_leaves_with_path(jax.device_get(result.state.params))
    stats = jax.tree_util.tree_leaves_with_path(jax.device_get(result.state.batch_stats))
    arrays = {"p" + jax.tree_util.keystr(k): np.asarray(v) for k, v in params}
    arrays.update({"s" + jax.tree_util.keystr(k): np.asarray(v) for k, v in stats})
    for prefix, tree in (("init_p", init["params"]), ("init_s", init["batch_stats"])):
        arrays.update({prefix + jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)})
    arrays["step"] = np.asarray(result.step)
    arrays["eval_top1"] = np.asarray(result.eval["top1"])
    arrays["eval_count"] = np.asarray(result.eval["count"])
    if jax.process_index() == 0 or process_id is not None:
        np.savez(out, **arrays)


if __name__ == "__main__":
    from hrnet_flax.runtime import enable_compilation_cache

    enable_compilation_cache()
    if MODE == "equivalence":
        equivalence(sys.argv[2], tuple(int(x) for x in sys.argv[3:6]) if len(sys.argv) > 3 else None)
    elif MODE == "train":
        extra = [int(x) for x in sys.argv[4:7]] if len(sys.argv) > 4 else []
        train(sys.argv[2], sys.argv[3], *extra)
    else:
        raise SystemExit(f"unknown mode {MODE!r}")
