"""The same networks as the references: timm's HRNet and PaddleClas's HRNet, layer by layer.

Numerical parity with converted weights is in the converter tests; here the architecture itself
is compared: every parameter tensor's size, in order-independent multisets, and the totals.
"""

import collections
import json
import math
import subprocess
import textwrap

import jax
import jax.numpy as jnp
import pytest
import timm
import torch

import hrnet_flax as hf

TIMM_NAMES = [
    "hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w30", "hrnet_w32", "hrnet_w40",
    "hrnet_w44", "hrnet_w48", "hrnet_w64", "hrnet_w18_ssld", "hrnet_w48_ssld",
]  # fmt: skip


def our_sizes(name: str) -> tuple[collections.Counter, collections.Counter]:
    model = hf.create_model(name)
    v = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    params = collections.Counter(math.prod(x.shape) for x in jax.tree.leaves(v["params"]))
    stats = collections.Counter(math.prod(x.shape) for x in jax.tree.leaves(v["batch_stats"]))
    return params, stats


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_same_parameters_as_timm(name):
    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False)
    theirs = collections.Counter(p.numel() for p in ref.parameters())
    their_stats = collections.Counter(
        b.numel() for n, b in ref.named_buffers() if n.endswith(("running_mean", "running_var"))
    )
    ours, our_stats = our_sizes(name)
    assert sum(k * v for k, v in ours.items()) == sum(k * v for k, v in theirs.items())
    assert ours == theirs
    assert our_stats == their_stats


PADDLE_COUNT = textwrap.dedent(
    """
    import json, os, sys, site
    sys.path.insert(0, os.path.join(site.getsitepackages()[0], "paddleclas"))
    from ppcls.utils import logger
    logger.init_logger()
    from ppcls.arch.backbone.legendary_models import hrnet
    out = {}
    for width, se in json.loads(sys.argv[1]):
        m = hrnet.HRNet(width=width, has_se=se, class_num=1000,
                        stages_pattern=hrnet.MODEL_STAGES_PATTERN["HRNet"])
        params, stats = {}, {}
        for name, p in m.state_dict().items():
            bucket = stats if name.endswith(("_mean", "_variance")) else params
            bucket[str(int(p.size))] = bucket.get(str(int(p.size)), 0) + 1
        out[f"{width}-{se}"] = [params, stats]
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_same_parameters_as_paddleclas(paddle_python):
    cases = [(w, False) for w in (18, 30, 32, 40, 44, 48, 64)] + [(18, True), (48, True), (64, True)]
    result = subprocess.run(
        [paddle_python, "-c", PADDLE_COUNT, json.dumps(cases)], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    for width, se in cases:
        params, stats = (collections.Counter({int(k): v for k, v in c.items()}) for c in counts[f"{width}-{se}"])
        ours, our_stats = our_sizes(f"{'se_' if se else ''}hrnet_w{width}_c")
        assert ours == params, (width, se)
        assert our_stats == stats, (width, se)
