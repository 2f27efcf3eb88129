"""Shared test setup: the persistent compilation cache and the reference environments."""

import os
import pathlib
import tempfile

import pytest

from hrnet_flax.runtime import enable_compilation_cache, use_fast_cpu_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
use_fast_cpu_flags()  # before any test starts JAX's backend; subprocesses inherit it
enable_compilation_cache()


# The files that run longest, longest first. pytest-xdist hands a worker one file at a time in
# collection order (`--dist loadfile --no-loadscope-reorder`, pyproject.toml); starting these first
# keeps both workers busy to the end instead of leaving a several-minute file for last.
LONGEST_FIRST = (
    "test_notebook.py",
    "test_train_parallel.py",
    "test_speed_transforms.py",
    "test_train.py",
    "test_conv.py",
    "test_benchmark.py",
    "test_seg_train.py",
    "test_pose_weights.py",
    "test_seg_weights.py",
    "test_pose_cli.py",
    "test_seg_cli.py",
)


def pytest_collection_modifyitems(config, items):
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
