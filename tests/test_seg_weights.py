"""Segmentation checkpoints: parity with the official HRNet-Semantic-Segmentation and the
mmsegmentation FCN-HRNet (PyTorch references in `dense_reference.py`, random weights with calibrated
BatchNorm statistics) through files in each layout, export back, a segmenter from a classification
checkpoint, the registry entries, and the errors."""

from __future__ import annotations

import collections
import dataclasses
import logging
import pickle
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from convert_support import assert_logits_match, synthetic_state_dict
from safetensors.numpy import save_file
from safetensors.torch import load_file as torch_load_file
from dense_reference import MMSegHRNet, OfficialSegHRNet, calibrate, logits

from hrnet_flax import load_pretrained, save_checkpoint
from hrnet_flax.models.config import ARCHS, SEGMENTERS
from hrnet_flax.models.stacking import model_variables
from hrnet_flax.weights import pretrained as P
from hrnet_flax.weights.checkpoint_io import CheckpointError, read_any
from hrnet_flax.weights.convert import detect_layout, export_timm, from_variables

CLASSES = 5
FLOAT64_TOLERANCE = 1e-10

# name: (arch, layout, align_corners, (H, W))
CASES = {
    "official_small": ("hrnetv2_w18_small_seg", "official", False, (64, 96)),
    "official_small_align": ("hrnetv2_w18_small_seg", "official", True, (64, 96)),
    "mmseg_small": ("hrnetv2_w18_small_seg", "mmseg", False, (64, 96)),
    "official_wide": ("hrnetv2_w18_seg", "official", False, (64, 64)),
    # any size: branches are ceil(side / stride) and bilinear fusion resizes to them exactly
    "official_small_odd": ("hrnetv2_w18_small_seg", "official", True, (50, 75)),
}


def _save(model: torch.nn.Module, path, layout: str) -> None:
    """As the reference code saves: the official training's `FullModel` state dict (`model.`
    prefix, the loss's class weights) or mmcv's checkpoint dict (`meta`, `state_dict`, `optimizer`)."""
    state = model.state_dict()
    if layout == "official":
        state = {**{f"model.{k}": v for k, v in state.items()}, "loss.criterion.weight": torch.ones(CLASSES)}
    else:
        state = {
            "meta": {"mmseg_version": "0.5.0", "CLASSES": tuple("abcde"), "PALETTE": [[1, 2, 3]] * 5, "iter": 80000},
            "state_dict": collections.OrderedDict(state),
            "optimizer": {
                "state": {0: {"momentum_buffer": torch.zeros(3)}},
                "param_groups": [{"lr": 0.01, "params": [0]}],
            },
        }
    torch.save(state, path)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Each case built once, on first use: the calibrated reference, its file, logits and our model."""
    built: dict[str, types.SimpleNamespace] = {}

    def get(name: str) -> types.SimpleNamespace:
        if name not in built:
            arch, layout, align, (h, w) = CASES[name]
            torch.manual_seed(0)
            config = ARCHS[arch]
            ref = OfficialSegHRNet(config, CLASSES, align) if layout == "official" else MMSegHRNet(config, CLASSES)
            calibrate(ref, (2, 3, h, w))
            path = tmp_path_factory.mktemp(name) / "model.pth"
            _save(ref, path, layout)
            x = np.random.default_rng(1).normal(size=(2, h, w, 3)).astype(np.float32)
            model, variables = load_pretrained(str(path), align_corners=align)
            built[name] = types.SimpleNamespace(
                name=name, arch=arch, layout=layout, align=align, ref=ref, path=path, x=x,
                state={k: v.numpy() for k, v in ref.state_dict().items()},
                logits=logits(ref, x), model=model, variables=variables,
            )
        return built[name]

    return get


def _forward(model, variables, x: np.ndarray) -> np.ndarray:
    """Our logits, from the scanned model under jit (XLA compiles it in a few seconds; a plain
    model's eager forward pass compiles every operation on its own, which takes longer)."""
    scanned = model.clone(scan=True)
    return np.asarray(jax.jit(scanned.apply)(model_variables(scanned, variables), x))


def _logits64(source, x: np.ndarray, **kwargs) -> np.ndarray:
    """Our float64 logits (a float64 model returns float64 logits)."""
    with jax.enable_x64(True):
        model, variables = load_pretrained(
            str(source), dtype=jnp.float64, param_dtype=jnp.float64, scan=True, **kwargs
        )
        variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        out = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x, jnp.float64)))
    assert out.dtype == np.float64
    return out


def _cases(*names: str) -> list:
    """The wide variant in the full suite only (it compiles a W18 in both precisions)."""
    return [pytest.param(n, marks=pytest.mark.slow) if n.endswith("wide") else n for n in names]


@pytest.mark.parametrize("name", _cases(*CASES))
def test_parity_float32(cases, name):
    case = cases(name)
    assert case.model.config == dataclasses.replace(ARCHS[case.arch], align_corners=case.align)
    assert case.model.num_classes == CLASSES
    ours = _forward(case.model, case.variables, case.x)
    assert ours.shape == (2, -(-case.x.shape[1] // 4), -(-case.x.shape[2] // 4), CLASSES)  # ceil(side / 4)
    assert_logits_match(ours, case.logits, name)


@pytest.mark.parametrize("name", _cases("official_small_align", "mmseg_small", "official_small_odd", "official_wide"))
def test_parity_float64(cases, name):
    case = cases(name)
    ref = logits(case.ref, case.x, torch.float64)
    assert_logits_match(_logits64(case.path, case.x, align_corners=case.align), ref, name, FLOAT64_TOLERANCE)


def test_align_corners_flag_matters(cases):
    """The same file read with the other flag gives different logits (the flag reaches every resize)."""
    case = cases("official_small_align")
    model, variables = load_pretrained(str(case.path))
    assert model.config.align_corners is False
    ours = _forward(model, variables, case.x)
    assert np.abs(ours - case.logits).max() > 1e-2 * np.abs(case.logits).max()


def test_bare_official_state_dict(cases, tmp_path):
    """A plain state dict (no `model.` prefix, no loss key) gives the same variables, as .pth and
    as safetensors."""
    case = cases("official_small")
    torch.save(case.ref.state_dict(), tmp_path / "bare.pth")
    save_file({k: v for k, v in case.state.items()}, tmp_path / "bare.safetensors")
    for name in ("bare.pth", "bare.safetensors"):
        _, variables = load_pretrained(str(tmp_path / name))
        _assert_same_tree(variables, case.variables)


def _assert_same_tree(a, b) -> None:
    fa, fb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("arch", ["hrnetv2_w18_small_v2_seg", "hrnetv2_w18_seg"])
def test_reference_keys_are_the_key_tables(arch):
    """Every key and shape of the references' state dicts is in our tables, and nothing else (the
    parity tests cover the other variants' values)."""
    from hrnet_flax.weights.convert import ref_shape
    from hrnet_flax.weights.layouts import key_table

    for layout, ref in (("timm", OfficialSegHRNet(ARCHS[arch], 3)), ("mmseg", MMSegHRNet(ARCHS[arch], 3))):
        state = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
        table = {leaf.key: ref_shape(leaf) for leaf in key_table(ARCHS[arch], 3, layout) if leaf.transform != "absent"}
        assert state == table, (layout, sorted(set(state) ^ set(table))[:5])


def test_detect_layout_of_each_file(cases):
    for name, expected in (("official_small", "timm"), ("mmseg_small", "mmseg")):
        arrays, metadata, _ = read_any(cases(name).path)
        assert detect_layout(arrays, metadata, "f") == expected
    mmpretrain = synthetic_state_dict("hrnet_w18_small", "mmpretrain")
    assert detect_layout(mmpretrain, {}, "f") == "mmpretrain"  # also `backbone.conv1.weight`, no decode_head


def test_export_official_roundtrip_exact(cases, tmp_path):
    case = cases("official_small_align")
    exported = from_variables(case.variables, case.arch, "timm")
    assert sorted(exported) == sorted(case.state)
    for key, value in case.state.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(exported[key], value, err_msg=key)
    out = tmp_path / "official.safetensors"
    export_timm(out, case.variables, arch=case.arch)
    ref = OfficialSegHRNet(ARCHS[case.arch], CLASSES, align_corners=True)
    ref.load_state_dict(torch_load_file(out), strict=True)
    np.testing.assert_array_equal(logits(ref.eval(), case.x), case.logits)


def test_export_mmseg_folds_the_head_bias(cases):
    """Official -> ours -> mmseg: strict load into the mmseg reference, same logits (the official
    head conv's bias now in the BN running mean); mmseg -> ours -> mmseg is exact."""
    case = cases("official_small")
    exported = from_variables(case.variables, case.arch, "mmseg")
    bias = case.state["last_layer.0.bias"]
    np.testing.assert_allclose(
        exported["decode_head.convs.0.bn.running_mean"], case.state["last_layer.1.running_mean"] - bias, rtol=1e-6
    )
    ref = MMSegHRNet(ARCHS[case.arch], CLASSES)
    ref.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=True)
    assert_logits_match(logits(ref.eval(), case.x), case.logits, "official exported as mmseg")

    mm = cases("mmseg_small")
    again = from_variables(mm.variables, mm.arch, "mmseg")
    assert sorted(again) == sorted(mm.state)
    for key, value in mm.state.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_own_format_keeps_align_corners(cases, tmp_path):
    case = cases("official_small_align")
    out = tmp_path / "ours.safetensors"
    save_checkpoint(out, case.variables, arch=case.arch, num_classes=CLASSES, config_overrides={"align_corners": True})
    model, variables = load_pretrained(str(out))
    assert model.config == case.model.config and model.num_classes == CLASSES
    _assert_same_tree(variables, case.variables)
    assert not load_pretrained(str(out), align_corners=False)[0].config.align_corners  # an explicit setting wins
    copy = tmp_path / "copy.safetensors"
    assert P.convert(str(out), copy) == case.arch
    assert load_pretrained(str(copy))[0].config.align_corners


def test_other_class_count_reinitialises_the_segmentation_classifier(cases):
    case = cases("official_small")
    with pytest.warns(UserWarning, match="5 classes; re-initialised seg_classifier for 7 classes"):
        model, variables = load_pretrained(str(case.path), num_classes=7)
    assert model.num_classes == 7
    kernel = np.asarray(variables["params"]["seg_classifier"]["kernel"])
    assert kernel.shape == (1, 1, 240, 7) and 0.008 < kernel.std() < 0.012
    np.testing.assert_array_equal(variables["params"]["seg_classifier"]["bias"], np.zeros(7))
    for part in ("seg_head", "stage4_0"):
        _assert_same_tree(variables["params"][part], case.variables["params"][part])


# ------------------------------------------------------------------ from a classification checkpoint


@pytest.mark.parametrize("layout", ["timm", "paddle"])
def test_segmenter_from_classification_checkpoint(tmp_path, caplog, layout):
    """The classifier's backbone, a new head as a new model's, a warning naming what was dropped."""
    if layout == "timm":
        path = tmp_path / "cls.safetensors"
        save_file(synthetic_state_dict("hrnet_w18_small", "timm"), path)
        dropped, first = "classifier, downsamp_modules, final_layer, incre_modules", "incre_modules.0.0.conv1.weight"
    else:
        path = tmp_path / "cls.pdparams"
        path.write_bytes(pickle.dumps(synthetic_state_dict("hrnet_w18_small", "paddle"), protocol=2))
        dropped, first = "cls_head_conv_list, conv_last, fc, last_cls", "last_cls.func_list.0.conv1.conv.weight"
    _, cls_variables = load_pretrained(str(path))
    with caplog.at_level(logging.INFO, logger="hrnet_flax"), pytest.warns(UserWarning) as record:
        model, variables = load_pretrained(str(path), task="segmentation", num_classes=19)
    message = str(record[0].message)
    assert str(path) in message and "hrnetv2_w18_small_seg from the hrnet_w18_small" in message
    assert f"tensors the segmentation model does not have dropped ({dropped})" in message
    assert "params/seg_head/conv/kernel" in message and "params/seg_classifier/kernel" in message
    assert f"dropped keys: {first}, " in caplog.text  # the full list, in the log
    assert model.config == SEGMENTERS["hrnetv2_w18_small_seg"] and model.num_classes == 19
    params, stats = variables["params"], variables["batch_stats"]
    backbone = {k for k in cls_variables["params"] if not k.startswith(("incre", "downsamp", "final", "classifier"))}
    assert set(params) == backbone | {"seg_head", "seg_classifier"}
    for part in params:
        if part not in ("seg_head", "seg_classifier"):
            _assert_same_tree(params[part], cls_variables["params"][part])
    head = params["seg_head"]
    assert 0.9 < np.std(head["conv"]["kernel"]) / np.sqrt(2 / 240) < 1.1  # He normal, fan_out 240
    assert 0.9 < np.std(params["seg_classifier"]["kernel"]) / 0.01 < 1.1
    for value, expected in ((head["conv"]["bias"], 0), (head["bn"]["scale"], 1), (head["bn"]["bias"], 0),
                            (stats["seg_head"]["bn"]["mean"], 0), (stats["seg_head"]["bn"]["var"], 1),
                            (params["seg_classifier"]["bias"], 0)):
        np.testing.assert_array_equal(value, np.full(np.shape(value), expected, np.float32))


def test_segmentation_arch_with_classification_checkpoint(tmp_path):
    """As fine-tuning asks for it: `arch=` the segmenter (the task follows), options such as align_corners."""
    path = tmp_path / "cls.safetensors"
    save_file(synthetic_state_dict("hrnet_w18_small", "timm"), path)
    with pytest.warns(UserWarning, match="classification checkpoint"):
        model, _ = load_pretrained(str(path), arch="hrnetv2_w18_small_seg", num_classes=3, align_corners=True)
    assert model.num_classes == 3 and model.config.align_corners and model.config.head == "segmentation"
    with pytest.raises(CheckpointError, match="hrnet_w18_small's, which hrnetv2_w18_seg does not have"):
        load_pretrained(str(path), arch="hrnetv2_w18_seg", num_classes=3)


def test_classification_checkpoint_as_segmenter_needs_num_classes(tmp_path):
    path = tmp_path / "cls.safetensors"
    save_file(synthetic_state_dict("hrnet_w18_small", "timm"), path)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(str(path), task="segmentation")
    assert str(path) in str(e.value) and "num_classes" in str(e.value) and "hrnet_w18_small" in str(e.value)


def test_se_checkpoint_has_no_segmenter(tmp_path):
    path = tmp_path / "se.pdparams"
    path.write_bytes(pickle.dumps(synthetic_state_dict("se_hrnet_w18_c", "paddle"), protocol=2))
    with pytest.raises(CheckpointError, match="se_hrnet_w18_c, whose backbone has no segmentation variant") as e:
        load_pretrained(str(path), task="segmentation", num_classes=19)
    assert str(path) in str(e.value)


# ------------------------------------------------------------------ errors


def test_segmentation_checkpoint_is_no_classifier(cases):
    case = cases("official_small")
    for kwargs in ({"task": "classification"}, {"arch": "hrnet_w18_small"}):
        match = "segmentation checkpoint .hrnetv2_w18_small_seg, 5 classes. cannot"
        with pytest.raises(CheckpointError, match=match) as e:
            load_pretrained(str(case.path), **kwargs)
        assert str(case.path) in str(e.value)
    with pytest.raises(CheckpointError, match="needs num_classes > 0"):
        load_pretrained(str(case.path), num_classes=0)


def test_classifier_bias_of_another_class_count(cases, tmp_path):
    case = cases("official_small")
    state = dict(case.state, **{"last_layer.3.bias": np.zeros(6, np.float32)})
    path = tmp_path / "bad.safetensors"
    save_file({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    match = r"key 'last_layer.3.bias' has shape \(6,\) but the model needs \(5,\)"
    with pytest.raises(CheckpointError, match=match) as e:
        load_pretrained(str(path))
    assert str(path) in str(e.value)


def test_unknown_key(cases, tmp_path):
    case = cases("mmseg_small")
    path = tmp_path / "extra.safetensors"
    state = {k: v for k, v in case.state.items() if not k.endswith("num_batches_tracked")}
    save_file({**state, "decode_head.conv_extra.weight": np.zeros((1,), np.float32)}, path)
    with pytest.raises(CheckpointError, match="1 unexpected key.s.: decode_head.conv_extra.weight") as e:
        load_pretrained(str(path))
    assert str(path) in str(e.value)


def test_registered_entry_settings_and_class_count(cases, monkeypatch):
    """A registered weight applies its own settings (align_corners) and must hold its class count."""
    case = cases("official_small_align")
    monkeypatch.setattr("hrnet_flax.weights.download.download", lambda url, **kw: case.path)
    coco = P.PRETRAINED["hrnetv2_w48_seg.official_coco_stuff"]
    entry = dataclasses.replace(coco, arch=case.arch, num_classes=CLASSES)
    monkeypatch.setitem(P.PRETRAINED, entry.name, entry)
    model, variables = load_pretrained(entry.name)
    assert model.config.align_corners is True  # COCO-Stuff's flag
    assert_logits_match(_forward(model, variables, case.x), case.logits, entry.name)
    monkeypatch.setitem(P.PRETRAINED, entry.name, dataclasses.replace(entry, num_classes=171))
    with pytest.raises(CheckpointError, match=f"file has 5 classes, but {entry.name} is registered with 171"):
        load_pretrained(entry.name)


# ------------------------------------------------------------------ registry


def test_segmentation_registry():
    names = P.list_pretrained(task="segmentation")
    assert names == sorted(
        [f"hrnetv2_w48_seg.official_{d}" for d in ("cityscapes", "lip", "pascal_context", "coco_stuff", "ade20k")]
        + [f"{a}.mmseg_cityscapes" for a in ("hrnetv2_w48_seg", "hrnetv2_w18_seg", "hrnetv2_w18_small_v2_seg")]
    )
    assert not set(names) & set(P.list_pretrained())  # the default lists the classifiers, as before
    assert set(P.list_pretrained(task=None)) == set(names) | set(P.list_pretrained()) | set(P.list_pretrained(task="pose"))
    expected = {  # name: (classes, align_corners, mIoU, file)
        "official_cityscapes": (19, False, 80.9, "hrnet_cs_8090_torch11.pth"),
        "official_lip": (20, False, 55.83, "hrnet_lip_5583_torch04.pth"),
        "official_pascal_context": (59, False, 54.1, "hrnet_pascal_ctx_5410_torch11.pth"),
        "official_coco_stuff": (171, True, 36.17, "hrnet_cocostuff_3617_torch04.pth"),
        "official_ade20k": (150, True, 43.12, "hrnet_ade20k_4312_torch04.pth"),
    }
    for tag, (classes, align, miou, file) in expected.items():
        w = P.get_pretrained(f"hrnetv2_w48_seg.{tag}")
        assert (w.task, w.num_classes, w.overrides, w.segmentation.miou, w.layout) == (
            "segmentation", classes, {"align_corners": align}, miou, "timm"
        )
        assert w.url == "https://github.com/hsfzxjy/models.storage/releases/download/HRNet-OCR/" + file
    assert P.get_pretrained("hrnetv2_w48_seg.official_lip").segmentation.eval_flip
    ctx = P.get_pretrained("hrnetv2_w48_seg.official_pascal_context").segmentation
    assert ctx.eval_flip and ctx.eval_scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    city = P.get_pretrained("hrnetv2_w48_seg.official_cityscapes").segmentation
    assert (city.crop_size, city.test_size) == ((512, 1024), (1024, 2048))
    assert (city.eval_scales, city.eval_flip) == ((1.0,), False)
    mm = P.get_pretrained("hrnetv2_w48_seg.mmseg_cityscapes")
    assert mm.layout == "mmseg" and mm.num_classes == 19 and mm.overrides == {"align_corners": False}
    assert (mm.segmentation.miou, mm.segmentation.miou_ms_flip) == (79.93, 80.72)
    assert mm.url.endswith("/fcn_hr48_512x1024_80k_cityscapes_20200601_202606-58ea95d6.pth")
    # the same normalisation in both units
    for a, b in zip(mm.segmentation.normalization(255), city.normalization(255)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(mm.segmentation.normalization(1.0)[0], (0.485, 0.456, 0.406), rtol=1e-12)
    for name in names:
        w = P.get_pretrained(name)
        assert w.arch in SEGMENTERS and w.url.startswith("https://") and w.filename == f"{name}.pth"
        assert 30 < w.segmentation.miou < 85 and w.top1 is None
