"""The jaxpr -> ONNX translator (`hrnet_flax.export.onnx_graph`): single primitives and every model
family's folded inference function against JAX in ONNX Runtime, and the cleanliness of the graphs."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from jax import lax
from jax.extend import core as jcore

from convert_support import assert_logits_match, calibrated, images
from hrnet_flax import create_model, fold_batchnorm, init_variables
from hrnet_flax.export.onnx_graph import EMITTED_OPS, OPSET, to_onnx
from hrnet_flax.models.hrnet import global_average_pool, upsample_nearest
from hrnet_flax.models.resize import resize_bilinear

TOLERANCE = 1e-5  # max|ORT - JAX| / max|JAX|
SIZE = 64


def inference(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    runner = inference(model)
    return runner.run(None, {runner.get_inputs()[0].name: x})[0]


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    assert ours.shape == ref.shape, f"shapes {ours.shape} vs {ref.shape}"
    return float(np.abs(ours.astype(np.float64) - ref).max() / np.abs(ref).max())


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def primitive_count(fn: Callable, shape: tuple, name: str) -> int:
    """How often primitive `name` runs in `fn`'s jaxpr, nested calls included."""

    def walk(jaxpr: jcore.Jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            total += eqn.primitive.name == name
            for p in eqn.params.values():
                if isinstance(p, jcore.ClosedJaxpr):
                    total += walk(p.jaxpr)
                elif isinstance(p, jcore.Jaxpr):
                    total += walk(p)
        return total

    return walk(jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, jnp.float32)).jaxpr)


def assert_matches(fn: Callable, x: np.ndarray, *, dynamic: bool = True, **kwargs: Any) -> onnx.ModelProto:
    """`fn` exported, checked, and run in ONNX Runtime on `x` (and on its first image with a dynamic
    batch) within TOLERANCE of JAX; returns the model."""
    shape = (None if dynamic else x.shape[0],) + x.shape[1:]
    model = to_onnx(fn, shape, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    assert set(op_counts(model)) <= EMITTED_OPS
    nchw = kwargs.get("layout") == "NCHW"
    for batch in (x, x[:1]) if dynamic else (x,):
        ref = np.asarray(fn(jnp.asarray(batch)), np.float64)
        out = run(model, batch.transpose(0, 3, 1, 2) if nchw else batch)
        if nchw and ref.ndim == 4:
            out = out.transpose(0, 2, 3, 1)
        assert relative_error(out, ref) < TOLERANCE
    return model


def rng_array(*shape: int, seed: int = 0, scale: float = 1.0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale)


# -- single primitives ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strides,padding,dilation,groups",
    [((1, 1), ((1, 1), (1, 1)), (1, 1), 1), ((2, 2), ((1, 0), (2, 1)), (1, 1), 1), ((1, 2), ((2, 2), (0, 0)), (2, 1), 3)],
)
def test_conv_bias_relu(strides, padding, dilation, groups):
    x = images(2, 16)
    w, b = rng_array(3, 3, 3 // groups, 6, seed=1), rng_array(6, seed=2)

    def fn(x):
        y = lax.conv_general_dilated(
            x, w, strides, padding, rhs_dilation=dilation, feature_group_count=groups, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jax.nn.relu(y + b.reshape(1, 1, 1, 6))

    model = assert_matches(fn, x)
    # the bias is the Conv's third input; the ReLU one node; NCHW inside, Transposes only at the edges
    assert op_counts(model) == {"Transpose": 2, "Conv": 1, "Relu": 1}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3
    assert op_counts(assert_matches(fn, x, dynamic=False, layout="NCHW")) == {"Conv": 1, "Relu": 1}


def test_conv_output_used_twice_keeps_its_add():
    """A Conv output with another consumer cannot take the bias: the Add stays."""
    x = images(2, 16)
    w, b = rng_array(1, 1, 3, 4, seed=1), rng_array(4, seed=2)

    def fn(x):
        y = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (y + b) * y

    model = assert_matches(fn, x)
    assert op_counts(model) == {"Transpose": 2, "Conv": 1, "Add": 1, "Mul": 1}


def test_concat_with_a_constant_channel():
    """Concatenation along channels in NCHW; a constant broadcast to the dynamic batch is expanded
    to the batch read from the input's shape."""
    x = images(3, 16)
    c = rng_array(16, 16, 1, seed=3)
    model = assert_matches(lambda x: jnp.concatenate([x, x * 2, jnp.broadcast_to(c, x.shape[:3] + (1,))], axis=-1), x)
    assert op_counts(model) == {"Transpose": 2, "Mul": 1, "Concat": 2, "Shape": 1, "Gather": 1, "Expand": 1}
    axes = sorted(a.i for n in model.graph.node if n.op_type == "Concat" for a in n.attribute if a.name == "axis")
    assert axes == [0, 1]  # the Expand's shape, and the images along the NCHW channel axis


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(32, 24), (7, 5)])
def test_resize_gathers(align_corners, size):
    """`resize_bilinear`: two gathers per axis on the NCHW spatial axes, with constant indices (the
    index normalisation folded away) and weights broadcast without Expand."""
    model = assert_matches(lambda x: resize_bilinear(x, size, align_corners), images(2, 16))
    assert op_counts(model) == {"Transpose": 2, "Gather": 4, "Mul": 4, "Add": 2}
    nchw = assert_matches(lambda x: resize_bilinear(x, size, align_corners), images(2, 16), layout="NCHW")
    assert "Transpose" not in op_counts(nchw)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather":
            assert node.input[1] in inits and inits[node.input[1]].min() >= 0
            assert [a.i for a in node.attribute if a.name == "axis"][0] in (2, 3)


def test_nearest_upsample_groups_axes():
    """`upsample_nearest`: (N,H,W,C) -> (N,H,1,W,1,C) -> broadcast -> (N,2H,2W,C) regrouped in NCHW."""
    model = assert_matches(lambda x: upsample_nearest(x, 2), images(2, 8))
    assert op_counts(model) == {"Transpose": 2, "Reshape": 2, "Expand": 1}
    model = assert_matches(lambda x: upsample_nearest(x, 2), images(2, 8), layout="NCHW")
    assert op_counts(model) == {"Reshape": 2, "Expand": 1}


def test_reshape_that_needs_a_transpose():
    """Flattening (N,H,W,C) to (N,H*W*C) needs NHWC element order: one Transpose besides the input's."""
    model = assert_matches(lambda x: x.reshape(x.shape[0], -1) * 2, images(2, 8))
    assert op_counts(model) == {"Transpose": 2, "Reshape": 1, "Mul": 1}


def test_broadcasts_emit_no_expand():
    """(N,C) values and constants broadcast onto a feature map through ONNX broadcasting."""
    c = rng_array(1, 1, 8, 3, seed=4)
    model = assert_matches(lambda x: x * jax.nn.sigmoid(jnp.mean(x, axis=(1, 2)))[:, None, None, :] + c, images(2, 8))
    counts = op_counts(model)
    assert "Expand" not in counts and counts["Transpose"] == 2


def test_global_pool_and_dense_make_gemm():
    """`global_average_pool` and a Dense with bias: MatMul with the ones vector, Div, one Gemm with
    the bias as its C input."""
    w, b = rng_array(3, 10, seed=5), rng_array(10, seed=6)
    model = assert_matches(lambda x: global_average_pool(x) @ w + b, images(3, 8))
    assert op_counts(model) == {"Transpose": 1, "Reshape": 1, "MatMul": 1, "Div": 1, "Gemm": 1}
    assert len(next(n for n in model.graph.node if n.op_type == "Gemm").input) == 3


def test_squeeze_excite_pattern():
    """The SE block's mean, two Dense layers on (N,1,1,C) and the rescale: no Transpose inside."""
    w1, b1, w2, b2 = rng_array(8, 2, seed=7), rng_array(2, seed=8), rng_array(2, 8, seed=9), rng_array(8, seed=10)

    def fn(x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = jax.nn.sigmoid(jax.nn.relu(s @ w1 + b1) @ w2 + b2)
        return x * s

    x = np.random.default_rng(11).normal(size=(2, 8, 8, 8)).astype(np.float32)
    model = assert_matches(fn, x)
    counts = op_counts(model)
    assert counts["Transpose"] == 2 and counts["MatMul"] == 2 and counts["Sigmoid"] == 1 and counts["Relu"] == 1
    assert "Transpose" not in op_counts(assert_matches(fn, x, layout="NCHW"))


@pytest.mark.parametrize("opset", [13, OPSET, 18])
def test_reductions_pad_slice_transpose(opset):
    def fn(x):
        y = jnp.pad(x, ((0, 0), (1, 2), (0, 3), (0, 0)), constant_values=0.5)
        y = lax.slice(y, (0, 2, 1, 0), (x.shape[0], 15, 19, 3), (1, 2, 1, 1))
        z = jnp.transpose(y, (0, 2, 1, 3)) * 2  # a relabelling of axes, no node
        return jnp.max(z, axis=(1, 2)) - jnp.min(y, axis=3).sum(axis=(1, 2))[:, None] + z.sum(axis=(1, 2))

    model = assert_matches(fn, images(2, 16), opset=opset)
    assert model.opset_import[0].version == opset
    counts = op_counts(model)
    assert counts["Transpose"] == 1 and counts["Pad"] == 1 and counts["Slice"] == 1


def test_unary_compare_select_cast():
    def fn(x):
        y = jnp.where(x > 0.5, jnp.exp(x), jnp.tanh(-jnp.abs(x))) + jnp.sqrt(jnp.abs(x))
        return y + (x <= 0).astype(jnp.float32) + jnp.maximum(x, 0.3) + jnp.minimum(x, 0.0)

    model = assert_matches(fn, images(2, 8))
    assert {"Where", "Greater", "LessOrEqual", "Cast", "Exp", "Tanh", "Neg", "Abs", "Sqrt", "Max", "Min"} <= set(op_counts(model))


def test_dict_outputs_and_metadata():
    x = images(2, 8)
    model = to_onnx(
        lambda x: {"maps": x * 2, "pooled": x.sum(axis=(1, 2)), "same": x * 2},
        (None, 8, 8, 3),
        input_name="pixels",
        metadata={"model": "test", "mean": "0.5"},
        producer="tester",
    )
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["maps", "pooled", "same"]
    assert model.graph.input[0].name == "pixels" and model.producer_name == "tester"
    assert {p.key: p.value for p in model.metadata_props} == {"model": "test", "mean": "0.5"}
    maps, pooled, same = inference(model).run(None, {"pixels": x})
    np.testing.assert_allclose(maps, x * 2)
    np.testing.assert_allclose(same, x * 2)
    np.testing.assert_allclose(pooled, x.sum(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize(
    "fn,primitive",
    [
        (lambda x: jnp.sort(x, axis=1), "'sort'"),
        (lambda x: jnp.cumsum(x, axis=2), "'cumsum'"),
        (lambda x: x @ jnp.swapaxes(x, 2, 3), "'dot_general'"),
    ],
)
def test_unsupported_primitive_is_named(fn, primitive):
    with pytest.raises(NotImplementedError, match=primitive) as info:
        to_onnx(fn, (None, 8, 8, 3))
    assert "float32[batch,8,8,3]" in str(info.value)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"layout": "NWHC"}, ValueError, "layout"),
        ({"opset": 12}, ValueError, "opset"),
        ({"input_shape": (8, 8, 3)}, ValueError, "input_shape"),
        ({"input_shape": (None, 8, 0, 3)}, ValueError, "input_shape"),
        ({"metadata": {"k": 1}}, TypeError, "metadata"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    shape = kwargs.pop("input_shape", (None, 8, 8, 3))
    with pytest.raises(error, match=match):
        to_onnx(lambda x: x * 2, shape, **kwargs)


def test_constant_output_is_an_error():
    with pytest.raises(ValueError, match="does not depend on the input"):
        to_onnx(lambda x: jnp.ones((2, 3)), (None, 8, 8, 3))


# -- model families ------------------------------------------------------------------------------


@dataclasses.dataclass
class Family:
    name: str
    fn: Callable
    base_fn: Callable
    x: np.ndarray
    ref: np.ndarray
    nhwc: onnx.ModelProto
    nchw: onnx.ModelProto
    convs: int


FAMILIES = {
    "classifier": ("hrnet_w18_small", {}),
    "classifier_v2": ("hrnet_w18_small_v2", {}),
    "segmenter": ("hrnetv2_w18_small_seg", {}),
    "segmenter_align_corners": ("hrnetv2_w18_small_seg", {"align_corners": True}),
    "pose": ("pose_hrnet_w18_small", {}),
    "squeeze_excite": ("se_hrnet_w18_c", {}),
}


# The fast tier takes the segmenter with align_corners (convolutions, both fusions, the resizes'
# harder grid; tests/test_export.py runs a classifier and a pose network through ONNX Runtime there
# too); the full suite adds every family.
SLOW_FAMILIES = {"classifier", "classifier_v2", "segmenter", "pose", "squeeze_excite"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(k, marks=pytest.mark.slow) if k in SLOW_FAMILIES else k for k in FAMILIES],
)
def family(request) -> Family:
    name, overrides = FAMILIES[request.param]
    base = create_model(name, **overrides)
    variables = calibrated(init_variables(base, jax.random.key(0), (1, SIZE, SIZE, 3)))
    folded = fold_batchnorm(variables)
    model = create_model(name, fold_bn=True, plain_convs=True, **overrides)

    def fn(x):
        return model.apply(folded, x)

    def base_fn(x):
        return base.apply(variables, x)

    x = images(5, SIZE, seed=1)
    metadata = {"arch": name, "layout": "NHWC"}
    return Family(
        name=request.param,
        fn=fn,
        base_fn=base_fn,
        x=x,
        ref=np.asarray(jax.jit(fn)(x), np.float64),
        nhwc=to_onnx(fn, (None, SIZE, SIZE, 3), metadata=metadata),
        nchw=to_onnx(fn, (None, SIZE, SIZE, 3), layout="NCHW", metadata={**metadata, "layout": "NCHW"}),
        convs=primitive_count(fn, (1, SIZE, SIZE, 3), "conv_general_dilated"),
    )


def test_family_matches_jax_at_batch_1_and_5(family):
    """One dynamic-batch graph at batch 5 and 1, within TOLERANCE of the JAX function, whose output
    depends on the image (not only a common offset)."""
    centred = family.ref - family.ref.mean(0)
    assert np.abs(centred).max() / np.abs(family.ref).max() > 1e-3
    assert relative_error(run(family.nhwc, family.x), family.ref) < TOLERANCE
    assert relative_error(run(family.nhwc, family.x[:1]), family.ref[:1]) < TOLERANCE


def test_family_nchw_layout(family):
    out = run(family.nchw, family.x.transpose(0, 3, 1, 2))
    ref = family.ref.transpose(0, 3, 1, 2) if family.ref.ndim == 4 else family.ref
    assert relative_error(out, ref) < TOLERANCE
    dims = [[d.dim_value or d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim] for m in (family.nhwc, family.nchw)]
    assert dims == [["batch", SIZE, SIZE, 3], ["batch", 3, SIZE, SIZE]]


def test_family_folded_matches_unfolded(family):
    base = np.asarray(jax.jit(family.base_fn)(family.x))
    assert_logits_match(family.ref, base, f"{family.name} folded vs unfolded")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_family_graph_is_clean(family, layout):
    model = family.nhwc if layout == "NHWC" else family.nchw
    onnx.checker.check_model(model, full_check=True)
    counts = op_counts(model)
    assert set(counts) <= EMITTED_OPS
    assert counts["Conv"] == family.convs
    assert "Identity" not in counts and "BatchNormalization" not in counts
    four_d = len(model.graph.output[0].type.tensor_type.shape.dim) == 4
    assert four_d == (family.ref.ndim == 4)
    assert counts["Transpose"] == ((2 if four_d else 1) if layout == "NHWC" else 0)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    assert {p.key: p.value for p in model.metadata_props}["layout"] == layout
    # the batch is dynamic: one dim_param on the input and the output
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # nothing dead: every initializer and node output is consumed or is the graph's output
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    assert {i.name for i in model.graph.initializer} <= consumed
    assert {o for n in model.graph.node for o in n.output} <= consumed
    # every intermediate is declared, and ONNX shape inference agrees with every declared dimension
    declared = {v.name: v for v in model.graph.value_info}
    assert {o for n in model.graph.node for o in n.output} - {o.name for o in model.graph.output} <= set(declared)
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(bare, strict_mode=True).graph.value_info}
    for name, value in declared.items():
        ours = [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
        theirs = [d.dim_value if d.HasField("dim_value") else None for d in inferred[name].type.tensor_type.shape.dim]
        assert len(ours) == len(theirs) and all(t is None or t == o for o, t in zip(ours, theirs)), (name, ours, theirs)
