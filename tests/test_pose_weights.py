"""Pose checkpoints: parity with the official deep-high-resolution-net `PoseHighResolutionNet` and
mmpose's top-down heatmap HRNet (PyTorch references in `dense_reference.py`, random weights with
calibrated BatchNorm statistics) through files saved as each codebase saves them, export back, a
pose network from a classification checkpoint, the registry entries, and the errors."""

from __future__ import annotations

import collections
import dataclasses
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from convert_support import assert_logits_match, synthetic_state_dict
from dense_reference import MMPoseHRNet, OfficialPoseHRNet, calibrate, logits
from safetensors.numpy import save_file
from safetensors.torch import load_file as torch_load_file

from hrnet_flax import load_pretrained, save_checkpoint
from hrnet_flax.models.config import ARCHS, POSE_MODELS
from hrnet_flax.models.stacking import model_variables
from hrnet_flax.weights import pretrained as P
from hrnet_flax.weights.checkpoint_io import CheckpointError, read_any
from hrnet_flax.weights.convert import detect_layout, export_timm, from_variables

JOINTS = 17
FLOAT64_TOLERANCE = 1e-10

# name: (arch, how the file was saved, (H, W)); none is the official 256x192
CASES = {
    "official_small": ("pose_hrnet_w18_small", "official", (96, 64)),
    "official_module_small_v2": ("pose_hrnet_w18_small_v2", "official_module", (64, 96)),
    "mmpose_small_v2": ("pose_hrnet_w18_small_v2", "mmpose", (96, 64)),
    "mmpose0_small": ("pose_hrnet_w18_small", "mmpose0", (64, 32)),
    "official_w32": ("pose_hrnet_w32", "official", (64, 96)),
}


def _save(model: torch.nn.Module, path, how: str) -> None:
    """As each codebase saves: the official `final_state.pth` (a bare state dict) or
    `checkpoint.pth` (`module.`-prefixed keys inside a training dict); mmengine's checkpoint dict
    (`meta`, `state_dict` with the input normalisation buffers, `optimizer`); mmpose 0.x
    (`keypoint_head.`)."""
    state = model.state_dict()
    if how == "official":
        torch.save(state, path)
        return
    if how == "official_module":
        state = {f"module.{k}": v for k, v in state.items()}
        torch.save({"epoch": 210, "model": "pose_hrnet", "state_dict": state, "perf": 0.744, "optimizer": {}}, path)
        return
    if how == "mmpose0":
        state = {k.replace("head.", "keypoint_head.", 1): v for k, v in state.items()}
    else:
        state = {**state, "data_preprocessor.mean": torch.zeros(3, 1, 1), "data_preprocessor.std": torch.ones(3, 1, 1)}
    torch.save(
        {
            "meta": {"mmpose_version": "1.0.0", "dataset_meta": {"dataset_name": "coco"}, "epoch": 210},
            "state_dict": collections.OrderedDict(state),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0]}]},
        },
        path,
    )


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Each case built once, on first use: the calibrated reference, its file, heatmaps and our model."""
    built: dict[str, types.SimpleNamespace] = {}

    def get(name: str) -> types.SimpleNamespace:
        if name not in built:
            arch, how, (h, w) = CASES[name]
            torch.manual_seed(0)
            ref = (OfficialPoseHRNet if how.startswith("official") else MMPoseHRNet)(ARCHS[arch], JOINTS)
            calibrate(ref, (2, 3, h, w))
            path = tmp_path_factory.mktemp(name) / "model.pth"
            _save(ref, path, how)
            x = np.random.default_rng(1).normal(size=(2, h, w, 3)).astype(np.float32)
            model, variables = load_pretrained(str(path))
            built[name] = types.SimpleNamespace(
                name=name, arch=arch, how=how, ref=ref, path=path, x=x,
                state={k: v.numpy() for k, v in ref.state_dict().items()},
                heatmaps=logits(ref, x), model=model, variables=variables,
            )
        return built[name]

    return get


def _forward(model, variables, x: np.ndarray) -> np.ndarray:
    """Our heatmaps, from the scanned model under jit (compiles in seconds)."""
    scanned = model.clone(scan=True)
    return np.asarray(jax.jit(scanned.apply)(model_variables(scanned, variables), x))


def _cases(*names: str) -> list:
    """W32 in the full suite only (it compiles a wide network in both precisions)."""
    return [pytest.param(n, marks=pytest.mark.slow) if n.endswith("w32") else n for n in names]


@pytest.mark.parametrize("name", _cases(*CASES))
def test_parity_float32(cases, name):
    case = cases(name)
    assert case.model.config == POSE_MODELS[case.arch] and case.model.num_classes == JOINTS
    ours = _forward(case.model, case.variables, case.x)
    assert ours.shape == (2, case.x.shape[1] // 4, case.x.shape[2] // 4, JOINTS) and ours.dtype == np.float32
    assert_logits_match(ours, case.heatmaps, name)


@pytest.mark.parametrize("name", _cases("official_module_small_v2", "mmpose_small_v2", "official_w32"))
def test_parity_float64(cases, name):
    case = cases(name)
    ref = logits(case.ref, case.x, torch.float64)
    with jax.enable_x64(True):
        model, variables = load_pretrained(str(case.path), dtype=jnp.float64, param_dtype=jnp.float64, scan=True)
        variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        ours = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(case.x, jnp.float64)))
    assert ours.dtype == np.float64
    assert_logits_match(ours, ref, name, FLOAT64_TOLERANCE)


def _assert_same_tree(a, b) -> None:
    fa, fb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def test_every_file_form_gives_the_same_variables(cases, tmp_path):
    """Bare, `module.`-prefixed, mmpose 1.x and 0.x files of one network load identically."""
    case = cases("official_small")
    expected = {"official": "timm", "official_module": "timm", "mmpose": "mmpose", "mmpose0": "mmpose"}
    for how, layout in expected.items():
        path = tmp_path / f"{how}.pth"
        ref = case.ref if how.startswith("official") else _as_mmpose(case)
        _save(ref, path, how)
        arrays, metadata, _ = read_any(path)
        assert detect_layout(arrays, metadata, str(path)) == layout, how
        _, variables = load_pretrained(str(path))
        _assert_same_tree(variables, case.variables)


def _as_mmpose(case) -> MMPoseHRNet:
    ref = MMPoseHRNet(ARCHS[case.arch], JOINTS)
    state = {("head." + k if k.startswith("final_layer") else "backbone." + k): v for k, v in case.ref.state_dict().items()}
    ref.load_state_dict(state, strict=True)
    return ref.eval()


@pytest.mark.parametrize("arch", ["pose_hrnet_w18_small_v2", "pose_hrnet_w32"])
def test_reference_keys_are_the_key_tables(arch):
    """Every key and shape of the references' state dicts is in our tables, and nothing else: the
    last module of stage 4 fuses into branch 0 only (`fuse_layers.0.{1,2,3}`)."""
    from hrnet_flax.weights.convert import ref_shape
    from hrnet_flax.weights.layouts import key_table

    for layout, ref in (("timm", OfficialPoseHRNet(ARCHS[arch], 3)), ("mmpose", MMPoseHRNet(ARCHS[arch], 3))):
        state = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
        table = {leaf.key: ref_shape(leaf) for leaf in key_table(ARCHS[arch], 3, layout)}
        assert state == table, (layout, sorted(set(state) ^ set(table))[:5])
    last = ARCHS[arch].stages[-1].num_modules - 1
    fuses = {k.split(".")[4] for k in state if k.startswith(f"backbone.stage4.{last}.fuse_layers.")}
    assert fuses == {"0"}


def test_export_roundtrip_exact(cases, tmp_path):
    """Official -> ours -> official and mmpose -> ours -> mmpose are exact; torch's strict
    `load_state_dict` takes the exported file and gives the same heatmaps."""
    for name, layout, cls in (("official_small", "timm", OfficialPoseHRNet), ("mmpose_small_v2", "mmpose", MMPoseHRNet)):
        case = cases(name)
        exported = from_variables(case.variables, case.arch, layout)
        assert sorted(exported) == sorted(case.state)
        for key, value in case.state.items():
            if not key.endswith("num_batches_tracked"):
                np.testing.assert_array_equal(exported[key], value, err_msg=key)
        ref = cls(ARCHS[case.arch], JOINTS)
        ref.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=True)
        np.testing.assert_array_equal(logits(ref.eval(), case.x), case.heatmaps)
    case = cases("official_small")
    out = tmp_path / "official.safetensors"
    export_timm(out, case.variables, arch=case.arch)
    ref = OfficialPoseHRNet(ARCHS[case.arch], JOINTS)
    ref.load_state_dict(torch_load_file(out), strict=True)
    np.testing.assert_array_equal(logits(ref.eval(), case.x), case.heatmaps)


def test_own_format_roundtrip(cases, tmp_path):
    case = cases("mmpose_small_v2")
    out = tmp_path / "ours.safetensors"
    save_checkpoint(out, case.variables, arch=case.arch, num_classes=JOINTS)
    model, variables = load_pretrained(str(out))
    assert model.config == case.model.config and model.num_classes == JOINTS
    _assert_same_tree(variables, case.variables)


def test_other_joint_count_reinitialises_the_head(cases):
    case = cases("official_small")
    with pytest.warns(UserWarning, match="17 joints; re-initialised pose_head for 16 joints"):
        model, variables = load_pretrained(str(case.path), num_classes=16)
    assert model.num_classes == 16
    kernel = np.asarray(variables["params"]["pose_head"]["kernel"])
    assert kernel.shape == (1, 1, 16, 16) and 0.0008 < kernel.std() < 0.0012  # normal(0, 0.001)
    np.testing.assert_array_equal(variables["params"]["pose_head"]["bias"], np.zeros(16))
    _assert_same_tree(variables["params"]["stage4_0"], case.variables["params"]["stage4_0"])
    with pytest.raises(CheckpointError, match="needs num_classes > 0"):
        load_pretrained(str(case.path), num_classes=0)


def test_pose_network_from_classification_checkpoint(tmp_path, caplog):
    """The classifier's backbone; its classification head and the last module's fusions into
    branches 1-3 dropped (the warning says so); a new head as a new model's."""
    path = tmp_path / "cls.safetensors"
    save_file(synthetic_state_dict("hrnet_w18_small", "timm"), path)
    _, cls_variables = load_pretrained(str(path))
    with caplog.at_level(logging.INFO, logger="hrnet_flax"), pytest.warns(UserWarning) as record:
        model, variables = load_pretrained(str(path), task="pose", num_classes=JOINTS)
    message = str(record[0].message)
    assert "pose_hrnet_w18_small from the hrnet_w18_small classification checkpoint" in message
    assert "params/pose_head/kernel" in message
    assert "stage4.0.fuse_layers.1, stage4.0.fuse_layers.2, stage4.0.fuse_layers.3" in message
    assert "stage4.0.fuse_layers.1.0.0.0.weight" in caplog.text
    assert model.config == POSE_MODELS["pose_hrnet_w18_small"] and model.num_classes == JOINTS
    params = variables["params"]
    assert set(params["stage4_0"]) == {k for k in cls_variables["params"]["stage4_0"] if not k.startswith(("fuse1", "fuse2", "fuse3"))}
    _assert_same_tree(params["stage4_0"]["branch3_0"], cls_variables["params"]["stage4_0"]["branch3_0"])
    _assert_same_tree(params["stage4_0"]["fuse0_3"], cls_variables["params"]["stage4_0"]["fuse0_3"])
    assert 0.9 < np.std(params["pose_head"]["kernel"]) / 0.001 < 1.1
    x = np.zeros((1, 64, 64, 3), np.float32)
    assert _forward(model, variables, x).shape == (1, 16, 16, JOINTS)
    with pytest.raises(CheckpointError, match=r"joint count \(num_classes=\.\.\., e\.g\. 17 for COCO keypoints\)"):
        load_pretrained(str(path), task="pose")
    with pytest.warns(UserWarning, match="classification checkpoint"):  # the arch names the task
        model, _ = load_pretrained(str(path), arch="pose_hrnet_w18_small", num_classes=16)
    assert model.config.head == "pose" and model.num_classes == 16


def test_pose_checkpoint_is_no_classifier_or_segmenter(cases):
    case = cases("official_small")
    for kwargs, task in (({"task": "classification"}, "classification"), ({"task": "segmentation"}, "segmentation"),
                         ({"arch": "hrnetv2_w18_small_seg"}, "segmentation")):
        with pytest.raises(CheckpointError, match=f"pose checkpoint .pose_hrnet_w18_small, 17 joints. cannot be loaded as a {task}") as e:
            load_pretrained(str(case.path), **kwargs)
        assert str(case.path) in str(e.value)


def test_head_of_another_joint_count_in_the_file(cases, tmp_path):
    case = cases("official_small")
    state = dict(case.state, **{"final_layer.bias": np.zeros(16, np.float32)})
    path = tmp_path / "bad.safetensors"
    save_file({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    with pytest.raises(CheckpointError, match=r"key 'final_layer.bias' has shape \(16,\) but the model needs \(17,\)") as e:
        load_pretrained(str(path))
    assert str(path) in str(e.value)


def test_registered_entry(cases, monkeypatch):
    """A registered pose weight loads through the registry and must hold its joint count."""
    case = cases("official_small")
    monkeypatch.setattr("hrnet_flax.weights.download.download", lambda url, **kw: case.path)
    entry = dataclasses.replace(P.PRETRAINED["pose_hrnet_w32.mmpose_coco_256x192"], arch=case.arch)
    monkeypatch.setitem(P.PRETRAINED, entry.name, entry)
    model, variables = load_pretrained(entry.name)
    assert_logits_match(_forward(model, variables, case.x), case.heatmaps, entry.name)
    monkeypatch.setitem(P.PRETRAINED, entry.name, dataclasses.replace(entry, num_classes=16))
    with pytest.raises(CheckpointError, match=f"file has 17 classes, but {entry.name} is registered with 16"):
        load_pretrained(entry.name)


def test_pose_registry():
    names = P.list_pretrained(task="pose")
    assert names == sorted([
        "pose_hrnet_w32.mmpose_coco_256x192", "pose_hrnet_w48.mmpose_coco_256x192",
        "pose_hrnet_w48.mmpose_coco_384x288", "pose_hrnet_w32.mmpose_udp_coco_256x192",
        "pose_hrnet_w32.mmpose0_coco_256x192",
    ])
    assert not set(names) & set(P.list_pretrained())
    expected = {  # name: (input size, codec, sigma, AP, shift)
        "pose_hrnet_w32.mmpose_coco_256x192": ((256, 192), "msra", 2.0, 74.9, True),
        "pose_hrnet_w48.mmpose_coco_256x192": ((256, 192), "msra", 2.0, 75.6, True),
        "pose_hrnet_w48.mmpose_coco_384x288": ((384, 288), "msra", 3.0, 76.7, True),
        "pose_hrnet_w32.mmpose_udp_coco_256x192": ((256, 192), "udp", 2.0, 76.2, False),
        "pose_hrnet_w32.mmpose0_coco_256x192": ((256, 192), "msra", 2.0, 74.6, True),
    }
    for name, (size, codec, sigma, ap, shift) in expected.items():
        w = P.get_pretrained(name)
        spec = w.pose
        assert (spec.input_size, spec.codec, spec.sigma, spec.ap, spec.shift_heatmap) == (size, codec, sigma, ap, shift)
        assert spec.heatmap_size == (size[0] // 4, size[1] // 4) and spec.flip_test
        assert spec.flip_pairs == tuple((i, i + 1) for i in range(1, 17, 2))
        assert (w.task, w.num_classes, w.layout, w.dataset) == ("pose", 17, "mmpose", "coco")
        assert w.arch in POSE_MODELS and w.url.startswith("https://download.openmmlab.com/mmpose/")
        assert w.url.endswith(".pth") and w.filename == f"{name}.pth"
        np.testing.assert_allclose(spec.normalization(1.0)[0], (0.485, 0.456, 0.406), rtol=1e-12)
