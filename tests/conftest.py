"""Shared test setup: the persistent compilation cache and the reference environments."""

import os
import pathlib
import tempfile

import pytest

from hrnet_flax.runtime import enable_compilation_cache, use_fast_cpu_flags

# timm before TensorFlow: a process that converts a TFLite model (TensorFlow's MLIR/LLVM) and then
# imports timm crashes in triton's LLVM (segfault in libtriton.so; torch 2.14, TensorFlow 2.21); in
# the other order both work. Each test worker runs export tests and PyTorch reference tests.
import timm  # noqa: E402,F401

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Tests compile far more than they run: LLVM at optimisation level 0 compiles a W18-Small
# training step's float64 gradients in 25 s instead of 38 s (2-core AVX-512 machine). Results
# differ from XLA's default level by float32 rounding only (W18-Small logits: 1.3e-5 on a scale of
# 10.7), as between two CPUs. The product's entry points keep XLA's default.
COMPILE_FAST = "--xla_backend_optimization_level=0"
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level=" not in USER_XLA_FLAGS:
    os.environ["XLA_FLAGS"] = f"{USER_XLA_FLAGS} {COMPILE_FAST}".strip()


def run_fast_xla_flags() -> str:
    """XLA_FLAGS for a subprocess that runs longer than it compiles (the notebook's three demos):
    the tests' flags at XLA's default level, whose code runs faster (the segmentation demo: 80 s
    against 111 s at level 0), or the user's level."""
    if "--xla_backend_optimization_level=" in USER_XLA_FLAGS:
        return os.environ["XLA_FLAGS"]
    return " ".join(f for f in os.environ["XLA_FLAGS"].split() if f != COMPILE_FAST)


use_fast_cpu_flags()  # before any test starts JAX's backend; subprocesses inherit it
enable_compilation_cache()


# The files that take longest, longest first (seconds of one worker, full suite, 2-core machine:
# 320, 250, 210, 205, 150, 135, 130-185; the rest under 100). Two workers that start these first
# finish within seconds of each other; started last, the notebook would run on alone for minutes.
LONGEST_FIRST = ("test_notebook.py", "test_train_parallel.py", "test_export.py", "test_speed_transforms.py",
                 "test_train.py", "test_benchmark.py", "test_model.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    """Longest files first; the rest, and the tests inside each file, in their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def paddle_python() -> str:
    """The interpreter of the PaddleClas reference environment (setup.sh --test makes it)."""
    path = pathlib.Path(os.environ.get("HRNET_PADDLE_PYTHON", ROOT / ".venv-paddle" / "bin" / "python"))
    if not path.exists():
        pytest.fail(f"PaddleClas reference environment missing: {path}; run `bash setup.sh --test`")
    return str(path)


@pytest.fixture(scope="session", autouse=True)
def library_temporary_files_under_pytest(tmp_path_factory):
    """Temporary files that libraries make in this process (tensorflow-datasets leaves an empty
    `tmp*tfds` folder per prepared dataset) go under pytest's base temp, not /tmp."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tempfile")))
        yield
