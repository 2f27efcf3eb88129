"""`python -m hrnet_flax convert`: both directions, class-count change, and bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from convert_support import synthetic_state_dict
from safetensors import safe_open
from safetensors.numpy import load_file

from hrnet_flax.cli import main


@pytest.fixture(scope="module")
def small_pth(tmp_path_factory):
    state = synthetic_state_dict("hrnet_w18_small", "timm")
    path = tmp_path_factory.mktemp("cli") / "small.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path, state


def test_timm_to_flax_to_timm(small_pth, tmp_path, capsys):
    src, state = small_pth
    ours, back = tmp_path / "ours.safetensors", tmp_path / "back.safetensors"
    assert main(["convert", str(src), str(ours)]) == 0
    assert "hrnet_w18_small" in capsys.readouterr().out
    with safe_open(str(ours), "numpy") as f:
        assert f.metadata()["arch"] == "hrnet_w18_small" and f.metadata()["source"] == str(src)
        np.testing.assert_array_equal(f.get_tensor("params/conv1/conv/kernel"), state["conv1.weight"].transpose(2, 3, 1, 0))
    assert main(["convert", str(ours), str(back), "--to", "timm"]) == 0
    exported = load_file(back)
    assert {k for k in exported if not k.endswith("num_batches_tracked")} == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.safetensors", "ours.safetensors"]  # no temp files


def test_paddle_to_timm_ssld_layout(tmp_path):
    state = synthetic_state_dict("hrnet_w18_c", "paddle")
    src = tmp_path / "w18.pdparams"
    src.write_bytes(pickle.dumps(state, protocol=4))
    dst = tmp_path / "w18_ssld.safetensors"
    assert main(["convert", str(src), str(dst), "--to", "timm", "--arch", "hrnet_w18_ssld"]) == 0
    out = load_file(dst)
    assert "final_layer.0.bias" not in out and "final_layer.0.weight" in out
    np.testing.assert_array_equal(out["classifier.weight"], state["fc.weight"].T)
    # flat (i, j, k) order over 4 branches: (3, 0, 2) is entry 12
    np.testing.assert_array_equal(out["stage4.2.fuse_layers.3.0.2.1.running_var"],
                                  state["st4.stage_func_list.2.fuse_func.residual_func_list.12.bn._variance"])


def test_num_classes_option(small_pth, tmp_path, capsys):
    dst = tmp_path / "ten.safetensors"
    with pytest.warns(UserWarning, match="re-initialised"):
        assert main(["convert", str(small_pth[0]), str(dst), "--num-classes", "10"]) == 0
    with safe_open(str(dst), "numpy") as f:
        assert f.metadata()["num_classes"] == "10" and f.get_tensor("params/classifier/kernel").shape == (2048, 10)


@pytest.mark.parametrize("problem", ["truncated", "width", "unknown-name", "not-checkpoint"])
def test_bad_input_exits_nonzero_without_output(problem, small_pth, tmp_path, capsys):
    src = tmp_path / "bad.pth"
    args = []
    if problem == "truncated":
        data = small_pth[0].read_bytes()
        src.write_bytes(data[: len(data) - 1000])
        expect = "truncated"
    elif problem == "width":
        src = small_pth[0]
        args, expect = ["--arch", "hrnet_w18_small_v2"], "missing key"
    elif problem == "unknown-name":
        src, expect = "hrnet_w18_c.paddle_inik", "hrnet_w18_c.paddle_in1k"
    else:
        src.write_text("just text")
        expect = "not a checkpoint"
    dst = tmp_path / "out" / "dst.safetensors"
    assert main(["convert", str(src), str(dst), *args]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and expect in err, err
    if problem != "unknown-name":
        assert str(src) in err
    assert not dst.exists() and not (dst.parent.exists() and any(dst.parent.iterdir()))
