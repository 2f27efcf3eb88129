"""The training loop: `train_and_evaluate`, read top to bottom.

Data-parallel over all devices of all processes (`hrnet_flax.parallel`), for any task
(`hrnet_flax.tasks`: the loss, evaluation and data come from `config.task`): restore or create the
state, then step, log, checkpoint and evaluate; at the end export the weights. Every process runs
the same program (multi-controller JAX): call `jax.distributed.initialize()` before this module
touches devices when there are several processes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from hrnet_flax.evaluate import evaluate
from hrnet_flax.parallel import compile_for_all_processes, global_batch, make_mesh
from hrnet_flax.runtime import speed_options
from hrnet_flax.tasks import get_task
from hrnet_flax.train.checkpoint import StopSignal, checkpoint_manager, export_weights, restore_state, save_state
from hrnet_flax.train.config import TrainConfig
from hrnet_flax.train.optim import create_optimizer, learning_rate_schedule
from hrnet_flax.train.step import TrainState, build_model, create_train_state, make_train_step


def check_batch_sizes(config: TrainConfig, mesh: Mesh) -> tuple[int, int]:
    """Per-process train and eval batch sizes; a train batch must split evenly over all devices."""
    if config.global_batch_size % mesh.size:
        raise ValueError(f"config.global_batch_size={config.global_batch_size} must be a multiple of the device count ({mesh.size})")
    if config.eval_batch_size % jax.process_count():
        raise ValueError(f"config.eval_batch_size={config.eval_batch_size} must be a multiple of the process count ({jax.process_count()})")
    return config.global_batch_size // jax.process_count(), config.eval_batch_size // jax.process_count()


def resolve_config(config: TrainConfig) -> TrainConfig:
    """`config` validated and checked against its dataset by its task, `train_examples` counted."""
    config.validate()
    return get_task(config.task).from_config(config).resolve(config)


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    step: int
    eval: dict[str, float]  # the last evaluation: the task's metrics; "ema_*" for the EMA weights
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

    from hrnet_flax.train.metrics import MetricWriter

    config = resolve_config(config)
    task = get_task(config.task).from_config(config)
    mesh = mesh or make_mesh()
    scan = speed_options(config.scan, platform=mesh.devices.flat[0].platform, num_devices=mesh.size)["scan"]
    config = dataclasses.replace(config, scan=scan)
    schedule = learning_rate_schedule(config)
    tx = create_optimizer(config, schedule)
    model = build_model(config, scan=scan)
    eval_model = build_model(config, axis_name=None, scan=scan)
    total_steps = config.num_steps()
    eval_every = config.eval_every_steps or config.steps_per_epoch()
    is_main = jax.process_index() == 0

    manager = checkpoint_manager(workdir, config.keep_checkpoints)
    state = restore_state(manager, create_train_state(config, tx, mesh))
    step = int(jax.device_get(state.step))
    train_batch, eval_batch = check_batch_sizes(config, mesh)
    train_iter, eval_batches = task.datasets(config, train_batch=train_batch, eval_batch=eval_batch, start_step=step)
    p_train_step = make_train_step(config, model, tx, mesh, task=task, schedule=schedule)

    def score(variables: dict[str, Any]) -> dict[str, Any]:
        return evaluate(eval_model, jax.device_get(variables), eval_batches(), task=task)

    def run_eval() -> dict[str, float]:
        """The task's metrics on the whole eval split (`hrnet_flax.evaluate`); `ema_*` for the EMA weights."""
        result = score(state.variables())
        if config.ema_decay:
            ema = score(state.variables(ema=True))
            result.update({f"ema_{k}": v for k, v in ema.items() if k not in ("count", "unreadable")})
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
                summary = {k: float(np.mean([m[k] for _, m in host])) for k in host[-1][1] if k != "learning_rate"}
                summary["learning_rate"] = float(host[-1][1]["learning_rate"])
                summary["images_per_second"] = (step - tick_step) * config.global_batch_size / max(now - tick, 1e-9)
                tick, tick_step = now, step
                writer.write(step, {f"train/{k}": v for k, v in summary.items()})
                bar.set_postfix({k: f"{v:.4g}" for k, v in summary.items() if k != "images_per_second"})
            if is_ckpt:
                save_state(manager, state)
            if preempted:
                break
            if is_eval:
                last_eval = run_eval()
                writer.write(step, {f"eval/{k}": v for k, v in last_eval.items()})
                if is_main:
                    loss = f", loss {last_eval['loss']:.4f}" if "loss" in last_eval else ""
                    bar.write(f"step {step}: eval {task.describe(last_eval)}{loss}")
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


def summary_line(config: TrainConfig, result: TrainResult, workdir: str, seconds: float) -> str:
    """One line: what was trained, for how long, and the validation metrics."""
    if result.preempted:
        return f"{config.model}: stopped by SIGTERM at step {result.step}, checkpoint saved in {workdir}; run again to resume"
    task, ev = get_task(config.task).from_config(config), result.eval
    ema = {k[len("ema_"):]: v for k, v in ev.items() if k.startswith("ema_")}
    ema_text = f", EMA {task.describe(ema)}" if ema else ""
    return (
        f"{config.model} on {config.dataset}: {result.step} steps of {config.global_batch_size} images on "
        f"{jax.device_count()} device(s) in {seconds:.0f} s; validation {task.describe(ev)} "
        f"({ev['count']} images){ema_text}; weights in {os.path.join(workdir, 'model.safetensors')}"
    )
