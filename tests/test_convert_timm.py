"""Parity with timm (the official layout) on random weights: safetensors and .pth import,
export back to timm (strict load, same logits), and our own checkpoint format."""

from __future__ import annotations

import subprocess
import sys
import types

import jax
import numpy as np
import pytest
import timm
import torch
from convert_support import assert_logits_match, images, randomize_torch_bn
from safetensors.numpy import load_file
from safetensors.torch import load_file as torch_load_file
from safetensors.torch import save_file

from hrnet_flax import load_pretrained, save_checkpoint
from hrnet_flax.weights.convert import export_timm
from hrnet_flax.models.registry import get_config

TIMM_ARCHS = ["hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18"]


def _timm_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


@pytest.fixture(scope="module", params=TIMM_ARCHS)
def ref(request, tmp_path_factory):
    """A randomised timm model saved both ways, its logits, and our converted model."""
    name = request.param
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    randomize_torch_bn(model)
    folder = tmp_path_factory.mktemp(name)
    state = model.state_dict()
    save_file(state, folder / "model.safetensors")
    torch.save(state, folder / "model.pth")
    x = images()
    flax_model, variables = load_pretrained(str(folder / "model.safetensors"))
    return types.SimpleNamespace(
        name=name,
        folder=folder,
        state={k: v.numpy() for k, v in state.items()},
        x=x,
        logits=_timm_logits(model, x),
        model=flax_model,
        variables=variables,
        apply=flax_model.apply,  # eager: op-by-op is far cheaper than compiling a whole W18 once
    )


def _assert_same_tree(a, b) -> None:
    fa, fb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def test_safetensors_parity(ref):
    assert ref.model.config == get_config(ref.name)
    assert ref.model.num_classes == 1000
    assert_logits_match(ref.apply(ref.variables, ref.x), ref.logits, f"{ref.name} safetensors")


def test_pth_parity(ref):
    model, variables = load_pretrained(str(ref.folder / "model.pth"))
    assert model.config == ref.model.config
    _assert_same_tree(variables, ref.variables)
    assert_logits_match(ref.apply(variables, ref.x), ref.logits, f"{ref.name} .pth")


def test_export_to_timm_roundtrip_and_strict_load(ref, tmp_path):
    out = tmp_path / "export.safetensors"
    export_timm(out, ref.variables, arch=ref.name)
    exported = load_file(out)
    assert sorted(exported) == sorted(ref.state)
    for key, value in ref.state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    model = timm.create_model(ref.name).eval()
    model.load_state_dict(torch_load_file(out), strict=True)
    np.testing.assert_allclose(_timm_logits(model, ref.x), ref.logits, rtol=0, atol=1e-5 * np.abs(ref.logits).max())
    _, again = load_pretrained(str(out))
    _assert_same_tree(again, ref.variables)


def test_own_checkpoint_roundtrip(ref, tmp_path):
    out = tmp_path / "ours.safetensors"
    save_checkpoint(out, ref.variables, arch=ref.name, num_classes=1000, epoch=3, note="test")
    from safetensors import safe_open

    with safe_open(str(out), "numpy") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["arch"] == ref.name and meta["num_classes"] == "1000" and meta["format"] == "hrnet_flax"
    assert meta["format_version"] == "1" and meta["epoch"] == "3" and meta["note"] == "test"
    assert "params/conv1/conv/kernel" in keys and "batch_stats/conv1/bn/mean" in keys
    model, variables = load_pretrained(str(out))
    assert model.config == ref.model.config
    _assert_same_tree(variables, ref.variables)


def test_pth_reader_needs_no_torch(ref):
    """The .pth reader runs in a process where importing torch fails."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from hrnet_flax.weights.checkpoint_io import read_any\n"
        f"arrays, _, kind = read_any({str(ref.folder / 'model.pth')!r})\n"
        "print(kind, len(arrays), float(arrays['conv1.weight'].sum()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kind, count, total = out.stdout.split()
    assert kind == "torch" and int(count) == len(ref.state)
    assert np.isclose(float(total), ref.state["conv1.weight"].sum(), rtol=1e-5)
