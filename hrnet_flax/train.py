"""Data-parallel training of HRNet classifiers, from one CPU to a multi-host pod.

Read top to bottom: the train state; the per-device step (named-axis collectives over the
mesh axis "batch"); how it is mapped over devices (`jax.shard_map` on a one-axis mesh
under `jax.jit`); global batches from each process's local batch; data;
checkpoints (orbax); and the loop `train_and_evaluate`.

Every process runs the same program (multi-controller JAX). Call `jax.distributed.initialize()`
before this module touches devices when there are several processes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hrnet_flax.evaluate import evaluate, wait_for_all_processes
from hrnet_flax.optim import create_optimizer, cross_entropy, learning_rate_schedule
from hrnet_flax.registry import create_model
from hrnet_flax.stacking import stack_variables, unstack_variables
from hrnet_flax.train_config import TrainConfig

AXIS = "batch"  # the one mesh axis: data parallelism


# --- State -------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `ema` is `{"params", "batch_stats"}` or None (no EMA)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any = None

    def variables(self, ema: bool = False) -> dict[str, Any]:
        """Model variables for `model.apply`; with `ema=True` the averaged ones."""
        if ema:
            if self.ema is None:
                raise ValueError("this train state has no EMA (config.ema_decay is None)")
            return dict(self.ema)
        return {"params": self.params, "batch_stats": self.batch_stats}


def build_model(config: TrainConfig, axis_name: str | None = AXIS, scan: bool = False) -> flax.linen.Module:
    """The model of `config`; `axis_name` makes BatchNorm average statistics over that axis.

    `scan=True` traces identical layers once (stacked variables, see `hrnet_flax.stacking`), on
    CPUs with the explicit convolution gradients XLA:CPU runs fast inside loops.
    """
    return create_model(
        config.model,
        num_classes=config.num_classes,
        dtype=jnp.dtype(config.dtype),
        axis_name=axis_name,
        scan=scan,
        explicit_conv_grads=scan and jax.default_backend() == "cpu",
        **config.model_overrides,
    )


def resolve_scan(config: TrainConfig, platform: str, num_devices: int) -> bool:
    """Whether to train the scanned model: `config.scan`, or when it is None, on a one-device
    CPU mesh only.

    Refuses `scan=True` on several CPU devices while the persistent compilation cache is on:
    XLA:CPU (jaxlib 0.10.2) runs such a step wrongly once it loads it from the cache: wrong losses,
    NaNs, heap corruption (all-reduces inside loops; experiments/xla_cpu_cache_collectives.py
    reproduces it, experiments/results/speed_notes.md, session 7).
    """
    if config.scan is None:
        return platform == "cpu" and num_devices == 1
    if config.scan and platform == "cpu" and num_devices > 1 and jax.config.jax_enable_compilation_cache:
        raise ValueError(
            f"config.scan=True on a mesh of {num_devices} CPU devices with the persistent compilation cache "
            "on: XLA:CPU runs such a scanned step wrongly when it loads it from the cache. Use scan=False "
            "(or None), or turn the cache off with JAX_ENABLE_COMPILATION_CACHE=false"
        )
    return config.scan


def initial_variables(config: TrainConfig) -> dict[str, Any]:
    """Random init (seed `config.seed`), or the weights of `config.pretrained` (fine-tuning);
    canonical layout (unstacked) either way."""
    if config.pretrained:
        from hrnet_flax.pretrained import load_pretrained

        _, variables = load_pretrained(config.pretrained, arch=config.model, num_classes=config.num_classes)
        return {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    from hrnet_flax.initialization import init_variables

    model = build_model(config, axis_name=None)
    return init_variables(model, jax.random.key(config.seed), (1, config.image_size, config.image_size, 3))


def create_train_state(config: TrainConfig, tx: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """A fresh state, replicated over `mesh` (float32 params and BatchNorm statistics)."""
    variables = initial_variables(config)

    def make(variables):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), variables["params"])
        stats = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), variables["batch_stats"])
        ema = {"params": params, "batch_stats": stats} if config.ema_decay else None
        return TrainState(jnp.zeros((), jnp.int32), params, stats, tx.init(params), ema)

    return jax.jit(make, out_shardings=NamedSharding(mesh, P()))(variables)


# --- The per-device step ------------------------------------------------------------------------


def loss_and_grads(params, batch_stats, batch, *, model, label_smoothing: float = 0.0):
    """Per device: `(loss, accuracy, grads, new batch_stats)`, all averaged over the global batch.

    Runs inside `shard_map`: `batch` is this device's share. BatchNorm statistics are
    synchronised by the model itself (`axis_name=AXIS`); gradients and metrics by `pmean`.
    Train batches are full (`mask` all True), so the mean of per-device means is the global mean.
    Variables are canonical; a `scan=True` model gets them stacked (a copy the gradient undoes).
    """

    def loss_fn(params):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, updates = model.apply(
            stack_variables(variables) if model.scan else variables, batch["image"], train=True, mutable=["batch_stats"]
        )
        if model.scan:
            updates = unstack_variables(updates)
        mask = batch["mask"].astype(jnp.float32)
        per_example = cross_entropy(logits, batch["label"], label_smoothing)
        loss = jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return loss, (correct, updates["batch_stats"])

    (loss, (accuracy, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads, loss, accuracy = jax.lax.pmean((grads, loss, accuracy), AXIS)
    return loss, accuracy, grads, new_stats


def ema_update(ema, new, decay: float):
    """`decay * ema + (1 - decay) * new`, leaf by leaf."""
    return jax.tree.map(lambda e, n: decay * e + (1.0 - decay) * n, ema, new)


def train_step(state: TrainState, batch, *, model, tx, schedule, label_smoothing: float, ema_decay: float | None):
    """Per device: one SGD step on the global batch; returns the new state and its metrics."""
    loss, accuracy, grads, batch_stats = loss_and_grads(
        state.params, state.batch_stats, batch, model=model, label_smoothing=label_smoothing
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema_decay:
        ema = ema_update(ema, {"params": params, "batch_stats": batch_stats}, ema_decay)
    metrics = {"loss": loss, "accuracy": accuracy, "learning_rate": schedule(state.step)}
    return TrainState(state.step + 1, params, batch_stats, opt_state, ema), metrics


# --- Mapping over devices -----------------------------------------------------------------------


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis mesh ("batch") over all devices of all processes (or the given ones)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def data_parallel(fn: Callable, mesh: Mesh, in_specs, out_specs, donate: tuple[int, ...] = ()) -> Callable:
    """`jax.jit(jax.shard_map(fn))`: P() = replicated, P(AXIS) = split along the batch.

    `check_vma=False`: gradients are averaged explicitly with `pmean` (as under `pmap`);
    with the check on, JAX would already sum the gradients of replicated parameters.
    """
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    return jax.jit(mapped, donate_argnums=donate)


def make_train_step(config: TrainConfig, model, tx, mesh: Mesh) -> Callable:
    """`step(state, global_batch) -> (state, metrics)`; the state's buffers are donated."""
    step = functools.partial(
        train_step,
        model=model,
        tx=tx,
        schedule=learning_rate_schedule(config),
        label_smoothing=config.label_smoothing,
        ema_decay=config.ema_decay,
    )
    return data_parallel(step, mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), donate=(0,))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """One global array per key from this process's rows (processes hold consecutive slices)."""
    sharding = NamedSharding(mesh, P(AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


# --- Data ---------------------------------------------------------------------------------------


def check_batch_sizes(config: TrainConfig, mesh: Mesh) -> tuple[int, int]:
    """Per-process train and eval batch sizes; a train batch must split evenly over all devices."""
    if config.global_batch_size % mesh.size:
        raise ValueError(f"config.global_batch_size={config.global_batch_size} must be a multiple of the device count ({mesh.size})")
    if config.eval_batch_size % jax.process_count():
        raise ValueError(f"config.eval_batch_size={config.eval_batch_size} must be a multiple of the process count ({jax.process_count()})")
    return config.global_batch_size // jax.process_count(), config.eval_batch_size // jax.process_count()


def data_source(config: TrainConfig):
    """`hrnet_flax.data`'s source for `config.dataset` (not for the "digits" demo)."""
    from hrnet_flax.sources import as_source

    return as_source(config.dataset, manual_dir=config.manual_dir)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """`config` with `train_examples` counted from the dataset when it is None; for an image
    folder, checks `num_classes` against its class folders."""
    if config.dataset != "digits":
        from hrnet_flax.data import class_names

        source = data_source(config)
        if source.kind == "folder" and len(class_names(source)) != config.num_classes:
            raise ValueError(
                f"config.num_classes={config.num_classes} but the image folder {config.dataset} has "
                f"{len(class_names(source))} classes"
            )
    if config.train_examples is not None:
        return config
    if config.dataset == "digits":
        from hrnet_flax.demo_data import split_size

        return dataclasses.replace(config, train_examples=split_size("train"))
    from hrnet_flax.data import num_examples

    return dataclasses.replace(config, train_examples=num_examples(data_source(config), "train"))


def make_datasets(config: TrainConfig, mesh: Mesh, start_step: int):
    """`(train iterator from start_step, eval-iterator factory)` for `config.dataset`."""
    train_bs, eval_bs = check_batch_sizes(config, mesh)
    if config.dataset == "digits":
        from hrnet_flax import demo_data

        train = demo_data.train_dataset(
            batch_size_per_process=train_bs, image_size=config.image_size, seed=config.seed, start_step=start_step
        )
        return train, lambda: demo_data.eval_dataset(batch_size_per_process=eval_bs, image_size=config.eval_image_size)
    from hrnet_flax import data

    source = data_source(config)
    train = data.train_dataset(
        source, batch_size_per_process=train_bs, image_size=config.image_size, seed=config.seed, start_step=start_step
    )
    return train, lambda: data.eval_dataset(
        source, batch_size_per_process=eval_bs, preset=config.eval_preset, image_size=config.eval_image_size
    )


# --- Checkpoints --------------------------------------------------------------------------------


def checkpoint_manager(workdir: str, keep: int):
    """Orbax manager for `<workdir>/checkpoints` (atomic: a half-written step is never restored)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def save_state(manager, state: TrainState) -> None:
    import orbax.checkpoint as ocp

    step = int(jax.device_get(state.step))
    if manager.latest_step() != step:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_state(manager, state: TrainState) -> TrainState:
    """The latest checkpoint restored into `state`'s structure and shardings (or `state` if none)."""
    import orbax.checkpoint as ocp

    latest = manager.latest_step()
    if latest is None:
        return state
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return manager.restore(latest, args=ocp.args.StandardRestore(target))


class StopSignal:
    """Catches SIGTERM (preemption) so the loop can checkpoint and exit at the next step.

    With several processes JAX's preemption service (started by `jax.distributed.initialize`)
    owns SIGTERM and `manager.reached_preemption(step)` agrees on one step for all of them.
    """

    def __init__(self):
        self.received = False
        self._previous = None
        if jax.process_count() == 1:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not the main thread: no handler, no preemption saves
                self._previous = None

    def _handle(self, signum, frame) -> None:
        self.received = True

    def should_stop(self, manager, step: int) -> bool:
        if jax.process_count() > 1:
            return bool(manager.reached_preemption(step))
        return self.received

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def compile_for_all_processes(fn: Callable, *args) -> Callable:
    """`fn` (jitted) compiled ahead of time for `args`, returned once every process has compiled it.

    CPU collectives (gloo) give processes 30 s to meet at the first collective; compile times
    differ by more on a loaded machine, so no process runs the program before all have compiled it.
    """
    compiled = fn.lower(*args).compile()
    wait_for_all_processes("compiled")
    return compiled


# --- The loop -----------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    step: int
    eval: dict[str, float]  # the last evaluation: top1/top5 (%), loss, count; "ema_*" for EMA weights
    preempted: bool  # stopped early by SIGTERM (a checkpoint was saved; run again to resume)


class NonFiniteLossError(FloatingPointError):
    pass


def _check_finite(pending: list[tuple[int, dict]], manager) -> list[tuple[int, dict]]:
    """Host copies of the pending metrics; raises on the first step with a non-finite loss."""
    host = jax.device_get(pending)
    for step, metrics in host:
        if not np.isfinite(metrics["loss"]):
            manager.wait_until_finished()
            last = manager.latest_step()
            kept = f"the last good checkpoint is step {last} in {manager.directory}" if last is not None else "no checkpoint was saved"
            raise NonFiniteLossError(f"training stopped: non-finite loss ({metrics['loss']}) at step {step}; {kept}")
    return host


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    *,
    mesh: Mesh | None = None,
    step_callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `config` in `workdir`, resuming from its latest checkpoint; evaluate; export weights.

    Writes `<workdir>/checkpoints/<step>` (orbax), `metrics.jsonl`, `tensorboard/` and, at the
    end, `model.safetensors` (the self-describing format `load_pretrained` reads; EMA weights
    when `config.ema_decay` is set). `step_callback(step)` runs on the host after each step.
    """
    from tqdm.auto import tqdm

    from hrnet_flax.train_log import MetricWriter

    config.validate()
    config = resolve_config(config)
    mesh = mesh or make_mesh()
    config = dataclasses.replace(config, scan=resolve_scan(config, mesh.devices.flat[0].platform, mesh.size))
    tx = create_optimizer(config)
    model = build_model(config, scan=config.scan)
    eval_model = build_model(config, axis_name=None, scan=config.scan)
    total_steps = config.num_steps()
    eval_every = config.eval_every_steps or config.steps_per_epoch()
    is_main = jax.process_index() == 0

    manager = checkpoint_manager(workdir, config.keep_checkpoints)
    state = restore_state(manager, create_train_state(config, tx, mesh))
    step = int(jax.device_get(state.step))
    train_iter, eval_batches = make_datasets(config, mesh, start_step=step)
    p_train_step = make_train_step(config, model, tx, mesh)

    def score(variables: dict[str, Any]) -> dict[str, Any]:
        variables = jax.device_get(variables)
        return evaluate(eval_model, stack_variables(variables) if config.scan else variables, eval_batches())

    def run_eval() -> dict[str, float]:
        """top1/top5 (%), loss and count on the whole eval split (`hrnet_flax.evaluate`)."""
        result = score(state.variables())
        if config.ema_decay:
            ema = score(state.variables(ema=True))
            result.update({f"ema_{k}": v for k, v in ema.items() if k in ("top1", "top5", "loss")})
        return result

    writer = MetricWriter(workdir)
    stop = StopSignal()
    bar = tqdm(total=total_steps, initial=step, disable=not (is_main and config.progress_bar), desc="train", unit="step")
    pending: list[tuple[int, dict]] = []
    last_eval: dict[str, float] = {}
    preempted = False
    compiled = jax.process_count() == 1
    tick, tick_step = time.perf_counter(), step
    try:
        while step < total_steps:
            batch = global_batch(next(train_iter), mesh)
            if not compiled:  # several processes: compile, then wait for all
                p_train_step, compiled = compile_for_all_processes(p_train_step, state, batch), True
            state, metrics = p_train_step(state, batch)
            step += 1
            pending.append((step, metrics))
            bar.update(1)
            if step_callback is not None:
                step_callback(step)
            preempted = stop.should_stop(manager, step)
            is_log = step % config.log_every_steps == 0 or step == total_steps or preempted
            is_eval = step % eval_every == 0 or step == total_steps
            is_ckpt = step % config.checkpoint_every_steps == 0 or step == total_steps or preempted
            if is_log or is_eval or is_ckpt:
                host = _check_finite(pending, manager)
                pending = []
                now = time.perf_counter()
                summary = {k: float(np.mean([m[k] for _, m in host])) for k in ("loss", "accuracy")}
                summary["learning_rate"] = float(host[-1][1]["learning_rate"])
                summary["images_per_second"] = (step - tick_step) * config.global_batch_size / max(now - tick, 1e-9)
                tick, tick_step = now, step
                writer.write(step, {f"train/{k}": v for k, v in summary.items()})
                bar.set_postfix(loss=f"{summary['loss']:.4f}", acc=f"{summary['accuracy']:.3f}", lr=f"{summary['learning_rate']:.3g}")
            if is_ckpt:
                save_state(manager, state)
            if preempted:
                break
            if is_eval:
                last_eval = run_eval()
                writer.write(step, {f"eval/{k}": v for k, v in last_eval.items()})
                if is_main:
                    bar.write(f"step {step}: eval top-1 {last_eval['top1']:.2f}% top-5 {last_eval['top5']:.2f}% loss {last_eval['loss']:.4f}")
                tick = time.perf_counter()  # throughput counts training only (the first interval includes compiling)
        if step >= total_steps and not preempted:
            if not last_eval:
                last_eval = run_eval()
            save_state(manager, state)
            if is_main:
                export_weights(config, state, os.path.join(workdir, "model.safetensors"))
    finally:
        manager.wait_until_finished()
        bar.close()
        writer.close()
        stop.restore()
    return TrainResult(state=state, step=step, eval=last_eval, preempted=preempted)


def export_weights(config: TrainConfig, state: TrainState, path: str) -> None:
    """Write the final (EMA if any) weights in the self-describing format of `load_pretrained`."""
    from hrnet_flax import save_checkpoint

    if config.model_overrides:  # the file names its arch; overrides would not survive the round trip
        print(f"not writing {path}: the model has create_model overrides {config.model_overrides}")
        return
    variables = jax.device_get(state.variables(ema=bool(config.ema_decay)))
    save_checkpoint(path, variables, arch=config.model, num_classes=config.num_classes)


def summary_line(config: TrainConfig, result: TrainResult, workdir: str, seconds: float) -> str:
    """One line: what was trained, for how long, and the validation accuracy."""
    if result.preempted:
        return f"{config.model}: stopped by SIGTERM at step {result.step}, checkpoint saved in {workdir}; run again to resume"
    ev = result.eval
    ema = f", EMA top-1 {ev['ema_top1']:.2f}%" if "ema_top1" in ev else ""
    return (
        f"{config.model} on {config.dataset}: {result.step} steps of {config.global_batch_size} images on "
        f"{jax.device_count()} device(s) in {seconds:.0f} s; validation top-1 {ev['top1']:.2f}%, top-5 {ev['top5']:.2f}% "
        f"({ev['count']} images){ema}; weights in {os.path.join(workdir, 'model.safetensors')}"
    )
