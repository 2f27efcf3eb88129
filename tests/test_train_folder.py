"""Fine-tuning on an image folder end to end, as the README runs it: `experiments/train.py` with
`experiments/configs/finetune.py:<checkpoint>` on `ROOT/<class>/<image>` (through
`hrnet_flax.data.pipeline.train_dataset` / `eval_dataset`), starting from a `save_checkpoint` file."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from data_support import cpu_env, make_folder

STEPS = 2


def flat(tree, prefix=()) -> dict[str, np.ndarray]:
    """{"a/b/c": array} of a nested dict (orbax restores lists for tuples; the variables are dicts)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, (*prefix, key)))
        else:
            out["/".join((*prefix, key))] = np.asarray(value)
    return out


@pytest.mark.slow
def test_finetune_from_a_checkpoint_on_an_image_folder(tmp_path):
    from hrnet_flax import create_model, is_stacked, load_pretrained, save_checkpoint
    from hrnet_flax.models.initialization import init_variables
    from hrnet_flax.train.checkpoint import checkpoint_manager

    folder = tmp_path / "images"
    good = make_folder(folder)  # 3 classes, 12 readable images of every kind, a corrupt JPEG, a truncated PNG

    # The starting point: a random 10-class hrnet_w18_small whose BatchNorm statistics are marked
    # (means ~ N(0, 1), variances in [0.5, 2]) so they cannot be mistaken for a fresh init (0, 1).
    start = init_variables(create_model("hrnet_w18_small", num_classes=10), jax.random.key(42), (1, 32, 32, 3))
    rng = np.random.default_rng(0)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x: (rng.uniform(0.5, 2.0, x.shape) if path[-1].key == "var" else rng.normal(0.0, 1.0, x.shape)).astype(np.float32),
        start["batch_stats"],
    )
    weights = tmp_path / "start.safetensors"
    save_checkpoint(weights, {"params": start["params"], "batch_stats": stats}, arch="hrnet_w18_small", num_classes=10)

    workdir = tmp_path / "run"
    overrides = {
        "dataset": folder, "num_classes": 3, "model": "hrnet_w18_small", "dtype": "float32", "image_size": 32,
        "eval_image_size": 32, "global_batch_size": 4, "eval_batch_size": 4, "total_steps": STEPS,
        "checkpoint_every_steps": 1, "log_every_steps": 1, "progress_bar": False,
    }
    command = [
        sys.executable, str(ROOT / "experiments" / "train.py"),
        "--config", f"{ROOT / 'experiments' / 'configs' / 'finetune.py'}:{weights}", "--workdir", str(workdir),
        *(f"--config.{k}={v}" for k, v in overrides.items()),
    ]
    proc = subprocess.run(command, env=cpu_env(1), capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    # It trained the steps, evaluated every readable image and said so.
    summary = proc.stdout.strip().splitlines()[-1]
    assert f"hrnet_w18_small on {folder}: {STEPS} steps of 4 images on 1 device(s)" in summary, summary
    assert "validation top-1" in summary and f"({len(good)} images)" in summary, summary
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r["train/loss"]) for r in train)
    assert train[0]["train/learning_rate"] == 0.0 < train[1]["train/learning_rate"]  # the recipe's warmup from 0
    (ev,) = [r for r in records if "eval/top1" in r]
    assert ev["step"] == STEPS and ev["eval/count"] == len(good) and ev["eval/unreadable"] == 2
    assert 0.0 <= ev["eval/top1"] <= ev["eval/top5"] <= 100.0 and np.isfinite(ev["eval/loss"])
    assert sorted(os.listdir(workdir / "checkpoints"), key=int) == [str(s) for s in range(1, STEPS + 1)]

    # The backbone came from the checkpoint file: after step 1 (learning rate 0) every parameter but
    # the new 3-class classifier is the file's, bit for bit; BatchNorm statistics are the file's
    # decayed by the momentum, 0.9 * start + 0.1 * batch (a slope of 0.9 against the marked values).
    import orbax.checkpoint as ocp

    step1 = checkpoint_manager(str(workdir), 2).restore(1, args=ocp.args.StandardRestore())
    assert not is_stacked(step1)  # the canonical layout
    params, saved = flat(step1["params"]), flat(start["params"])
    assert set(params) == set(saved)
    backbone = [k for k in params if not k.startswith("classifier/")]
    assert len(backbone) > 250
    changed = [k for k in backbone if not np.array_equal(params[k], saved[k])]
    assert not changed, f"step 1 does not start from the checkpoint's parameters: {changed[:5]}"
    assert params["classifier/kernel"].shape == (saved["classifier/kernel"].shape[0], 3)
    new_stats, marked = flat(step1["batch_stats"]), flat(stats)
    assert set(new_stats) == set(marked)
    for kind in ("mean", "var"):
        keys = [k for k in marked if k.endswith(kind)]
        x = np.concatenate([marked[k].ravel() for k in keys])
        y = np.concatenate([new_stats[k].ravel() for k in keys])
        slope = np.polyfit(x, y, 1)[0]
        assert 0.85 < slope < 0.95, f"BatchNorm {kind}s after step 1 vs the checkpoint's: slope {slope:.3f}, expected 0.9"

    # The exported model: 3 classes, trained away from the start (step 2 has a positive learning rate).
    model, final = load_pretrained(str(workdir / "model.safetensors"))
    assert model.num_classes == 3
    final = flat(final["params"])
    moved = [k for k in backbone if not np.array_equal(final[k], saved[k])]
    assert len(moved) > 0.9 * len(backbone)
