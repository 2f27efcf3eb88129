"""The benchmark runs end to end at a tiny size (speed itself is never asserted in tests)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_benchmark_runs_and_writes_a_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--variants", "hrnet_w18_small",
           "--sizes", "32", "--batch", "2", "--tasks", "infer", "train", "pipeline", "--repeats", "2", "--warmup", "0",
           "--pipeline-images", "16", "--pipeline-seconds", "2", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| hrnet_w18_small | 32 | infer | 2 |" in result.stdout
    report = json.loads(out.read_text())
    rows = {r["task"]: r for r in report["rows"]}
    assert set(rows) == {"infer", "train", "pipeline"}
    pipeline = rows.pop("pipeline")
    assert pipeline["train_images_per_s"] > 0 and pipeline["eval_images_per_s"] > 0
    assert "input pipeline 32px: train augmentation" in result.stdout
    for task, row in rows.items():
        for key in ("ours", "timm", "timm-cl"):
            assert row[key]["images_per_s"] > 0, (task, key)
        assert row["ratio_vs_best_timm_eager"] > 0
        assert row["ours"]["compile_s"] > 0
    assert "ours-bn" in rows["infer"] and "ours-bn" not in rows["train"]
    # `--scan auto`: the forward scanned as the CLI runs it, the step as the training loop on one CPU device
    assert rows["infer"]["ours"]["scan"] and rows["train"]["ours"]["scan"]
    assert report["machine"]["backend"] == "cpu"


def test_conv_layers_times_every_convolution_of_the_model(tmp_path):
    from hrnet_flax import info

    out = tmp_path / "layers.json"
    cmd = [sys.executable, str(ROOT / "experiments" / "conv_layers.py"), "--variant", "hrnet_w18_small",
           "--size", "64", "--batch", "2", "--repeats", "1", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    layers, _ = info.layers("hrnet_w18_small", 64)
    convs = [layer for layer in layers if layer.kind == "conv"]
    assert sum(row["count"] for row in report["rows"]) == len(convs)
    assert len(report["rows"]) == len(set(convs))
    for row in report["rows"]:
        for who in ("ours", "torch"):
            assert all(row[who][part] > 0 for part in ("fwd", "dx", "dw")), row
    assert set(report["totals_ms"]) == {"ours", "torch"} and report["machine"]["backend"] == "cpu"
    assert "ours, whole model (ms per batch)" in result.stdout
