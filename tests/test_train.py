"""The training loop on one device: the demo end to end, SIGTERM + resume, a non-finite loss stop,
a new task through the same loop.

All runs share one short config (the demo's, with EMA and label smoothing switched on), so
the train step compiles once; the later runs load it from the persistent compilation cache.
"""

import contextlib
import importlib.util
import io
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from hrnet_flax import cli
from hrnet_flax.data import digits as demo_data
from hrnet_flax.tasks import Classification
from hrnet_flax.train.checkpoint import checkpoint_manager
from hrnet_flax.train.config import apply_overrides, demo_config, load_config
from hrnet_flax.train.loop import NonFiniteLossError, resolve_config, summary_line, train_and_evaluate
from hrnet_flax.train.optim import learning_rate_schedule

SHORT = [
    "global_batch_size=16",
    "total_steps=6",
    "checkpoint_every_steps=2",
    "log_every_steps=2",
    "eval_every_steps=100",
    "ema_decay=0.5",
    "label_smoothing=0.1",
]


def short_config():
    return apply_overrides(demo_config(), SHORT)


def restore_raw(workdir, step: int) -> dict:
    """A checkpoint as saved (nested dicts of arrays), without a target structure."""
    import orbax.checkpoint as ocp

    return checkpoint_manager(str(workdir), 2).restore(step, args=ocp.args.StandardRestore())


def tree_equal(a, b) -> bool:
    """Same leaves in the same order (a raw restore turns optax states into lists and dicts)."""
    leaves_a = jax.tree_util.tree_leaves(jax.device_get(a))
    leaves_b = jax.tree_util.tree_leaves(jax.device_get(b))
    return len(leaves_a) == len(leaves_b) > 0 and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`python -m hrnet_flax demo` (short): stdout and the workdir."""
    workdir = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["demo", "--workdir", str(workdir), "--set", *SHORT])
    assert code == 0
    return out.getvalue(), workdir


def test_demo_trains_evaluates_checkpoints_and_exports(demo_run):
    stdout, workdir = demo_run
    summary = stdout.strip().splitlines()[-1]
    assert "hrnet_w18_small on digits: 6 steps of 16 images" in summary
    assert "validation top-1" in summary and "(359 images)" in summary and "EMA top-1" in summary
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6]
    assert all(np.isfinite(r["train/loss"]) and r["train/images_per_second"] > 0 for r in train)
    schedule = learning_rate_schedule(resolve_config(short_config()))
    lrs = [r["train/learning_rate"] for r in train]  # the lr of the last step logged (0-based 1, 3, 5)
    np.testing.assert_allclose(lrs, [float(schedule(s)) for s in (1, 3, 5)], rtol=1e-5)
    assert 0 < lrs[0] < lrs[1] < lrs[2]  # warming up
    evals = [r for r in records if "eval/top1" in r]
    assert len(evals) == 1 and evals[0]["eval/count"] == 359 and "eval/ema_top1" in evals[0]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]  # keep_checkpoints=2

    from hrnet_flax import load_pretrained

    model, variables = load_pretrained(str(workdir / "model.safetensors"))
    assert checkpoint_manager(str(workdir), 2).latest_step() == 6
    restored = restore_raw(workdir, 6)
    np.testing.assert_array_equal(
        variables["params"]["classifier"]["kernel"], restored["ema"]["params"]["classifier"]["kernel"]
    )  # the exported weights are the EMA ones
    assert model.num_classes == 10


def test_finetune_starts_from_the_exported_weights(demo_run, tmp_path):
    from hrnet_flax.train.step import initial_variables

    _, workdir = demo_run
    weights = str(workdir / "model.safetensors")
    from hrnet_flax import load_pretrained

    _, exported = load_pretrained(weights)
    cfg = apply_overrides(short_config(), [f"pretrained={weights}"])
    assert tree_equal(initial_variables(cfg), exported)
    three = initial_variables(apply_overrides(cfg, ["num_classes=3"]))  # a new head, the rest kept
    assert three["params"]["classifier"]["kernel"].shape[-1] == 3
    np.testing.assert_array_equal(three["params"]["conv1"]["conv"]["kernel"], exported["params"]["conv1"]["conv"]["kernel"])
    with pytest.raises(ValueError, match="hrnet_w18_c"):
        initial_variables(apply_overrides(cfg, ["model=hrnet_w18_c"]))

    # The fine-tuning config: the class count must match the image folder's class folders.
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "train" / name / "a.png")
    configs = ROOT / "experiments" / "configs"
    ft = load_config(f"{configs / 'finetune.py'}:{weights}", [f"dataset={tmp_path}", "num_classes=2", "model=hrnet_w18_small"])
    assert ft.pretrained == weights and resolve_config(ft).train_examples == 2
    with pytest.raises(ValueError, match="has 2 classes"):
        resolve_config(apply_overrides(ft, ["num_classes=5"]))
    with pytest.raises(ValueError, match="num_classes"):
        load_config(configs / "finetune.py", [f"dataset={tmp_path}"])


@pytest.mark.slow
def test_sigterm_then_resume_equals_uninterrupted(tmp_path, demo_run):
    _, reference_dir = demo_run
    reference = restore_raw(reference_dir, 6)

    def preempt(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    first = train_and_evaluate(short_config(), str(tmp_path), step_callback=preempt)
    assert first.preempted and first.step == 3
    assert checkpoint_manager(str(tmp_path), 2).latest_step() == 3
    assert not (tmp_path / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # our handler was removed again
    second = train_and_evaluate(short_config(), str(tmp_path))
    assert not second.preempted and second.step == 6
    state = jax.device_get(second.state)
    for field in ("params", "batch_stats", "opt_state", "ema"):
        assert tree_equal(getattr(state, field), reference[field]), field
    assert int(state.step) == 6


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = demo_data.train_dataset

    def poisoned(*, start_step=0, **kwargs):
        for step, batch in enumerate(original(start_step=start_step, **kwargs), start=start_step):
            if step == 4:  # the fifth step sees NaN images
                batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
            yield batch

    monkeypatch.setattr(demo_data, "train_dataset", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"at step 5; the last good checkpoint is step 4"):
        train_and_evaluate(short_config(), str(tmp_path))
    manager = checkpoint_manager(str(tmp_path), 2)
    assert manager.all_steps() == [2, 4]
    params = restore_raw(tmp_path, 4)["params"]
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_launch_script_and_configs(tmp_path):
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "experiments" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args, overrides = script.parse_args(["--config", "c.py", "--workdir", "w", "--config.base_lr=0.2", "--config.epochs=3"])
    assert args.config == "c.py" and overrides == ["base_lr=0.2", "epochs=3"]
    with pytest.raises(SystemExit):
        script.parse_args(["--config", "c.py", "--workdir", "w", "--bogus"])

    configs = ROOT / "experiments" / "configs"
    paddle = load_config(f"{configs / 'paddleclas.py'}:hrnet_w48_c", ["dataset=/data", "train_examples=1281167"])
    assert (paddle.model, paddle.epochs, paddle.momentum, paddle.nesterov) == ("hrnet_w48_c", 120, 0.9, False)
    assert (paddle.weight_decay, paddle.weight_decay_mode, paddle.weight_decay_on) == (1e-4, "l2", "all")
    assert paddle.decay_epochs == (30, 60, 90) and paddle.peak_lr() == pytest.approx(0.1)
    official = load_config(f"{configs / 'official.py'}:hrnet_w18", ["dataset=/data", "global_batch_size=512"])
    assert official.nesterov and official.epochs == 100 and official.peak_lr() == pytest.approx(0.2)
    modern = load_config(configs / "modern.py", ["dataset=/data"])
    assert modern.ema_decay and modern.label_smoothing > 0 and modern.dtype == "bfloat16" and modern.schedule == "cosine"
    for path in configs.glob("*.py"):
        doc = path.read_text()
        assert '"""' in doc and "Run" in doc, f"{path.name} needs a docstring that says how to run it"
    with pytest.raises(ValueError, match="config.dataset is empty"):
        load_config(configs / "paddleclas.py")
    with pytest.raises(ValueError, match="hrnet_w99_c"):
        load_config(f"{configs / 'paddleclas.py'}:hrnet_w99_c")
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config(configs / "nope.py")


@pytest.mark.slow
def test_bfloat16_step_keeps_float32_state():
    """bfloat16 compute (convolutions in bf16), float32 parameters, statistics, optimizer and EMA."""
    from hrnet_flax.parallel import global_batch, make_mesh
    from hrnet_flax.train.optim import create_optimizer
    from hrnet_flax.train.step import build_model, create_train_state, make_train_step

    cfg = resolve_config(apply_overrides(short_config(), ["dtype=bfloat16", "global_batch_size=8", "warmup_epochs=0"]))
    mesh = make_mesh()
    tx = create_optimizer(cfg)
    state = create_train_state(cfg, tx, mesh)
    before = jax.device_get(state.params)
    step = make_train_step(cfg, build_model(cfg), tx, mesh)
    batch = global_batch(next(demo_data.train_dataset(batch_size_per_process=8, image_size=32)), mesh)
    assert "bf16" in step.lower(state, batch).as_text()
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"])) and 1.0 < float(metrics["loss"]) < 5.0
    leaves = jax.tree_util.tree_leaves((state.params, state.batch_stats, state.opt_state, state.ema))
    assert {x.dtype for x in leaves if x.ndim} == {np.dtype("float32")}
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(jax.device_get(state.params)))]
    assert sum(moved) > 0.9 * len(moved)


@pytest.mark.slow
def test_scanned_step_equals_plain_step():
    """`config.scan` changes only how the step is traced: the same canonical state after a step."""
    from hrnet_flax.parallel import global_batch, make_mesh
    from hrnet_flax.train.optim import create_optimizer
    from hrnet_flax.train.step import build_model, create_train_state, make_train_step

    cfg = resolve_config(short_config())
    mesh = make_mesh(jax.devices()[:1])
    tx = create_optimizer(cfg)
    batch = global_batch(next(demo_data.train_dataset(batch_size_per_process=16, image_size=32)), mesh)
    results = []
    for scan in (False, True):
        state, metrics = make_train_step(cfg, build_model(cfg, scan=scan), tx, mesh)(create_train_state(cfg, tx, mesh), batch)
        results.append(jax.device_get((state.params, state.batch_stats, state.ema, metrics["loss"])))
    (plain, scanned) = results
    assert jax.tree_util.tree_structure(plain) == jax.tree_util.tree_structure(scanned)
    leaves = list(zip(jax.tree_util.tree_leaves_with_path(plain), jax.tree_util.tree_leaves(scanned)))
    assert len(leaves) > 500
    for (path, a), b in leaves:
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5, err_msg=jax.tree_util.keystr(path))
    with pytest.raises(ValueError, match=r"model_overrides sets \['scan'\]: use config.scan"):
        apply_overrides(cfg, ["model_overrides.scan=True"]).validate()


def test_speed_options():
    """Scanned by default on one CPU device only, with explicit convolution gradients on CPUs only;
    an explicit scan=True on several CPU devices is refused while the persistent cache is on
    (XLA:CPU mis-runs such a cached step)."""
    from hrnet_flax.runtime import speed_options

    def resolve_scan(config, platform, num_devices):
        options = speed_options(config.scan, platform=platform, num_devices=num_devices)
        assert options["explicit_conv_grads"] == (options["scan"] and platform == "cpu")
        return options["scan"]

    auto, on, off = short_config(), apply_overrides(short_config(), ["scan=True"]), apply_overrides(short_config(), ["scan=False"])
    assert auto.scan is None
    assert resolve_scan(auto, "cpu", 1) is True
    assert resolve_scan(auto, "cpu", 4) is False
    assert resolve_scan(auto, "gpu", 1) is False
    assert resolve_scan(off, "cpu", 1) is False
    assert resolve_scan(on, "gpu", 8) is True
    assert jax.config.jax_enable_compilation_cache  # conftest turns the cache on
    with pytest.raises(ValueError, match="scan=True on a mesh of 4 CPU devices with the persistent compilation cache on"):
        resolve_scan(on, "cpu", 4)
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        assert resolve_scan(on, "cpu", 4) is True
    finally:
        jax.config.update("jax_enable_compilation_cache", True)


class SquaredError(Classification):
    """Another task through the same loop: the squared error of the softmax to the one-hot label,
    logged as its own metric, with the count of scored examples in its summary."""

    name = "squared_error"

    def loss(self, outputs, batch):
        mask = batch["mask"].astype(jnp.float32)
        error = ((jax.nn.softmax(outputs) - jax.nn.one_hot(batch["label"], outputs.shape[-1])) ** 2).sum(-1)
        loss = (error * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        return loss, {"squared_error": loss}

    def summarize(self, sums, context=None):
        return {**super().summarize(sums), "scored": int(sums["count"])}

    def describe(self, metrics):
        return f"{metrics['scored']} scored, top-1 {metrics['top1']:.2f}%"


@pytest.mark.slow
def test_a_new_task_plugs_into_the_loop(tmp_path, monkeypatch):
    """A task registered in `TASKS` and named by `config.task` sets the loss, the logged metrics,
    the evaluation summary and the summary line, with the loop unchanged (a narrow HRNet keeps
    the compile short)."""
    from hrnet_flax import StageConfig
    from hrnet_flax.tasks import TASKS

    monkeypatch.setitem(TASKS, SquaredError.name, SquaredError)
    narrow = {
        "stages": (StageConfig(1, "bottleneck", (1,), (8,)), StageConfig(1, "basic", (1, 1), (4, 8)),
                   StageConfig(1, "basic", (1, 1, 1), (4, 8, 16)), StageConfig(1, "basic", (1, 1, 1, 1), (4, 8, 16, 32))),
        "head_channels": (8, 16, 32, 64), "num_features": 128, "stem_width": 16,
    }  # fmt: skip
    config = apply_overrides(short_config(), ["task=squared_error", "total_steps=2", "ema_decay=None"])
    config.model_overrides.update(narrow)
    result = train_and_evaluate(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train/squared_error" in r]
    assert [r["step"] for r in logged] == [2] and all(r["train/squared_error"] == r["train/loss"] for r in logged)
    assert 0.0 < logged[0]["train/loss"] <= 2.0 and "train/accuracy" not in logged[0]
    assert result.eval["scored"] == result.eval["count"] == 359 and records[-1]["eval/scored"] == 359
    line = summary_line(config, result, str(tmp_path), 1.0)
    assert "validation 359 scored, top-1" in line, line
    with pytest.raises(ValueError, match="config.task='nope'"):
        apply_overrides(config, ["task=nope"])
