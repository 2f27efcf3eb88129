"""The benchmark runs end to end at a tiny size (speed itself is never asserted in tests)."""

import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
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


@pytest.mark.slow
def test_benchmark_times_the_dense_models_against_their_pytorch_references(tmp_path):
    """Segmentation and pose: ours (the task's training step, inference, latency) beside the official
    PyTorch networks, eager NCHW and channels-last, at an HxW size (one run, the smallest models)."""
    out = tmp_path / "dense.json"
    cmd = [sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--variants", "hrnetv2_w18_small_seg",
           "pose_hrnet_w18_small", "--sizes", "64x32", "--batch", "2", "--tasks", "train", "infer", "latency",
           "--repeats", "2", "--warmup", "0", "--no-unfolded", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["task"]) for r in rows] == [
        (v, t) for v in ("hrnetv2_w18_small_seg", "pose_hrnet_w18_small") for t in ("train", "infer", "latency")
    ]  # tasks in the order given
    for row in rows:
        assert row["size"] == "64x32" and row["batch"] == (1 if row["task"] == "latency" else 2)
        for key in ("ours", "torch", "torch-cl"):
            assert row[key]["ms_per_step"] > 0, (row["variant"], row["task"], key)
        assert row["ratio_vs_best_torch_eager"] > 0 and "timm" not in row and "onnxrt" not in row
    assert "| pose_hrnet_w18_small | 64x32 | train | 2 |" in result.stdout


def test_scaling_on_paper_from_the_kept_h200_step(tmp_path, capsys):
    """experiments/scaling.py on the kept H200 W18 training step: its table's arithmetic."""
    spec = importlib.util.spec_from_file_location("scaling", ROOT / "experiments" / "scaling.py")
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    source = ROOT / "experiments" / "results" / "gpu-h200_2026-11-30" / "w18_bf16_b256_train_plain.json"
    out = tmp_path / "scaling.json"
    assert scaling.main([str(source), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["variant"] == "hrnet_w18" and report["batch_per_device"] == 256
    assert report["params"] == 21_299_004 and report["step_ms"] == pytest.approx(160.63, abs=0.01)
    step = report["step_ms"]
    assert len(report["rows"]) == 12  # 2 networks x 3 scales x 2 gradient precisions
    row = next(r for r in report["rows"] if r["network"] == "H200" and r["devices"] == 64 and r["gradient_dtype"] == "float32")
    assert row["gradient_mb"] == pytest.approx(4 * report["params"] / 1e6)
    assert row["ring_volume_mb"] == pytest.approx(2 * 63 / 64 * row["gradient_mb"])
    # hierarchical: NVLink inside the 8-GPU node, then each GPU's eighth across the 8 nodes on InfiniBand
    net = scaling.NETWORKS["H200"]
    expected = 2 * 7 / 8 * row["gradient_mb"] * 1e6 / net["intra_bw"] + 2 * 7 / 8 * row["gradient_mb"] * 1e6 / 8 / net["inter_bw"]
    assert row["allreduce_ms"] == pytest.approx(1e3 * expected)
    assert row["batchnorm_ms"] == pytest.approx(1e3 * 2 * report["batchnorm_layers"] * net["latency"][64])
    assert row["efficiency_no_overlap"] == pytest.approx(step / (step + row["allreduce_ms"] + row["batchnorm_ms"]))
    assert row["efficiency_no_overlap"] <= row["efficiency_overlap"] < 1
    printed = capsys.readouterr().out
    assert "| 64 x H200 | float32 | 85.2 | 167.7 |" in printed and "measured step 160.6 ms at batch 256" in printed


@pytest.mark.slow
def test_conv_layers_times_every_convolution_of_the_model(tmp_path):
    from hrnet_flax.models import info

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


def test_importing_the_benchmark_sets_the_fast_cpu_flags():
    """A script that imports benchmark.py (or conv_layers.py) and times `ours` gets the entry points' flags."""
    from hrnet_flax.runtime import FAST_CPU_FLAGS

    code = "import os, sys; sys.path.insert(0, 'experiments'); import conv_layers; print(os.environ['XLA_FLAGS'])"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name, value in FAST_CPU_FLAGS.items():
        assert f"--{name}={value}" in result.stdout


def _gpu_bench_runs() -> list[tuple[dict, list[str]]]:
    """(environment assignments, benchmark arguments) of every `part` in experiments/gpu_bench.sh."""
    script = (ROOT / "experiments" / "gpu_bench.sh").read_text().replace("\\\n", " ")
    runs, fixed = [], None
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if "experiments/benchmark.py" in words and words[-1] == "$@":  # inside `part`: its own arguments
            fixed = words[words.index("experiments/benchmark.py") + 1 : -1]
        env = {}
        while words and "=" in words[0] and words[0].split("=")[0].isidentifier():
            name, value = words.pop(0).split("=", 1)
            env[name] = value.replace("${XLA_FLAGS:-}", "").strip()
        if words[:1] == ["part"]:
            box, name, *args = words[1:]
            assert fixed, "the benchmark call inside `part` comes first"
            args = args[: args.index("||")] if "||" in args else args
            runs.append((env, [*fixed, *args]))
            assert int(box) > 0, line
    return runs


def test_gpu_bench_runs_parse_as_benchmark_arguments():
    """The GPU script cannot run here; its shell syntax, every run's arguments and its XLA flags can be checked."""
    assert subprocess.run(["bash", "-n", str(ROOT / "experiments" / "gpu_bench.sh")]).returncode == 0
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "experiments" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    runs = _gpu_bench_runs()
    assert len(runs) >= 5, runs
    script = (ROOT / "experiments" / "gpu_bench.sh").read_text()
    budget = int(re.search(r"BUDGET_S=\$\{BUDGET_S:-(\d+)\}", script).group(1))
    boxes = [int(b) for b in re.findall(r"^\s*part (\d+) ", script, re.M)]
    assert len(boxes) == len(runs) and sum(boxes) <= budget <= 480, (boxes, budget)  # every box fits in 8 minutes
    tasks = set()
    for env, args in runs:
        parsed = benchmark.parser().parse_args(args)  # SystemExit on an unknown or malformed argument
        tasks.update(parsed.tasks)
    assert tasks == {"latency", "train", "infer"}
    with pytest.raises(SystemExit):  # an abbreviated option is refused, not read as the full name
        benchmark.parser().parse_args(["--variant", "hrnet_w18"])
    flags = {env["XLA_FLAGS"] for env, _ in runs if "XLA_FLAGS" in env}
    assert flags, "the command-buffer latency run sets XLA_FLAGS"
    for value in flags:  # XLA parses every backend's flags, and aborts on a misspelt one
        env = {**os.environ, "XLA_FLAGS": value, "JAX_PLATFORMS": "cpu"}
        result = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.ones(1).block_until_ready()"],
                                env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, (value, result.stderr[-2000:])
