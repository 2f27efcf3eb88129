"""Optimizer and learning-rate schedule from a `TrainConfig`."""

from __future__ import annotations

import jax
import optax

from hrnet_flax.train.config import TrainConfig


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """The lr at each step: linear warmup from 0, then piecewise-constant, cosine, poly or constant.

    poly (the segmentation recipes): `(peak - min_lr) * (1 - t / T) ** poly_power + min_lr`, t counted
    from the end of the warmup, T the steps after it, updated every step."""
    steps_per_epoch = config.steps_per_epoch()
    total = config.num_steps()
    peak = config.peak_lr()
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "piecewise":
        boundaries = {int(round(e * steps_per_epoch)) - warmup: config.decay_factor for e in config.decay_epochs}
        if any(b <= 0 for b in boundaries):
            raise ValueError(f"config.decay_epochs {config.decay_epochs} must all come after the warmup ({config.warmup_epochs} epochs)")
        main = optax.piecewise_constant_schedule(peak, boundaries)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, max(1, total - warmup))
    elif config.schedule == "poly":
        main = optax.polynomial_schedule(peak, config.min_lr, config.poly_power, max(1, total - warmup))
    elif config.schedule == "constant":
        main = optax.constant_schedule(peak)
    else:
        raise ValueError(f"config.schedule={config.schedule!r}: must be piecewise, cosine, poly or constant")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def weight_decay_mask(params):
    """True for conv/dense kernels (ndim > 1): `weight_decay_on="kernels"` decays only these."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def create_optimizer(config: TrainConfig, schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum, or Adam (`config.optimizer`), with coupled L2 or decoupled
    weight decay.

    Coupled L2 (PaddleClas `L2Decay`, PyTorch's `weight_decay`): `grad += wd * param` before
    momentum or Adam's moments. Decoupled: `param -= lr * wd * param` beside the update (SGDW,
    AdamW). `schedule`: the run's `learning_rate_schedule(config)`, when the caller already has it.
    """
    schedule = schedule or learning_rate_schedule(config)
    mask = None if config.weight_decay_on == "all" else weight_decay_mask
    decay = optax.add_decayed_weights(config.weight_decay, mask) if config.weight_decay else optax.identity()
    if config.optimizer == "adam":  # PyTorch's Adam defaults
        momentum = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    elif config.optimizer == "sgd":
        momentum = optax.trace(decay=config.momentum, nesterov=config.nesterov) if config.momentum else optax.identity()
    else:
        raise ValueError(f"config.optimizer={config.optimizer!r}: must be sgd or adam")
    if config.weight_decay_mode == "l2":
        parts = [decay, momentum]
    elif config.weight_decay_mode == "decoupled":
        parts = [momentum, decay]
    else:
        raise ValueError(f"config.weight_decay_mode={config.weight_decay_mode!r}: must be l2 or decoupled")
    return optax.chain(*parts, optax.scale_by_learning_rate(schedule))
