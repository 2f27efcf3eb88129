"""Schedules, weight decay, momentum, label smoothing and EMA against hand-computed values."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hrnet_flax.tasks.classification import cross_entropy
from hrnet_flax.train.optim import create_optimizer, learning_rate_schedule
from hrnet_flax.train.step import ema_update
from hrnet_flax.train.config import TrainConfig, apply_overrides


def config(**kw) -> TrainConfig:
    base = dict(dataset="digits", train_examples=1000, global_batch_size=100, base_batch_size=100, base_lr=0.1)
    base.update(kw)
    return TrainConfig(**base)


def test_piecewise_schedule_divides_by_ten_at_epoch_boundaries():
    # 10 steps per epoch, lr 0.1 * 200/100 = 0.2, /10 at epochs 3 and 6.
    cfg = config(global_batch_size=200, train_examples=2000, epochs=9, decay_epochs=(3, 6))
    sched = learning_rate_schedule(cfg)
    expected = {0: 0.2, 29: 0.2, 30: 0.02, 59: 0.02, 60: 0.002, 89: 0.002}
    for step, lr in expected.items():
        assert float(sched(step)) == pytest.approx(lr, rel=1e-6), step


def test_warmup_then_piecewise_keeps_the_boundaries_in_epochs():
    cfg = config(epochs=9, decay_epochs=(3, 6), warmup_epochs=1)  # 10 steps/epoch, peak 0.1
    sched = learning_rate_schedule(cfg)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.05)
    assert float(sched(10)) == pytest.approx(0.1)
    assert float(sched(29)) == pytest.approx(0.1)
    assert float(sched(30)) == pytest.approx(0.01)
    assert float(sched(60)) == pytest.approx(0.001)


def test_cosine_with_warmup():
    cfg = config(epochs=10, schedule="cosine", warmup_epochs=2)  # 100 steps, 20 warmup
    sched = learning_rate_schedule(cfg)
    assert float(sched(10)) == pytest.approx(0.05)
    for step in (20, 40, 60, 99):
        t = (step - 20) / 80
        assert float(sched(step)) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * t)), abs=1e-7), step
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-9)


def test_poly_schedule_with_warmup_and_floor():
    """mmsegmentation's poly: (peak - min) * (1 - t/T)^0.9 + min, t counted after the warmup."""
    cfg = config(epochs=10, schedule="poly", warmup_epochs=1, min_lr=1e-4)  # 100 steps, 10 warmup
    sched = learning_rate_schedule(cfg)
    assert float(sched(5)) == pytest.approx(0.05)
    for step in (10, 40, 99):
        t = (step - 10) / 90
        assert float(sched(step)) == pytest.approx((0.1 - 1e-4) * (1 - t) ** 0.9 + 1e-4, rel=1e-5), step
    assert float(sched(100)) == pytest.approx(1e-4)


def test_adam_with_coupled_l2_matches_torch():
    """`optimizer="adam"` is `torch.optim.Adam(lr, weight_decay)` step for step."""
    import torch

    lr, wd = 1e-3, 1e-2
    tx = create_optimizer(config(schedule="constant", base_lr=lr, optimizer="adam", weight_decay=wd))
    p0 = {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([0.5])}
    grads = [{"kernel": jnp.array([[0.3, 0.1]]), "bias": jnp.array([-0.2])}, {"kernel": jnp.array([[-1.0, 0.0]]), "bias": jnp.array([0.4])}]
    got = run(tx, p0, grads)
    ref = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in p0.items()}
    opt = torch.optim.Adam(ref.values(), lr=lr, weight_decay=wd)
    for g in grads:
        for k, p in ref.items():
            p.grad = torch.tensor(np.asarray(g[k]))
        opt.step()
    for k in p0:
        np.testing.assert_allclose(got[k], ref[k].detach().numpy(), rtol=1e-6, atol=1e-8)


def test_decay_epochs_inside_warmup_is_an_error():
    with pytest.raises(ValueError, match="decay_epochs"):
        learning_rate_schedule(config(epochs=9, decay_epochs=(1, 6), warmup_epochs=2))


def run(tx, params, grads_seq):
    state = tx.init(params)
    for g in grads_seq:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_coupled_l2_momentum_matches_paddle_formula():
    # PaddleClas: g' = g + wd * p; v = mu * v + g'; p -= lr * v (on every parameter).
    lr, mu, wd = 0.1, 0.9, 0.01
    tx = create_optimizer(config(schedule="constant", weight_decay=wd, momentum=mu, base_lr=lr))
    p0 = {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([0.5])}
    grads = [{"kernel": jnp.array([[0.3, 0.1]]), "bias": jnp.array([-0.2])}] * 2 + [
        {"kernel": jnp.array([[-1.0, 0.0]]), "bias": jnp.array([0.4])}
    ]
    got = run(tx, p0, grads)
    for name in p0:
        p, v = np.asarray(p0[name], np.float64), 0.0
        for g in grads:
            v = mu * v + np.asarray(g[name]) + wd * p
            p = p - lr * v
        np.testing.assert_allclose(got[name], p, rtol=1e-6)


def test_nesterov_decoupled_decay_on_kernels_only():
    # g' = g + mu * (mu * v + g) (Nesterov), p -= lr * (g' + wd * p) for kernels, lr * g' for the rest.
    lr, mu, wd = 0.05, 0.9, 0.1
    cfg = config(schedule="constant", base_lr=lr, momentum=mu, nesterov=True, weight_decay=wd,
                 weight_decay_mode="decoupled", weight_decay_on="kernels")
    tx = create_optimizer(cfg)
    p0 = {"kernel": jnp.array([[1.0, -2.0]]), "scale": jnp.array([2.0])}
    grads = [{"kernel": jnp.array([[0.3, 0.1]]), "scale": jnp.array([-0.2])}, {"kernel": jnp.array([[0.0, 1.0]]), "scale": jnp.array([0.1])}]
    got = run(tx, p0, grads)
    for name in p0:
        p, v = np.asarray(p0[name], np.float64), 0.0
        for g in grads:
            g = np.asarray(g[name], np.float64)
            v = mu * v + g
            step = g + mu * v
            if name == "kernel":
                step = step + wd * p
            p = p - lr * step
        np.testing.assert_allclose(got[name], p, rtol=1e-6)


def test_learning_rate_scales_with_global_batch():
    cfg = TrainConfig(dataset="digits", base_lr=0.05, base_batch_size=128, global_batch_size=1024)
    assert cfg.peak_lr() == pytest.approx(0.4)


def test_label_smoothing_cross_entropy():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    logp = np.asarray(jax.nn.log_softmax(logits))[0]
    plain = float(cross_entropy(logits, jnp.array([0]))[0])
    assert plain == pytest.approx(-logp[0], rel=1e-6)
    eps = 0.3  # target: (1 - eps) one-hot + eps / 3 everywhere
    smooth = float(cross_entropy(logits, jnp.array([0]), eps)[0])
    targets = np.array([1 - eps + eps / 3, eps / 3, eps / 3])
    assert smooth == pytest.approx(-(targets * logp).sum(), rel=1e-6)


def test_ema_update():
    ema = {"a": jnp.array([1.0, 2.0])}
    new = {"a": jnp.array([3.0, 0.0])}
    out = ema_update(ema, new, 0.9)
    np.testing.assert_allclose(out["a"], [0.9 * 1 + 0.1 * 3, 0.9 * 2], rtol=1e-6)


def test_overrides_parse_types_and_reject_unknown_keys():
    cfg = apply_overrides(config(), ["base_lr=0.2", "--config.nesterov=true", "decay_epochs=(1, 2)",
                                     "ema_decay=0.99", "model_overrides.bn_momentum=0.5", "epochs=3"])
    assert cfg.base_lr == 0.2 and cfg.nesterov is True and cfg.decay_epochs == (1, 2)
    assert cfg.ema_decay == 0.99 and cfg.model_overrides == {"bn_momentum": 0.5} and cfg.epochs == 3.0
    with pytest.raises(ValueError, match="unknown key 'lr'"):
        apply_overrides(config(), ["lr=0.1"])
    with pytest.raises(ValueError, match="schedule"):
        apply_overrides(config(), ["schedule=exp"])
    with pytest.raises(ValueError, match="global_batch_size"):
        apply_overrides(config(), ["global_batch_size=abc"])
    assert dataclasses.asdict(config()) == dataclasses.asdict(apply_overrides(config(), []))
