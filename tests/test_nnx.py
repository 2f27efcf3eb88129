"""The Flax NNX face (`hrnet_flax.nnx`): the same outputs, BatchNorm updates, initial weights,
training step and checkpoints as the Linen model it wraps, and the Linen model's errors.

Parity tolerance: 1e-6 relative to the largest magnitude of each reference array (the outputs,
statistics and training steps come out bit-identical on XLA:CPU).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.traverse_util import flatten_dict

import hrnet_flax
from convert_support import calibrated, images
from hrnet_flax import nnx as hnnx
from hrnet_flax.parallel import global_batch, make_mesh
from hrnet_flax.tasks import Classification
from hrnet_flax.train.config import TrainConfig
from hrnet_flax.train.optim import create_optimizer
from hrnet_flax.train.step import build_model, create_train_state, make_train_step

SIZE = 64
NAMES = ("hrnet_w18_small", "hrnetv2_w18_small_seg", "pose_hrnet_w18_small")
RTOL = 1e-6


def assert_close(ours, ref, what: str) -> None:
    """Same tree structure; every leaf within RTOL of the reference's largest magnitude."""
    ours, ref = jax.device_get(ours), jax.device_get(ref)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref), what
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves(ref)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (what, path)
        scale = max(float(np.max(np.abs(b))), np.finfo(np.float32).tiny)
        error = float(np.max(np.abs(a - b))) / scale
        assert error <= RTOL, f"{what} {jax.tree_util.keystr(path)}: relative error {error:.2e}"


def tree_equal(a, b) -> bool:
    flat_a, flat_b = flatten_dict(jax.device_get(a)), flatten_dict(jax.device_get(b))
    return flat_a.keys() == flat_b.keys() and all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


@nnx.jit
def nnx_eval_and_train(model, x):
    """Inference, then one train-mode forward pass (which updates the running statistics), then
    back to inference."""
    out = model(x)
    model.train()
    train_out = model(x)
    model.eval()
    return out, train_out


# The classifier in the fast tier; the dense heads wrap the same way (the full suite runs them).
@pytest.fixture(scope="module", params=[NAMES[0], *(pytest.param(n, marks=pytest.mark.slow) for n in NAMES[1:])])
def parity(request):
    """A small model of each head with calibrated variables: the NNX outputs and updated
    statistics, and the Linen ones."""
    linen = hrnet_flax.create_model(request.param, **({"num_classes": 10} if "seg" not in request.param else {}))
    variables = calibrated(hrnet_flax.init_variables(linen, jax.random.key(1), (1, SIZE, SIZE, 3)))
    x = jnp.asarray(images(2, SIZE, seed=2))
    model = hnnx.from_linen(linen, variables)
    out, train_out = nnx_eval_and_train(model, x)

    @jax.jit
    def linen_eval_and_train(variables, x):
        return linen.apply(variables, x), linen.apply(variables, x, train=True, mutable=["batch_stats"])

    ref, (ref_train, updates) = linen_eval_and_train(variables, x)
    return {
        "name": request.param,
        "model": model,
        "ours": (out, train_out, hnnx.linen_variables(model)),
        "ref": (ref, ref_train, {"params": variables["params"], "batch_stats": updates["batch_stats"]}),
    }


def test_eval_equals_linen(parity):
    out, ref = parity["ours"][0], parity["ref"][0]
    assert out.shape == ref.shape and out.shape[0] == 2
    assert float(jnp.std(ref)) > 0
    assert_close(out, ref, f"{parity['name']} eval output")


def test_train_mode_output_and_statistics_equal_linen(parity):
    (out, train_out, variables), (ref, ref_train, ref_variables) = parity["ours"], parity["ref"]
    assert not np.allclose(train_out, out)  # batch statistics, not the running ones
    assert_close(train_out, ref_train, f"{parity['name']} train output")
    assert_close(variables, ref_variables, f"{parity['name']} variables after a train-mode pass")
    assert parity["model"].use_running_average  # `eval()` inside the jitted function came back out


def test_return_features_passes_through():
    linen = hrnet_flax.create_model("hrnet_w18_small", num_classes=10)
    variables = calibrated(hrnet_flax.init_variables(linen, jax.random.key(2)), seed=2)
    x = jnp.asarray(images(2, SIZE, seed=3))
    features = nnx.jit(lambda model, x: model(x, return_features=True))(hnnx.from_linen(linen, variables), x)
    ref = jax.jit(lambda v, x: linen.apply(v, x, return_features=True))(variables, x)
    assert {"stem", "branch3", "hrnetv2", "incre0", "pre_logits", "logits"} <= set(features)
    assert_close(features, ref, "features")


def test_train_eval_switch_and_variable_types():
    model = hnnx.create_model("hrnet_w18_small", num_classes=10, input_size=(SIZE, SIZE))
    assert model.use_running_average and model.num_classes == 10 and model.config.head == "classification"
    assert isinstance(model.linen, hrnet_flax.HRNet)
    model.train()
    assert not model.use_running_average
    assert nnx.view(model, use_running_average=True).use_running_average and not model.use_running_average
    model.eval()
    assert model.use_running_average
    params, stats = nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat)
    variables = hrnet_flax.init_variables(model.linen, jax.random.key(0))
    assert len(jax.tree_util.tree_leaves(params)) == len(jax.tree_util.tree_leaves(variables["params"]))
    assert len(jax.tree_util.tree_leaves(stats)) == len(jax.tree_util.tree_leaves(variables["batch_stats"]))
    assert model.net.conv1["bn"]["mean"].shape == (64,)


@pytest.mark.parametrize("name", NAMES)
def test_create_model_has_init_variables_weights(name):
    ours = hnnx.linen_variables(hnnx.create_model(name, rngs=3))
    assert tree_equal(ours, hrnet_flax.init_variables(hrnet_flax.create_model(name), jax.random.key(3)))


def test_create_model_key_from_rngs_and_options():
    model = hnnx.create_model("hrnet_w18_small", rngs=nnx.Rngs(5), num_classes=7, input_size=(SIZE, SIZE))
    linen = hrnet_flax.create_model("hrnet_w18_small", num_classes=7)
    assert tree_equal(hnnx.linen_variables(model), hrnet_flax.init_variables(linen, nnx.Rngs(5).params()))
    assert model.num_classes == 7 and model.linen == linen
    key = jax.random.key(9)
    assert tree_equal(
        hnnx.linen_variables(hnnx.create_model("hrnet_w18_small", rngs=key, num_classes=7)),
        hrnet_flax.init_variables(linen, key),
    )
    other = hnnx.linen_variables(hnnx.create_model("hrnet_w18_small", rngs=6, num_classes=7))
    assert not tree_equal(other, hnnx.linen_variables(model))


def test_scanned_model_layout_and_round_trip():
    """`scan=True` holds the stacked variables; `linen_variables` gives them back as the Linen
    scanned model takes them."""
    model = hnnx.create_model("hrnet_w18_small", rngs=3, scan=True, num_classes=10)
    linen = hrnet_flax.create_model("hrnet_w18_small", scan=True, num_classes=10)
    variables = hrnet_flax.init_variables(linen, jax.random.key(3))
    assert hrnet_flax.is_stacked(variables)
    assert tree_equal(hnnx.linen_variables(model), variables)
    canonical = hrnet_flax.unstack_variables(variables)
    assert tree_equal(hnnx.linen_variables(hnnx.from_linen(linen, canonical)), variables)


def test_load_pretrained_and_round_trip(tmp_path):
    linen = hrnet_flax.create_model("hrnet_w18_small", num_classes=10)
    variables = calibrated(hrnet_flax.init_variables(linen, jax.random.key(4)), seed=4)
    path = tmp_path / "model.safetensors"
    hrnet_flax.save_checkpoint(path, variables, arch="hrnet_w18_small", num_classes=10)

    linen_model, linen_loaded = hrnet_flax.load_pretrained(str(path))
    model = hnnx.load_pretrained(str(path))
    assert model.linen == linen_model and model.num_classes == 10
    assert tree_equal(hnnx.linen_variables(model), linen_loaded)
    assert tree_equal(hnnx.linen_variables(model), variables)
    assert tree_equal(hnnx.linen_variables(hnnx.from_linen(linen, variables)), variables)

    # back to a file: the same bytes' worth of weights
    again = tmp_path / "again.safetensors"
    hrnet_flax.save_checkpoint(again, hnnx.linen_variables(model), arch="hrnet_w18_small", num_classes=10)
    assert tree_equal(hrnet_flax.load_pretrained(str(again))[1], variables)

    scanned = hnnx.load_pretrained(str(path), scan=True)
    assert tree_equal(hnnx.linen_variables(scanned), hrnet_flax.load_pretrained(str(path), scan=True)[1])


def test_unknown_variant_same_error_as_linen():
    with pytest.raises(ValueError) as linen_error:
        hrnet_flax.create_model("hrnet_w19_small")
    with pytest.raises(ValueError) as nnx_error:
        hnnx.create_model("hrnet_w19_small")
    assert str(nnx_error.value) == str(linen_error.value)
    message = str(nnx_error.value)
    assert "unknown HRNet variant 'hrnet_w19_small'" in message and "hrnet_w18_small" in message
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['widht'\]"):
        hnnx.create_model("hrnet_w18_small", widht=3)


def test_image_size_not_a_multiple_of_32_refused():
    linen = hrnet_flax.create_model("hrnet_w18_small", num_classes=10)
    variables = hrnet_flax.init_variables(linen, jax.random.key(0))
    x = jnp.zeros((1, 50, 64, 3))
    with pytest.raises(ValueError) as linen_error:
        linen.apply(variables, x)
    message = str(linen_error.value)
    assert "50x64" in message and "multiples of 32" in message
    model = hnnx.from_linen(linen, variables)
    with pytest.raises(ValueError) as nnx_error:
        model(x)
    assert str(nnx_error.value) == message
    model.train()
    with pytest.raises(ValueError) as nnx_error:
        model(x)
    assert str(nnx_error.value) == message
    with pytest.raises(ValueError) as nnx_error:
        hnnx.create_model("hrnet_w18_small", input_size=(50, 64))
    assert str(nnx_error.value) == message


def test_bad_variables_and_arguments():
    linen = hrnet_flax.create_model("hrnet_w18_small", num_classes=10)
    other = hrnet_flax.init_variables(hrnet_flax.create_model("hrnet_w18_small", num_classes=5), jax.random.key(0))
    shapes = r"variable params/classifier/(bias|kernel) has shape \((2048, )?5,?\); .* 10 classes needs \((2048, )?10,?\)"
    with pytest.raises(ValueError, match=shapes):
        hnnx.from_linen(linen, other)
    seg = hrnet_flax.init_variables(hrnet_flax.create_model("hrnetv2_w18_small_seg"), jax.random.key(0))
    layout = r"do not fit the classification HRNet with 10 classes: \d+ missing, e\.g\. .*; \d+ unexpected, e\.g\. "
    with pytest.raises(ValueError, match=layout):
        hnnx.from_linen(linen, seg)
    with pytest.raises(ValueError, match="must be a mapping with 'params'"):
        hnnx.from_linen(linen, {"batch_stats": other["batch_stats"]})
    with pytest.raises(TypeError, match="hrnet_flax HRNet Linen module"):
        hnnx.from_linen(nnx.Linear, other)
    with pytest.raises(TypeError, match="rngs must be"):
        hnnx.create_model("hrnet_w18_small", rngs="0")
    with pytest.raises(TypeError, match="expected an hrnet_flax.nnx.HRNet"):
        hnnx.linen_variables(other)
    folded = hrnet_flax.create_model("hrnet_w18_small", num_classes=10, fold_bn=True)
    model = hnnx.from_linen(folded, hrnet_flax.fold_batchnorm(hrnet_flax.init_variables(linen, jax.random.key(0))))
    assert set(hnnx.linen_variables(model)) == {"params"}
    model.train()
    with pytest.raises(ValueError, match="fold_bn=True has no BatchNorm to train"):
        model(jnp.zeros((1, SIZE, SIZE, 3)))


@pytest.mark.slow
def test_optimizer_steps_equal_linen_train_steps():
    """Two `nnx.Optimizer` steps against two steps of the training loop's step (one-device mesh):
    the config's SGD (momentum, Nesterov, coupled L2 on kernels only), its cosine schedule, the
    classification loss with label smoothing, EMA off."""
    config = TrainConfig(
        model="hrnet_w18_small",
        num_classes=10,
        dtype="float32",
        dataset="digits",
        image_size=SIZE,
        global_batch_size=8,
        train_examples=16,
        total_steps=4,
        schedule="cosine",
        base_lr=0.4,
        nesterov=True,
        weight_decay=5e-3,
        weight_decay_on="kernels",
        label_smoothing=0.1,
        seed=7,
    )
    assert config.ema_decay is None
    tx = create_optimizer(config)
    mesh = make_mesh(jax.devices()[:1])
    state = create_train_state(config, tx, mesh)
    # numpy copies: the Linen step donates (deletes) the state's buffers
    variables = jax.tree.map(lambda a: np.array(a, copy=True), calibrated(state.variables(), seed=7))
    replicated = state.params["conv1"]["conv"]["kernel"].sharding
    state = state.replace(**jax.tree.map(lambda a: jax.device_put(jnp.array(a, copy=True), replicated), variables))
    # The step's model without `axis_name`: on one device BatchNorm's cross-device average is the
    # identity, and the two programs are then the same. With it XLA fuses the statistics otherwise,
    # and these small batches amplify the rounding: the Linen step with and without `axis_name`
    # differ by 7e-4 (relative, first conv kernel) after one step.
    linen_step = make_train_step(config, build_model(config, axis_name=None, scan=False), tx, mesh)

    model = hnnx.from_linen(build_model(config, axis_name=None, scan=False), variables)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    task = Classification.from_config(config)
    assert task.label_smoothing == 0.1

    @nnx.jit
    def nnx_step(model, optimizer, batch):
        def loss_fn(model):
            return task.loss(model(batch["image"]), batch)[0]

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    rng = np.random.default_rng(0)
    for step in range(2):
        batch = {
            "image": images(8, SIZE, seed=10 + step),
            "label": rng.integers(0, 10, 8).astype(np.int32),
            "mask": np.ones(8, bool),
        }
        state, metrics = linen_step(state, global_batch(batch, mesh))
        loss = nnx_step(model, optimizer, {k: jnp.asarray(v) for k, v in batch.items()})
        np.testing.assert_allclose(loss, metrics["loss"], rtol=RTOL)
        assert_close(hnnx.linen_variables(model), jax.device_get(state.variables()), f"variables after step {step + 1}")
    assert int(optimizer.step[...]) == 2 == int(state.step)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - np.asarray(b)))), variables, state.variables())
    assert min(jax.tree_util.tree_leaves(moved["params"])) > 0  # every parameter took the steps
