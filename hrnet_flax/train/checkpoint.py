"""Checkpoints of a run: the train state (orbax, atomic), preemption, and the final weights."""

from __future__ import annotations

import os
import signal
from typing import Any

import jax

from hrnet_flax.train.config import TrainConfig
from hrnet_flax.train.step import TrainState


def checkpoint_manager(workdir: str, keep: int):
    """Orbax manager for `<workdir>/checkpoints` (atomic: a half-written step is never restored)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def save_state(manager: Any, state: TrainState) -> None:
    """Save `state` at its step (once: a step already saved is not written again)."""
    import orbax.checkpoint as ocp

    step = int(jax.device_get(state.step))
    if manager.latest_step() != step:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_state(manager: Any, state: TrainState) -> TrainState:
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

    def should_stop(self, manager: Any, step: int) -> bool:
        if jax.process_count() > 1:
            return bool(manager.reached_preemption(step))
        return self.received

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def export_weights(config: TrainConfig, state: TrainState, path: str) -> None:
    """Write the final (EMA if any) weights in the self-describing format of `load_pretrained`."""
    from hrnet_flax.weights.convert import CONFIG_SETTINGS, save_checkpoint

    kept = {k: v for k, v in config.model_overrides.items() if k in CONFIG_SETTINGS}  # recorded in the file
    other = {k: v for k, v in config.model_overrides.items() if k not in CONFIG_SETTINGS}
    if other:  # the file names its arch; these overrides would not survive the round trip
        print(f"not writing {path}: the model has create_model overrides {other}")
        return
    variables = jax.device_get(state.variables(ema=bool(config.ema_decay)))
    save_checkpoint(path, variables, arch=config.model, num_classes=config.num_classes, config_overrides=kept or None)
