"""The train state and the per-device training step (named-axis collectives over `parallel.AXIS`).

Variables in the state are canonical (`hrnet_flax.models.stacking`); a scanned model gets them
stacked inside the step, where the gradient undoes the copy, so checkpoints and evaluation never
see the stacked layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hrnet_flax.models.registry import create_model
from hrnet_flax.models.stacking import canonical_apply
from hrnet_flax.parallel import AXIS, data_parallel
from hrnet_flax.runtime import speed_options
from hrnet_flax.tasks import Task
from hrnet_flax.train.config import TrainConfig


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
    `scan`: the scanned model, with the options `runtime.speed_options` gives it on this platform."""
    return create_model(
        config.model,
        num_classes=config.num_classes,
        dtype=jnp.dtype(config.dtype),
        axis_name=axis_name,
        **speed_options(scan),
        **config.model_overrides,
    )


def initial_variables(config: TrainConfig) -> dict[str, Any]:
    """Random init (seed `config.seed`), or the weights of `config.pretrained` (fine-tuning);
    canonical layout either way."""
    if config.pretrained:
        from hrnet_flax.weights.pretrained import load_pretrained

        _, variables = load_pretrained(config.pretrained, arch=config.model, num_classes=config.num_classes)
        return {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    from hrnet_flax.models.initialization import init_variables

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


def loss_and_grads(params, batch_stats, batch, *, model, task: Task):
    """Per device: `(loss, metrics, grads, new batch_stats)`, all averaged over the global batch.

    Runs inside `shard_map`: `batch` is this device's share. BatchNorm statistics are
    synchronised by the model itself (`axis_name=AXIS`); gradients and metrics by `pmean`.
    Train batches are full (`mask` all True), so the mean of per-device means is the global mean.
    """
    apply = canonical_apply(model)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": batch_stats}
        outputs, updates = apply(variables, batch["image"], train=True, mutable=["batch_stats"])
        loss, metrics = task.loss(outputs, batch)
        return loss, (metrics, updates["batch_stats"])

    (loss, (metrics, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads, loss, metrics = jax.lax.pmean((grads, loss, metrics), AXIS)
    return loss, metrics, grads, new_stats


def ema_update(ema, new, decay: float):
    """`decay * ema + (1 - decay) * new`, leaf by leaf."""
    return jax.tree.map(lambda e, n: decay * e + (1.0 - decay) * n, ema, new)


def train_step(state: TrainState, batch, *, model, task: Task, tx, schedule, ema_decay: float | None):
    """Per device: one optimizer step on the global batch; returns the new state and its metrics."""
    loss, metrics, grads, batch_stats = loss_and_grads(state.params, state.batch_stats, batch, model=model, task=task)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema_decay:
        ema = ema_update(ema, {"params": params, "batch_stats": batch_stats}, ema_decay)
    metrics = {"loss": loss, **metrics, "learning_rate": schedule(state.step)}
    return TrainState(state.step + 1, params, batch_stats, opt_state, ema), metrics


def make_train_step(
    config: TrainConfig, model, tx, mesh: Mesh, *, task: Task | None = None, schedule: optax.Schedule | None = None
) -> Callable:
    """`step(state, global_batch) -> (state, metrics)`; the state's buffers are donated.
    `task`: `config.task` set up from `config` unless given; `schedule`: the optimizer's."""
    from hrnet_flax.tasks import get_task
    from hrnet_flax.train.optim import learning_rate_schedule

    step = functools.partial(
        train_step,
        model=model,
        task=task or get_task(config.task).from_config(config),
        tx=tx,
        schedule=schedule or learning_rate_schedule(config),
        ema_decay=config.ema_decay,
    )
    return data_parallel(step, mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), donate=(0,))
