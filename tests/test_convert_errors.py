"""Layout/arch detection and every bad input: one clear CheckpointError naming file and problem."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from convert_support import synthetic_state_dict
from safetensors.numpy import save_file

from hrnet_flax import load_pretrained
from hrnet_flax.weights.checkpoint_io import CheckpointError, read_pdparams
from hrnet_flax.models.config import ARCHS
from hrnet_flax.weights.convert import detect_arch, detect_layout, from_variables, save_checkpoint, to_variables
from hrnet_flax.weights.layouts import fuse_index, key_table
from hrnet_flax.weights.pretrained import get_pretrained


@pytest.mark.parametrize(
    "arch,layout",
    [  # the slow cases: more widths in a layout the fast ones detect already
        ("hrnet_w18_small", "timm"),
        ("hrnet_w18_small_v2", "timm"),
        pytest.param("hrnet_w32", "timm", marks=pytest.mark.slow),
        ("hrnet_w64", "timm"),
        pytest.param("hrnet_w48_c", "paddle", marks=pytest.mark.slow),
        ("se_hrnet_w64_c", "paddle"),
        pytest.param("hrnet_w30_c", "paddle", marks=pytest.mark.slow),
        ("se_hrnet_w18_c", "paddle2"),
        pytest.param("hrnet_w44_c", "paddle2", marks=pytest.mark.slow),
        ("hrnet_w40_c", "mmpretrain"),
        ("hrnet_w18_ssld", "timm"),
    ],
)
def test_detects_layout_and_arch(arch, layout):
    state = synthetic_state_dict(arch, layout, zeros=True)
    assert detect_layout(state, {}, "x") == layout
    found = detect_arch(state, layout, "x")
    assert ARCHS[found] == ARCHS[arch]
    assert found == arch.replace("_ssld", "_c")  # equal configs resolve to the _c name


def test_paddle_fuse_index_is_flat_i_j_k_order():
    order = [(1, 0, 0), (2, 0, 0), (2, 0, 1), (2, 1, 0)]  # with (0, 1, None), (0, 2, None) first
    assert fuse_index(0, 1, None, 3) == 0 and fuse_index(0, 2, None, 3) == 1
    assert [fuse_index(*o, 3) for o in order] == [2, 4, 5, 6]  # (1, 2, None) sits at 3
    assert fuse_index(1, 2, None, 3) == 3


def _save(tmp_path, state, name="model.safetensors"):
    path = tmp_path / name
    save_file(state, str(path))
    return str(path)


def test_width_mismatch_names_first_key_and_shapes(tmp_path):
    path = _save(tmp_path, synthetic_state_dict("hrnet_w18", "timm", zeros=True))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(path, arch="hrnet_w32")
    msg = str(e.value)
    assert path in msg and "'layer1.0.conv1.weight'" not in msg  # the stem and stage 1 agree
    assert "transition1.0.0.weight" in msg and "(18, 256, 3, 3)" in msg and "(32, 256, 3, 3)" in msg
    assert "looks like hrnet_w18" in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = synthetic_state_dict("hrnet_w18_small", "timm")
    del state["stage3.0.fuse_layers.2.0.1.0.weight"]
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(_save(tmp_path, state))
    msg = str(e.value)
    assert "1 missing key(s): stage3.0.fuse_layers.2.0.1.0.weight" in msg
    assert "1 unexpected key(s): extra.weight" in msg


def test_se_weights_into_plain_arch_lists_se_keys(tmp_path):
    state = synthetic_state_dict("se_hrnet_w18_c", "paddle", zeros=True)
    path = tmp_path / "se.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): .*se\.fc_"):
        load_pretrained(str(path), arch="hrnet_w18_c")


def test_head_bias_mismatch(tmp_path):
    path = _save(tmp_path, synthetic_state_dict("hrnet_w18_small", "timm"))
    with pytest.raises(CheckpointError, match="hrnet_w18_small"):
        load_pretrained(path, arch="hrnet_w18_c")


def test_truncated_files(tmp_path):
    state = synthetic_state_dict("hrnet_w18_small", "timm")
    full = _save(tmp_path, state)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "model.pth")
    (tmp_path / "model.pdparams").write_bytes(pickle.dumps(synthetic_state_dict("hrnet_w18_c", "paddle", zeros=True), protocol=4))
    for name in ("model.safetensors", "model.pth", "model.pdparams"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError) as e:
            load_pretrained(str(cut))
        assert str(cut) in str(e.value) and ("truncated" in str(e.value) or "corrupt" in str(e.value)), str(e.value)
    assert full


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_pretrained(str(text))
    other = _save(tmp_path, {"layer.weight": np.zeros((2, 2), np.float32)}, "other.safetensors")
    with pytest.raises(CheckpointError, match="not an HRNet checkpoint"):
        load_pretrained(other)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_pretrained(str(tmp_path / "nowhere.pth"))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"conv1.weight": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_pdparams(path)


def test_paddle_split_big_arrays_are_rejoined(tmp_path):
    big = np.arange(24, dtype=np.float32).reshape(4, 6)
    blob = {
        "fc.weight@@.0": big.ravel()[:10],
        "fc.weight@@.1": big.ravel()[10:],
        "UnpackBigParamInfor@@": {"fc.weight": {"OriginShape": (4, 6), "slices": ["fc.weight@@.0", "fc.weight@@.1"]}},
        "StructuredToParameterName@@": {"fc.weight": "linear_0.w_0"},
    }
    path = tmp_path / "split.pdparams"
    path.write_bytes(pickle.dumps(blob, protocol=2))
    np.testing.assert_array_equal(read_pdparams(path)["fc.weight"], big)


def test_unknown_pretrained_name_lists_close_ones():
    with pytest.raises(CheckpointError) as e:
        get_pretrained("hrnet_w18_c.padle_in1k")
    assert "hrnet_w18_c.paddle_in1k" in str(e.value)


def test_num_classes_change_reinitialises_classifier(tmp_path):
    path = _save(tmp_path, synthetic_state_dict("hrnet_w18_small", "timm"))
    with pytest.warns(UserWarning, match="1000 classes.*10 classes"):
        model, variables = load_pretrained(path, num_classes=10)
    assert model.num_classes == 10 and variables["params"]["classifier"]["kernel"].shape == (2048, 10)
    with pytest.warns(UserWarning, match="dropped the classifier"):
        model, variables = load_pretrained(path, num_classes=0)
    assert model.num_classes == 0 and "classifier" not in variables["params"]


def _flax_variables(arch: str) -> dict:
    return to_variables(synthetic_state_dict(arch, "flax", zeros=True), key_table(ARCHS[arch], 1000, "flax"), "synthetic")


def test_se_cannot_be_exported_to_timm():
    variables = _flax_variables("se_hrnet_w18_c")
    with pytest.raises(CheckpointError, match="SE blocks"):
        from_variables(variables, "se_hrnet_w18_c", "timm")
    assert len(from_variables(variables, "se_hrnet_w18_c", "paddle")) == len(key_table(ARCHS["se_hrnet_w18_c"], 1000, "paddle"))


def test_saving_variables_of_another_arch_fails(tmp_path):
    variables = _flax_variables("hrnet_w18_small")
    with pytest.raises(CheckpointError, match="do not fit hrnet_w18_small_v2: missing"):
        save_checkpoint(tmp_path / "x.safetensors", variables, arch="hrnet_w18_small_v2", num_classes=1000)
    with pytest.raises(CheckpointError, match="num_classes=10 but the variables' classifier has 1000"):
        save_checkpoint(tmp_path / "x.safetensors", variables, arch="hrnet_w18_small", num_classes=10)
    assert list(tmp_path.iterdir()) == []


def test_legacy_torch_file_loads(tmp_path):
    """A pre-1.6 (non-zip) file loads like a zip one (reading it without torch: test_checkpoint_legacy.py)."""
    state = synthetic_state_dict("hrnet_w18_small", "timm")
    path = tmp_path / "legacy.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path, _use_new_zipfile_serialization=False)
    model, variables = load_pretrained(str(path))
    np.testing.assert_array_equal(np.asarray(variables["params"]["classifier"]["bias"]), state["classifier.bias"])


def test_whole_module_pickle_is_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match=r"refusing to load torch\.nn.*state_dict"):
        load_pretrained(str(path))
