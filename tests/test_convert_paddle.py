"""Parity with the real PaddleClas HRNet (run in its own venv, written by `paddle.save`), the
Paddle -> timm export, the PaddleClas 2.0 names and the mmpretrain layout.

PaddleClas 2.0 is not installed either: its checkpoint is the real Paddle W18 state dict
renamed by the 2.0 dygraph naming (`la1.bb_layer2_1`, `_conv`, `_batch_norm`, `out`).

mmpretrain is not installed here: its checkpoint is built by renaming a timm `hrnet_w18_ssld`
state dict by mmpretrain's naming (`backbone.*`, `neck.0.*`, `head.fc`), then torch.save'd
in mmpretrain's `{"meta", "state_dict"}` wrapper.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import types

import numpy as np
import pytest
import timm
import torch
from convert_support import assert_logits_match, images, randomize_torch_bn
from safetensors.torch import load_file as torch_load_file

from hrnet_flax import create_model, load_pretrained
from hrnet_flax.weights.checkpoint_io import read_pdparams
from hrnet_flax.weights.convert import export_timm

pytestmark = pytest.mark.slow

PADDLE_SCRIPT = r"""
import os, site, sys
import numpy as np
site_packages = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
sys.path.insert(0, os.path.join(site_packages, "paddleclas"))
import paddle
from ppcls.utils import logger
logger.init_logger()
from ppcls.arch.backbone.legendary_models import hrnet

out = sys.argv[1]
x = paddle.to_tensor(np.load(os.path.join(out, "x.npy")))
rng = np.random.default_rng(0)
for tag, se in (("w18", False), ("se_w18", True)):
    paddle.seed(0)
    model = hrnet.HRNet(width=18, has_se=se, class_num=1000, stages_pattern=hrnet.MODEL_STAGES_PATTERN["HRNet"])
    model.eval()
    for name, t in model.state_dict().items():
        shape = t.shape
        if name.endswith("._mean") or name.endswith("bn.bias"):
            value = rng.normal(0, 0.2, shape)
        elif name.endswith("._variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("bn.weight"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 4:  # conv OIHW: He normal over fan-in
            value = rng.normal(0, np.sqrt(2.0 / (shape[1] * shape[2] * shape[3])), shape)
        elif len(shape) == 2:  # Linear [in, out]
            value = rng.normal(0, 1.0 / np.sqrt(shape[0]), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        t.set_value(value.astype("float32"))
    paddle.save(model.state_dict(), os.path.join(out, tag + ".pdparams"))
    model.to(dtype="float64")  # the reference's exact answer: its float32 run is itself 1.4e-4 off (centred)
    with paddle.no_grad():
        np.save(os.path.join(out, tag + "_logits.npy"), model(x.astype("float64")).numpy())
"""


@pytest.fixture(scope="module")
def paddle_refs(paddle_python, tmp_path_factory):
    """Random PaddleClas W18 and SE-W18 weights (float32 .pdparams) and their logits, which
    PaddleClas computes in float64."""
    folder = tmp_path_factory.mktemp("paddle")
    x = images()
    np.save(folder / "x.npy", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    (folder / "make.py").write_text(PADDLE_SCRIPT)
    run = subprocess.run([paddle_python, str(folder / "make.py"), str(folder)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return types.SimpleNamespace(folder=folder, x=x, **{t: np.load(folder / f"{t}_logits.npy") for t in ("w18", "se_w18")})


@pytest.fixture(scope="module")
def w18_c():
    """The hrnet_w18_c forward shared by the Paddle and mmpretrain tests (eager: one-off
    comparisons run faster op by op than through a whole-network XLA compile)."""
    return create_model("hrnet_w18_c").apply


def test_paddle_w18_parity(paddle_refs, w18_c):
    model, variables = load_pretrained(str(paddle_refs.folder / "w18.pdparams"))
    assert model.config == create_model("hrnet_w18_c").config
    assert_logits_match(w18_c(variables, paddle_refs.x), paddle_refs.w18, "PaddleClas HRNet W18")


def test_paddle_se_w18_parity(paddle_refs):
    model, variables = load_pretrained(str(paddle_refs.folder / "se_w18.pdparams"))
    assert model.config.se and not model.config.head_conv_bias and model.config.stages[1].num_channels[0] == 18
    assert_logits_match(model.apply(variables, paddle_refs.x), paddle_refs.se_w18, "PaddleClas SE HRNet W18")


def test_paddle_weights_export_to_timm_ssld(paddle_refs, tmp_path):
    """Paddle weights -> timm state dict -> timm hrnet_w18_ssld (head_conv_bias=False), strict."""
    _, variables = load_pretrained(str(paddle_refs.folder / "w18.pdparams"), arch="hrnet_w18_ssld")
    out = tmp_path / "w18_ssld.safetensors"
    export_timm(out, variables, arch="hrnet_w18_ssld")
    model = timm.create_model("hrnet_w18_ssld").eval()
    model.load_state_dict(torch_load_file(out), strict=True)
    with torch.no_grad():
        logits = model(torch.from_numpy(paddle_refs.x.transpose(0, 3, 1, 2))).numpy()
    assert_logits_match(logits, paddle_refs.w18, "Paddle W18 exported to timm")


def _to_mmpretrain(key: str) -> str:
    rules = [
        (r"incre_modules\.(\d+)\.", r"neck.0.increase_layers.\1."),
        (r"downsamp_modules\.(\d+)\.0\.", r"neck.0.downsample_layers.\1.conv."),
        (r"downsamp_modules\.(\d+)\.1\.", r"neck.0.downsample_layers.\1.bn."),
        (r"final_layer\.0\.", "neck.0.final_layer.conv."),
        (r"final_layer\.1\.", "neck.0.final_layer.bn."),
        (r"classifier\.", "head.fc."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    return "backbone." + key


def test_mmpretrain_layout_parity(w18_c, tmp_path):
    torch.manual_seed(1)
    model = timm.create_model("hrnet_w18_ssld").eval()  # head convs without bias, as mmpretrain
    randomize_torch_bn(model, seed=1)
    state = {_to_mmpretrain(k): v for k, v in model.state_dict().items()}
    assert "neck.0.downsample_layers.2.conv.weight" in state and "backbone.stage4.2.fuse_layers.3.0.2.1.running_var" in state
    torch.save({"meta": {"note": "mmpretrain-style"}, "state_dict": state}, tmp_path / "mmpretrain.pth")
    x = images(seed=1)
    with torch.no_grad():
        ref = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    flax_model, variables = load_pretrained(str(tmp_path / "mmpretrain.pth"))
    assert flax_model.config == create_model("hrnet_w18_c").config
    assert_logits_match(w18_c(variables, x), ref, "mmpretrain-layout W18")


def _fuse_ids(branches: int) -> list[str]:
    """PaddleClas 2.0 fuse names "i_j" / "i_j_k" (1-based) in the flat order of `residual_func_list`."""
    ids = []
    for i in range(branches):
        for j in range(branches):
            ids += [f"{i + 1}_{j + 1}"] if j > i else [f"{i + 1}_{j + 1}_{k + 1}" for k in range(i - j)]
    return ids


def _to_paddle2(key: str) -> str:
    key = re.sub(r"\.conv\.weight$", "._conv.weight", key)
    key = re.sub(r"\.bn\.", "._batch_norm.", key)
    key = re.sub(r"\.se\.fc_(squeeze|excitation)\.", r".se.\1.", key)
    key = re.sub(r"^layer1\.(\d+)\.", lambda m: f"la1.bb_layer2_{int(m[1]) + 1}.", key)
    key = re.sub(r"^conv_tr1_(\d)\.", r"tr1.transition_tr1_layer_\1.", key)
    key = re.sub(r"^conv_tr(\d)\.", lambda m: f"tr{m[1]}.transition_tr{m[1]}_layer_{int(m[1]) + 1}.", key)
    key = re.sub(
        r"^st(\d)\.stage_func_list\.(\d+)\.basic_block_list\.(\d+)\.(\d+)\.",
        lambda m: f"st{m[1]}.stage_st{m[1]}_{int(m[2]) + 1}.branches_func."
        f"bb_st{m[1]}_{int(m[2]) + 1}_branch_layer_{int(m[3]) + 1}_{int(m[4]) + 1}.",
        key,
    )
    key = re.sub(
        r"^st(\d)\.stage_func_list\.(\d+)\.fuse_func\.residual_func_list\.(\d+)\.",
        lambda m: f"st{m[1]}.stage_st{m[1]}_{int(m[2]) + 1}.fuse_func."
        f"residual_st{m[1]}_{int(m[2]) + 1}_layer_{_fuse_ids(int(m[1]))[int(m[3])]}.",
        key,
    )
    key = re.sub(r"^last_cls\.func_list\.(\d+)\.", lambda m: f"last_cls.conv_cls_head_conv_{int(m[1]) + 1}.", key)
    key = re.sub(r"^cls_head_conv_list\.(\d+)\.", lambda m: f"cls_head_add{int(m[1]) + 1}.", key)
    return re.sub(r"^fc\.", "out.", key)


def test_paddleclas_2_0_names_parity(paddle_refs, w18_c, tmp_path):
    state = {_to_paddle2(k): v for k, v in read_pdparams(paddle_refs.folder / "w18.pdparams").items()}
    assert "st4.stage_st4_3.fuse_func.residual_st4_3_layer_4_1_3._batch_norm._variance" in state
    assert "la1.bb_layer2_1.conv_down._conv.weight" in state and "out.weight" in state
    path = tmp_path / "HRNet_W18_C_2.0.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=2))
    model, variables = load_pretrained(str(path))
    assert model.config == create_model("hrnet_w18_c").config
    assert_logits_match(w18_c(variables, paddle_refs.x), paddle_refs.w18, "PaddleClas 2.0 names W18")
