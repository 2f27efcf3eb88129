"""`conv.conv2d` (hand-written gradients for XLA:CPU, matrix products for convolutions smaller than
their kernel) against XLA's own convolution and its gradients."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from hrnet_flax.models import conv
from hrnet_flax.models.initialization import init_variables
from hrnet_flax.models.registry import create_model

# (input H, W, Cin, Cout, kernel, stride, padding): HRNet's kinds plus odd sizes and asymmetric padding.
CASES = [
    (9, 9, 5, 7, 3, 1, ((1, 1), (1, 1))),
    (16, 12, 4, 6, 3, 2, ((1, 1), (1, 1))),
    (15, 13, 3, 4, 3, 2, ((1, 1), (1, 1))),
    (8, 8, 6, 5, 1, 1, ((0, 0), (0, 0))),
    (9, 7, 6, 5, 1, 2, ((0, 0), (0, 0))),
    (10, 10, 3, 4, 3, 1, ((2, 0), (0, 1))),
    # Strided input gradients by phases (`conv.input_grad`): one convolution for all phases (thin
    # inputs) or one per phase (from `COMBINED_PHASES_BELOW` input channels), odd sizes, 5x5 kernels.
    (11, 10, 4, 3, 3, 2, ((2, 0), (0, 1))),
    (8, 8, 64, 3, 3, 2, ((1, 1), (1, 1))),
    (9, 7, 64, 5, 1, 2, ((0, 0), (0, 0))),
    (12, 11, 3, 4, 5, 2, ((2, 2), (2, 2))),
    # Smaller than the kernel (`conv.patches_conv2d`): the input, the output, or one side only.
    (2, 2, 6, 5, 3, 2, ((1, 1), (1, 1))),
    (4, 4, 3, 4, 3, 2, ((1, 1), (1, 1))),
    (1, 1, 4, 3, 3, 1, ((1, 1), (1, 1))),
    (2, 5, 4, 5, 3, 1, ((1, 1), (1, 0))),
]


def reference(x, w, stride, padding):
    return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=conv.NHWC)


def value_and_grads(fn, x, w, dy):
    y, vjp = jax.vjp(fn, x, w)
    return (y, *vjp(dy))


@pytest.mark.parametrize("explicit_grads", [True, False])
@pytest.mark.parametrize("h,w_,cin,cout,k,stride,padding", CASES)
def test_conv2d_matches_xla_value_and_gradients(h, w_, cin, cout, k, stride, padding, explicit_grads):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, h, w_, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
    y_ref = reference(x, w, stride, padding)
    dy = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    fn = lambda x, w: conv.conv2d(x, w, (stride, stride), padding, explicit_grads)  # noqa: E731
    ours = jax.jit(lambda x, w, dy: value_and_grads(fn, x, w, dy))
    ref = jax.jit(lambda x, w, dy: value_and_grads(lambda x, w: reference(x, w, stride, padding), x, w, dy))
    for name, a, b in zip(("output", "input gradient", "weight gradient"), ours(x, w, dy), ref(x, w, dy)):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("explicit_grads", [True, False])
@pytest.mark.parametrize("h,w_,cin,cout,k,stride,padding", CASES)
def test_conv2d_is_a_matrix_product_exactly_when_smaller_than_the_kernel(h, w_, cin, cout, k, stride, padding, explicit_grads):
    """With either kind of gradient: XLA:CPU runs such convolutions on a slow generic kernel."""
    x, w = jnp.zeros((2, h, w_, cin)), jnp.zeros((k, k, cin, cout))
    fn = lambda x, w: conv.conv2d(x, w, (stride, stride), padding, explicit_grads).sum()  # noqa: E731
    jaxpr = str(jax.make_jaxpr(jax.grad(fn, (0, 1)))(x, w))
    small = h < 5 or w_ < 5  # the CASES above
    assert conv.smaller_than_kernel(x.shape, w.shape, (stride, stride), padding) == small
    assert ("conv_general_dilated" not in jaxpr) == small
    assert ("dot_general" in jaxpr) or not small


def test_conv2d_gradients_inside_scan_and_in_bfloat16():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
    ws = jnp.asarray(rng.normal(size=(3, 3, 3, 4, 4)) * 0.3, jnp.float32)  # three stacked layers
    padding = ((1, 1), (1, 1))

    def loss(ws, x, fn, dtype):
        def body(h, w):
            return jnp.tanh(fn(h.astype(dtype), w.astype(dtype), padding)).astype(jnp.float32), None

        return jnp.sum(lax.scan(body, x, ws)[0] ** 2)

    ours = lambda h, w, p: conv.conv2d(h, w, (1, 1), p)  # noqa: E731
    theirs = lambda h, w, p: reference(h, w, 1, p)  # noqa: E731
    grads = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        for name, fn in (("ours", ours), ("xla", theirs)):
            grads[name, dtype] = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=(2, 3))(ws, x, fn, dtype)
    for a, b in zip(grads["ours", jnp.float32], grads["xla", jnp.float32]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads["ours", jnp.bfloat16], grads["xla", jnp.float32]):  # bf16 compute, float32 params
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=0.1, atol=0.05 * float(jnp.abs(b).max()))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"padding": "SAME"}, "explicit padding"),
        ({"rhs_dilation": (2, 2)}, "dilations"),
        ({"feature_group_count": 2}, "groups 2"),
        ({"dimension_numbers": ("NCHW", "OIHW", "NCHW")}, "NHWC/HWIO"),
    ],
)
def test_conv_general_dilated_names_what_it_does_not_support(kwargs, message):
    args = {"padding": ((1, 1), (1, 1)), "dimension_numbers": conv.NHWC, **kwargs}
    with pytest.raises(ValueError, match=message):
        conv.conv_general_dilated(jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4)), (1, 1), **args)


@pytest.mark.slow
def test_model_gradients_equal_with_and_without_explicit_conv_gradients():
    """In float64: at batch 2 and 32 px (1x1 maps at the lowest branch), BatchNorm over two values
    amplifies rounding: in float32 the two losses came out 2.13 and 1.90 (float64: 1.70); in
    float64 the two agree to 1e-9 (loss) and 2e-7 (gradients, of the largest)."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 32, 32, 3)), jnp.float64)
        out = {}
        for gemm in (False, True):
            model = create_model("hrnet_w18_small", num_classes=5, explicit_conv_grads=gemm, dtype=jnp.float64)
            variables = init_variables(model, jax.random.key(0), (1, 32, 32, 3))
            variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)

            def loss(params):
                logits, new = model.apply(
                    {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True, mutable=["batch_stats"]
                )
                return jnp.sum(logits.astype(jnp.float64) ** 2), new

            out[gemm] = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
        (loss0, stats0), grads0 = out[False]
        (loss1, stats1), grads1 = out[True]
        assert loss0.dtype == jnp.float64
        np.testing.assert_allclose(loss1, loss0, rtol=1e-7)
        scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads0))
        err = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0)))
        assert err < 1e-6 * scale, f"gradients differ by {err / scale:.2g} of their largest value (measured 2.2e-7)"
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9), stats1, stats0)


def test_conv2d_gradients_in_float64():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float64)
        for k, stride in ((3, 2), (1, 1)):
            w = jnp.asarray(rng.normal(size=(k, k, 4, 6)), jnp.float64)
            pad = ((k // 2, k // 2),) * 2
            dy = jnp.asarray(rng.normal(size=reference(x, w, stride, pad).shape), jnp.float64)
            ours = value_and_grads(lambda x, w: conv.conv2d(x, w, (stride, stride), pad), x, w, dy)
            ref = value_and_grads(lambda x, w: reference(x, w, stride, pad), x, w, dy)
            for a, b in zip(ours, ref):
                assert a.dtype == b.dtype == jnp.float64
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("combined", [True, False])
@pytest.mark.parametrize(
    "h,w_,k,stride,padding",
    [(8, 8, 3, 2, ((1, 1), (1, 1))), (9, 7, 3, 2, ((1, 1), (1, 1))), (9, 8, 1, 2, ((0, 0), (0, 0))),
     (12, 12, 3, 3, ((1, 1), (1, 1))), (10, 9, 2, 2, ((0, 0), (1, 0))), (11, 10, 5, 2, ((2, 1), (0, 2)))],
)
def test_strided_input_gradient_by_phases_is_exact(h, w_, k, stride, padding, combined, monkeypatch):
    """In float64, both ways of computing the phases (one convolution, or one per phase) against XLA."""
    monkeypatch.setattr(conv, "COMBINED_PHASES_BELOW", 10**6 if combined else 0)
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(2, h, w_, 3)), jnp.float64)
        w = jnp.asarray(rng.normal(size=(k, k, 3, 4)), jnp.float64)
        y, vjp = jax.vjp(lambda x: reference(x, w, stride, padding), x)
        dy = jnp.asarray(rng.normal(size=y.shape), jnp.float64)
        ours = conv.input_grad(dy, w, x.shape, (stride, stride), padding)
        np.testing.assert_allclose(ours, vjp(dy)[0], rtol=1e-12, atol=1e-12)


def _conv_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            (kernel,), (out,) = eqn.invars[1:], eqn.outvars
            total += np.prod(out.aval.shape) * np.prod(kernel.aval.shape[:-1])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _conv_macs(sub)
    return total


@pytest.mark.parametrize("cin,limit", [(8, 16 / 9), (64, 1.0)])
def test_strided_input_gradient_does_no_more_work_than_the_forward(cin, limit):
    """A zero-dilated dy would cost 4x the forward's multiply-adds for stride 2; the phases cost 1x
    (one convolution per phase) or 16/9 (all phases in one, below `COMBINED_PHASES_BELOW` channels)."""
    x, w, pad = jnp.zeros((2, 16, 16, cin)), jnp.zeros((3, 3, cin, 8)), ((1, 1), (1, 1))
    forward = _conv_macs(jax.make_jaxpr(lambda x: conv.conv2d(x, w, (2, 2), pad))(x).jaxpr)
    dy = jnp.zeros((2, 8, 8, 8))
    backward = _conv_macs(jax.make_jaxpr(lambda dy: conv.input_grad(dy, w, x.shape, (2, 2), pad))(dy).jaxpr)
    assert backward == pytest.approx(limit * forward)
