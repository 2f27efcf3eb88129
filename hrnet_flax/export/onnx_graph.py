"""An ONNX graph of a JAX inference function, translated from its jaxpr (`to_onnx`).

The translator covers the primitives of HRNet's folded inference functions (`fold_bn=True,
plain_convs=True`) and a few elementwise and layout primitives around them. The function's closed-over
parameters become initializers; equations whose inputs are all constants are evaluated at conversion
time (e.g. `jnp.take`'s index normalisation); nested calls (`jit`, `custom_jvp_call`, ...) are inlined.

Layout: ONNX convolutions are NCHW and the models NHWC. Every value carries a permutation from its
logical (jaxpr) axes to its physical (ONNX) axes, and each operation's axes are translated through
it, so 4-D tensors flow in NCHW with no transposes between layers. A value may also be broadcast
lazily: a physical size 1 where the logical size is larger, left to ONNX's multidirectional
broadcasting in elementwise operations and expanded only where an operation needs the full tensor.
A `Transpose` is emitted only where a value really needs another element order (and at the graph's
edges in the NHWC layout).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from jax import lax
from jax.extend import core as jcore
from onnx import helper

OPSET = 17
MIN_OPSET = 13  # Reshape/Squeeze/ReduceSum with shape and axes inputs
# Every ONNX op type `to_onnx` may emit.
EMITTED_OPS = frozenset({
    "Abs", "Add", "Cast", "Concat", "Conv", "Div", "Equal", "Exp", "Expand", "Gather", "Gemm", "Greater",
    "GreaterOrEqual", "Identity", "Less", "LessOrEqual", "MatMul", "Max", "Min", "Mul", "Neg", "Pad", "ReduceMax",
    "ReduceMin", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Sqrt", "Sub", "Tanh", "Transpose",
    "Where",
})  # fmt: skip
LAYOUTS = ("NHWC", "NCHW")
NCHW = (0, 3, 1, 2)  # physical axes of a logical NHWC tensor in NCHW order
BATCH = "batch"

# Primitives whose body is inlined, and the params holding it.
_CALLS = {
    "jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
    "remat", "checkpoint",
}  # fmt: skip
_CALL_PARAMS = ("call_jaxpr", "jaxpr", "fun_jaxpr")
_IDENTITY = {"name", "copy", "copy_p", "optimization_barrier"}
# Elementwise primitives (equal ranks, size-1 broadcasting): constants fold on their compact arrays.
_ELEMENTWISE = {
    "abs", "add", "and", "ceil", "clamp", "convert_element_type", "div", "eq", "exp", "floor", "ge", "gt",
    "integer_pow", "le", "log", "logistic", "lt", "max", "min", "mul", "ne", "neg", "not", "or", "pow",
    "rem", "round", "rsqrt", "select_n", "sign", "sqrt", "square", "sub", "tanh",
}  # fmt: skip
_COMPARE = {"lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "eq": "Equal"}
_UNARY = {"logistic": "Sigmoid", "neg": "Neg", "exp": "Exp", "tanh": "Tanh", "sqrt": "Sqrt", "abs": "Abs"}


def _known(d: Any) -> bool:
    return isinstance(d, (int, np.integer))


def _unit(d: Any) -> bool:
    return _known(d) and int(d) == 1


def _same(a: Any, b: Any) -> bool:
    if _known(a) and _known(b):
        return int(a) == int(b)
    if _known(a) != _known(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # an undecidable comparison of symbolic dimensions
        return False


def _insert_units(seq: list[int], units: list[int]) -> tuple[int, ...]:
    """`seq` (physical order of logical axes) with each of `units` placed right after its logical
    predecessor (the first axis in front)."""
    seq = list(seq)
    for a in sorted(units):
        seq.insert(0 if a == 0 else seq.index(a - 1) + 1, a)
    return tuple(seq)


def _group(old: tuple, new: tuple) -> list[tuple[list[int], list[int]]] | None:
    """The non-unit axes of a reshape `old` -> `new` in consecutive groups of equal size products, or
    None where no such grouping exists (a symbolic dimension must map to an equal one on its own)."""
    a = [i for i, d in enumerate(old) if not _unit(d)]
    b = [i for i, d in enumerate(new) if not _unit(d)]
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if i == len(a) or j == len(b):
            return None
        ga, gb, pa, pb = [a[i]], [b[j]], old[a[i]], new[b[j]]
        i, j = i + 1, j + 1
        if not (_known(pa) and _known(pb)):
            if not _same(pa, pb):
                return None
        else:
            while pa != pb:
                if pa < pb:
                    if i == len(a) or not _known(old[a[i]]):
                        return None
                    ga.append(a[i])
                    pa, i = pa * old[a[i]], i + 1
                else:
                    if j == len(b) or not _known(new[b[j]]):
                        return None
                    gb.append(b[j])
                    pb, j = pb * new[b[j]], j + 1
        groups.append((ga, gb))
    return groups


def _reshape_perm(old: tuple, perm: tuple[int, ...], new: tuple) -> tuple[int, ...] | None:
    """Physical order of `new`'s axes that makes the reshape of a value laid out as `perm` a plain
    physical reshape, or None when the axis groups are not contiguous in that order."""
    groups = _group(old, new)
    if groups is None:
        return None
    phys = [a for a in perm if not _unit(old[a])]
    owner = {a: g for g, (axes, _) in enumerate(groups) for a in axes}
    order, pos = [], 0
    while pos < len(phys):
        g = owner[phys[pos]]
        axes = groups[g][0]
        if phys[pos : pos + len(axes)] != axes:
            return None
        order.append(g)
        pos += len(axes)
    seq = [a for g in order for a in groups[g][1]]
    return _insert_units(seq, [a for a, d in enumerate(new) if _unit(d)])


@dataclasses.dataclass
class _Val:
    """A jaxpr value: a constant (`const`, logical axis order, broadcastable to `shape`) or an ONNX
    tensor `name` whose physical axis i is logical axis `perm[i]`, of physical shape `phys` (1 on
    lazily broadcast axes)."""

    shape: tuple
    dtype: np.dtype
    const: np.ndarray | None = None
    name: str | None = None
    perm: tuple[int, ...] = ()
    phys: tuple = ()
    producer: tuple | None = None  # (node, logical channel axis) of a Conv or Gemm still without bias

    @property
    def rank(self) -> int:
        return len(self.shape)

    def size(self, axis: int) -> Any:
        return self.phys[self.perm.index(axis)]

    def lazy(self) -> list[int]:
        """Physical positions broadcast lazily."""
        return [i for i, a in enumerate(self.perm) if _unit(self.phys[i]) and not _unit(self.shape[a])]

    def nonunit(self) -> int:
        return sum(not _unit(d) for d in self.phys)


@dataclasses.dataclass
class _Eqn:
    prim: Any
    params: dict
    ins: list[int]
    outs: list[int]
    in_avals: list
    out_avals: list

    def describe(self) -> str:
        shapes = ", ".join(a.str_short() for a in self.in_avals)
        params = {k: v for k, v in self.params.items() if not isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr))}
        text = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"'{self.prim.name}' with inputs ({shapes}) and params {{{text[:240]}}}"


class _Translator:
    def __init__(self, opset: int, batch: Any):
        self.opset = opset
        self.batch = batch
        self.vals: dict[int, _Val] = {}
        self.eqns: list[_Eqn] = []
        self.uses: dict[int, int] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.info: dict[str, tuple[tuple, np.dtype]] = {}
        self.inits: dict[str, np.ndarray] = {}
        self._init_keys: dict[tuple, str] = {}
        self._count = 0
        self._batch_dim: str | None = None
        self.input_name = ""

    # -- jaxpr -----------------------------------------------------------------------------------

    def ref(self, val: _Val | None = None) -> int:
        self._count += 1
        if val is not None:
            self.vals[self._count] = val
        return self._count

    def const_ref(self, value: Any, aval: Any) -> int:
        array = np.asarray(value, dtype=aval.dtype)
        return self.ref(_Val(tuple(aval.shape), array.dtype, const=array))

    def flatten(self, jaxpr: jcore.Jaxpr, consts: list, args: list[int]) -> list[int]:
        """Append `jaxpr`'s equations, nested calls inlined, to `self.eqns`; the refs of its outputs."""
        env: dict = {}

        def read(atom: Any) -> int:
            if isinstance(atom, jcore.Literal):
                return self.const_ref(atom.val, atom.aval)
            return env[atom]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = self.const_ref(value, var.aval)
        env.update(zip(jaxpr.invars, args))
        for eqn in jaxpr.eqns:
            ins = [read(a) for a in eqn.invars]
            name = eqn.primitive.name
            if name in _IDENTITY:
                outs = ins
            elif name in _CALLS:
                sub = next(eqn.params[k] for k in _CALL_PARAMS if k in eqn.params)
                if isinstance(sub, jcore.ClosedJaxpr):
                    outs = self.flatten(sub.jaxpr, sub.consts, ins)
                else:
                    outs = self.flatten(sub, [], ins)
            else:
                outs = [self.ref() for _ in eqn.outvars]
                self.eqns.append(
                    _Eqn(eqn.primitive, eqn.params, ins, outs, [a.aval for a in eqn.invars], [v.aval for v in eqn.outvars])
                )
            for var, r in zip(eqn.outvars, outs):
                if not isinstance(var, jcore.DropVar):
                    env[var] = r
        return [read(a) for a in jaxpr.outvars]

    def translate(self, outputs: list[int]) -> None:
        for e in self.eqns:
            for r in e.ins:
                self.uses[r] = self.uses.get(r, 0) + 1
        for r in outputs:
            self.uses[r] = self.uses.get(r, 0) + 1
        for e in self.eqns:
            vals = [self.vals[r] for r in e.ins]
            outs = None
            if all(v.const is not None for v in vals):
                outs = self.fold(e, vals)
            if outs is None:
                handler = getattr(self, "op_" + e.prim.name, None)
                if handler is None:
                    raise NotImplementedError(f"to_onnx: no ONNX translation for primitive {e.describe()}")
                outs = handler(e, vals)
            for r, v in zip(e.outs, outs):
                self.vals[r] = v

    def fold(self, e: _Eqn, vals: list[_Val]) -> list[_Val] | None:
        """The outputs of an equation on constants, evaluated now (None where a shape is symbolic)."""
        name = e.prim.name
        if name == "broadcast_in_dim":
            return [self.broadcast_const(e, vals[0])]
        if name in _ELEMENTWISE:
            shape = np.broadcast_shapes(*(v.const.shape for v in vals))
            args = [np.broadcast_to(v.const, shape) for v in vals]
        else:
            if not all(_known(d) for a in e.in_avals + e.out_avals for d in a.shape):
                return None
            args = [np.broadcast_to(v.const, a.shape) for v, a in zip(vals, e.in_avals)]
        out = e.prim.bind(*(jnp.asarray(a) for a in args), **e.params)
        outs = out if e.prim.multiple_results else [out]
        return [_Val(tuple(a.shape), np.dtype(a.dtype), const=np.asarray(o)) for o, a in zip(outs, e.out_avals)]

    def broadcast_const(self, e: _Eqn, x: _Val) -> _Val:
        dims = tuple(e.params["broadcast_dimensions"])
        shape = tuple(e.params["shape"])
        array = np.transpose(x.const, np.argsort(dims)) if x.const.ndim else x.const
        sizes = dict(zip(sorted(dims), array.shape))
        compact = array.reshape(tuple(sizes.get(k, 1) for k in range(len(shape))))
        return _Val(shape, x.dtype, const=compact)

    # -- emitting --------------------------------------------------------------------------------

    def node(self, op: str, inputs: list[str], phys: tuple, dtype: np.dtype, **attrs: Any) -> onnx.NodeProto:
        self._count += 1
        out = f"{op.lower()}_{self._count}"
        node = helper.make_node(op, inputs, [out], name=out, **attrs)
        self.nodes.append(node)
        self.info[out] = (tuple(phys), np.dtype(dtype))
        return node

    def emit(self, op: str, inputs: list[str], phys: tuple, dtype: np.dtype, **attrs: Any) -> str:
        return self.node(op, inputs, phys, dtype, **attrs).output[0]

    def init(self, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array)
        key = (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())
        if key not in self._init_keys:
            name = f"const_{len(self._init_keys)}"
            self._init_keys[key] = name
            self.inits[name] = array
        return self._init_keys[key]

    def shape_input(self, dims: tuple, *, infer: bool) -> str:
        """A 1-D int64 shape tensor; a symbolic dimension is -1 where `infer` (Reshape), else read
        from the graph input (Expand)."""
        symbolic = [d for d in dims if not _known(d)]
        if not symbolic:
            return self.init(np.array([int(d) for d in dims], np.int64))
        if infer:
            if len(symbolic) > 1:
                raise NotImplementedError(f"to_onnx: a reshape to {dims} has more than one symbolic dimension")
            return self.init(np.array([int(d) if _known(d) else -1 for d in dims], np.int64))
        pieces: list[str] = []
        run: list[int] = []
        for d in dims:
            if _known(d):
                run.append(int(d))
                continue
            if run:
                pieces.append(self.init(np.array(run, np.int64)))
                run = []
            pieces.append(self.batch_dim(d))
        if run:
            pieces.append(self.init(np.array(run, np.int64)))
        return self.emit("Concat", pieces, (len(dims),), np.dtype(np.int64), axis=0)

    def batch_dim(self, d: Any) -> str:
        if self.batch is None or not _same(d, self.batch):
            raise NotImplementedError(f"to_onnx: cannot expand to the symbolic dimension {d}")
        if self._batch_dim is None:
            shape = self.emit("Shape", [self.input_name], (4,), np.dtype(np.int64))
            self._batch_dim = self.emit("Gather", [shape, self.init(np.array([0], np.int64))], (1,), np.dtype(np.int64), axis=0)
        return self._batch_dim

    def reshape(self, x: _Val, shape: tuple, perm: tuple[int, ...], phys: tuple) -> _Val:
        """`x`'s tensor reshaped to physical `phys`, as a value of logical `shape` laid out as `perm`."""
        if len(phys) == len(x.phys) and all(_same(a, b) for a, b in zip(phys, x.phys)):
            name = x.name
        else:
            name = self.emit("Reshape", [x.name, self.shape_input(phys, infer=True)], phys, x.dtype)
        return _Val(shape, x.dtype, name=name, perm=perm, phys=phys)

    def to(self, x: _Val, perm: tuple[int, ...], dense: bool = False) -> _Val:
        """`x` as an ONNX tensor laid out as `perm` (all of it broadcast where `dense`): a constant
        becomes an initializer; a move of unit axes is a Reshape, any other reorder a Transpose."""
        perm = tuple(perm)
        if x.const is not None:
            array = x.const
            if dense and all(_known(d) for d in x.shape):
                array = np.broadcast_to(array, x.shape)
            array = np.transpose(array, perm) if array.ndim else array
            x = _Val(x.shape, x.dtype, name=self.init(array), perm=perm, phys=array.shape)
        elif x.perm != perm:
            sizes = dict(zip(x.perm, x.phys))
            phys = tuple(sizes[a] for a in perm)
            if [a for a in x.perm if not _unit(sizes[a])] == [a for a in perm if not _unit(sizes[a])]:
                x = self.reshape(x, x.shape, perm, phys)
            else:
                name = self.emit("Transpose", [x.name], phys, x.dtype, perm=[x.perm.index(a) for a in perm])
                x = _Val(x.shape, x.dtype, name=name, perm=perm, phys=phys)
        lazy = x.lazy()
        if dense and lazy:
            target = tuple(x.shape[a] if i in lazy else 1 for i, a in enumerate(x.perm))
            phys = tuple(x.shape[a] for a in x.perm)
            name = self.emit("Expand", [x.name, self.shape_input(target, infer=False)], phys, x.dtype)
            x = _Val(x.shape, x.dtype, name=name, perm=x.perm, phys=phys)
        return x

    @staticmethod
    def out_phys(e: _Eqn, perm: tuple[int, ...]) -> tuple:
        return tuple(e.out_avals[0].shape[a] for a in perm)

    def new(self, e: _Eqn, name: str, perm: tuple[int, ...], producer: tuple | None = None) -> _Val:
        aval = e.out_avals[0]
        shape = tuple(aval.shape)
        phys = self.out_phys(e, perm)
        self.info[name] = (phys, np.dtype(aval.dtype))
        return _Val(shape, np.dtype(aval.dtype), name=name, perm=tuple(perm), phys=phys, producer=producer)

    def unsupported(self, e: _Eqn, why: str) -> NotImplementedError:
        return NotImplementedError(f"to_onnx: cannot translate {e.describe()}: {why}")

    # -- elementwise -----------------------------------------------------------------------------

    def elementwise(self, e: _Eqn, vals: list[_Val], op: str) -> list[_Val]:
        aval = e.out_avals[0]
        shape, rank = tuple(aval.shape), len(aval.shape)
        dynamic = [v for v in vals if v.const is None]
        perm = max(dynamic, key=_Val.nonunit).perm
        names, physes = [], []
        for v in vals:
            if v.rank == 0:  # a scalar broadcasts in ONNX as in lax
                names.append(self.to(v, ()).name)
                continue
            if v.rank != rank:
                raise self.unsupported(e, "operands of different ranks")
            t = self.to(v, perm)
            names.append(t.name)
            physes.append(t.phys)
        phys = []
        for dims in zip(*physes):
            big = [d for d in dims if not _unit(d)]
            phys.append(big[0] if big else 1)
        name = self.emit(op, names, tuple(phys), aval.dtype)
        return [_Val(shape, np.dtype(aval.dtype), name=name, perm=perm, phys=tuple(phys))]

    def op_add(self, e: _Eqn, vals: list[_Val]) -> list[_Val]:
        # A per-channel constant added to a Conv or Gemm output used once becomes its bias input.
        for i in (0, 1):
            x, c = vals[i], vals[1 - i]
            if x.producer is None or c.const is None or self.uses[e.ins[i]] != 1 or x.dtype != c.dtype:
                continue
            node, axis = x.producer
            if c.const.ndim not in (0, x.rank) or x.lazy():
                continue
            if not all(_same(a, b) for a, b in zip(x.shape, e.out_avals[0].shape)):
                continue
            if any(not _unit(d) for k, d in enumerate(c.const.shape) if k != axis):
                continue
            node.input.append(self.init(np.broadcast_to(c.const.reshape(-1), (x.shape[axis],)).astype(x.dtype)))
            return [dataclasses.replace(x, producer=None)]
        return self.elementwise(e, vals, "Add")

    def op_max(self, e: _Eqn, vals: list[_Val]) -> list[_Val]:
        for i in (0, 1):
            x, c = vals[i], vals[1 - i]
            if x.const is None and c.const is not None and c.rank in (0, x.rank) and not np.any(c.const):
                if all(_same(a, b) for a, b in zip(x.shape, e.out_avals[0].shape)):
                    name = self.emit("Relu", [x.name], x.phys, x.dtype)
                    return [dataclasses.replace(x, name=name, producer=None)]
        return self.elementwise(e, vals, "Max")

    def op_sub(self, e, vals):
        return self.elementwise(e, vals, "Sub")

    def op_mul(self, e, vals):
        return self.elementwise(e, vals, "Mul")

    def op_div(self, e, vals):
        return self.elementwise(e, vals, "Div")

    def op_min(self, e, vals):
        return self.elementwise(e, vals, "Min")

    def compare(self, e, vals):
        return self.elementwise(e, vals, _COMPARE[e.prim.name])

    op_lt = op_le = op_gt = op_ge = op_eq = compare

    def unary(self, e, vals):
        x = vals[0]
        name = self.emit(_UNARY[e.prim.name], [x.name], x.phys, e.out_avals[0].dtype)
        return [dataclasses.replace(x, name=name, dtype=np.dtype(e.out_avals[0].dtype), producer=None)]

    op_logistic = op_neg = op_exp = op_tanh = op_sqrt = op_abs = unary

    def op_select_n(self, e, vals):
        if len(vals) != 3 or vals[0].dtype != np.bool_:
            raise self.unsupported(e, "only select_n with a boolean predicate and two cases translates")
        pred, false, true = vals
        (out,) = self.elementwise(e, [pred, true, false], "Where")
        return [out]

    def op_convert_element_type(self, e, vals):
        x, dtype = vals[0], np.dtype(e.out_avals[0].dtype)
        if dtype == x.dtype:
            return [x]
        name = self.emit("Cast", [x.name], x.phys, dtype, to=helper.np_dtype_to_tensor_dtype(dtype))
        return [dataclasses.replace(x, name=name, dtype=dtype, producer=None)]

    # -- layout ----------------------------------------------------------------------------------

    def op_broadcast_in_dim(self, e, vals):
        x = vals[0]
        dims = tuple(e.params["broadcast_dimensions"])
        shape = tuple(e.params["shape"])
        perm = _insert_units([dims[a] for a in x.perm], [k for k in range(len(shape)) if k not in dims])
        sizes = {dims[a]: x.size(a) for a in range(x.rank)}
        phys = tuple(sizes.get(k, 1) for k in perm)
        return [self.reshape(x, shape, perm, phys)]

    def op_reshape(self, e, vals):
        if e.params.get("dimensions") is not None:
            raise self.unsupported(e, "a reshape with `dimensions`")
        return [self.reshape_to(vals[0], tuple(e.out_avals[0].shape))]

    def op_squeeze(self, e, vals):
        return [self.reshape_to(vals[0], tuple(e.out_avals[0].shape))]

    def reshape_to(self, x: _Val, shape: tuple) -> _Val:
        if x.const is not None:
            x = self.to(x, tuple(range(x.rank)), dense=True)
        x = self.to(x, x.perm, dense=True)
        perm = _reshape_perm(x.shape, x.perm, shape)
        if perm is None:
            x = self.to(x, tuple(range(x.rank)))
            perm = tuple(range(len(shape)))
        return self.reshape(x, shape, perm, tuple(shape[a] for a in perm))

    def op_transpose(self, e, vals):
        x = vals[0]
        inverse = np.argsort(e.params["permutation"])
        perm = tuple(int(inverse[a]) for a in x.perm)
        return [dataclasses.replace(x, shape=tuple(e.out_avals[0].shape), perm=perm, producer=None)]

    def op_concatenate(self, e, vals):
        dynamic = [v for v in vals if v.const is None]
        perm = max(dynamic, key=_Val.nonunit).perm if dynamic else tuple(range(vals[0].rank))
        parts = [self.to(v, perm, dense=True).name for v in vals]
        axis = perm.index(e.params["dimension"])
        return [self.new(e, self.emit("Concat", parts, (), e.out_avals[0].dtype, axis=axis), perm)]

    def op_pad(self, e, vals):
        x, value = vals
        if value.const is None:
            raise self.unsupported(e, "the padding value must be a constant")
        config = e.params["padding_config"]
        if any(i != 0 or lo < 0 or hi < 0 for lo, hi, i in config):
            raise self.unsupported(e, "only non-negative edge padding translates")
        x = self.to(x, x.perm, dense=True)
        pads = [config[a][0] for a in x.perm] + [config[a][1] for a in x.perm]
        inputs = [x.name, self.init(np.array(pads, np.int64)), self.init(np.asarray(value.const, x.dtype))]
        name = self.emit("Pad", inputs, (), x.dtype)
        return [self.new(e, name, x.perm)]

    def op_slice(self, e, vals):
        x = vals[0]
        starts, limits = e.params["start_indices"], e.params["limit_indices"]
        strides = e.params["strides"] or (1,) * x.rank
        axes, begin, end, step = [], [], [], []
        for i, a in enumerate(x.perm):
            if _unit(x.phys[i]) or (starts[a] == 0 and _same(limits[a], x.shape[a]) and strides[a] == 1):
                continue  # a lazily broadcast axis stays size 1; a full axis needs no slicing
            if not all(_known(v) for v in (starts[a], limits[a])):
                raise self.unsupported(e, "a slice of a symbolic dimension")
            axes.append(i)
            begin.append(starts[a])
            end.append(limits[a])
            step.append(strides[a])
        shape = tuple(e.out_avals[0].shape)
        phys = tuple(1 if _unit(x.phys[i]) else shape[a] for i, a in enumerate(x.perm))
        if not axes:
            return [_Val(shape, x.dtype, name=x.name, perm=x.perm, phys=phys)]
        inputs = [x.name] + [self.init(np.array(v, np.int64)) for v in (begin, end, axes, step)]
        return [_Val(shape, x.dtype, name=self.emit("Slice", inputs, phys, x.dtype), perm=x.perm, phys=phys)]

    # -- compute ---------------------------------------------------------------------------------

    def op_conv_general_dilated(self, e, vals):
        x, w = vals
        p = e.params
        lhs, rhs, out = (tuple(s) for s in p["dimension_numbers"])
        if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
            raise self.unsupported(e, "input dilation and batch groups do not translate")
        if any(lo < 0 or hi < 0 for lo, hi in p["padding"]):
            raise self.unsupported(e, "negative padding does not translate")
        x = self.to(x, lhs, dense=True)
        kernel = self.to(w, rhs, dense=True)
        pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
        node = self.node(
            "Conv",
            [x.name, kernel.name],
            (),
            x.dtype,
            kernel_shape=[int(d) for d in kernel.phys[2:]],
            strides=[int(s) for s in p["window_strides"]],
            pads=[int(v) for v in pads],
            dilations=[int(d) for d in p["rhs_dilation"]],
            group=int(p["feature_group_count"]),
        )
        return [self.new(e, node.output[0], out, producer=(node, out[1]))]

    def op_dot_general(self, e, vals):
        x, w = vals
        (lc, rc), (lb, rb) = e.params["dimension_numbers"]
        if lb or rb or x.const is not None or w.const is None or len(lc) != 1 or w.rank not in (1, 2):
            raise self.unsupported(
                e, "only a product of a value with a constant vector or matrix over one axis, without batch axes, translates"
            )
        if np.dtype(e.out_avals[0].dtype) != x.dtype:
            raise self.unsupported(e, "a product whose result type differs from its input's")
        matrix = np.broadcast_to(w.const, w.shape)
        if w.rank == 2 and rc[0] == 1:
            matrix = matrix.T
        weight = self.init(matrix.astype(x.dtype))
        k = lc[0]
        x = self.to(x, x.perm, dense=True)
        if x.rank == 2 and w.rank == 2:
            node = self.node("Gemm", [x.name, weight], (), x.dtype, transA=int(x.perm[0] == k))
            return [self.new(e, node.output[0], (0, 1), producer=(node, 1))]
        x = self.to(x, tuple(a for a in x.perm if a != k) + (k,))
        free = [a for a in range(x.rank) if a != k]
        perm = tuple(free.index(a) for a in x.perm[:-1]) + ((len(free),) if w.rank == 2 else ())
        return [self.new(e, self.emit("MatMul", [x.name, weight], (), x.dtype), perm)]

    def reduce(self, e, vals):
        x = self.to(vals[0], vals[0].perm, dense=True)
        axes = tuple(e.params["axes"])
        if not axes:
            return [x]
        phys_axes = sorted(x.perm.index(a) for a in axes)
        kept = [a for a in x.perm if a not in axes]
        perm = tuple(a - sum(r < a for r in axes) for a in kept)
        op = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}[e.prim.name]
        if op == "ReduceSum" or self.opset >= 18:
            node = self.node(op, [x.name, self.init(np.array(phys_axes, np.int64))], (), x.dtype, keepdims=0)
        else:
            node = self.node(op, [x.name], (), x.dtype, axes=phys_axes, keepdims=0)
        return [self.new(e, node.output[0], perm)]

    op_reduce_sum = op_reduce_max = op_reduce_min = reduce

    def op_gather(self, e, vals):
        x, idx = vals
        dn = e.params["dimension_numbers"]
        if idx.const is None:
            raise self.unsupported(e, "the indices must be constants")
        if (
            len(dn.start_index_map) != 1
            or tuple(dn.collapsed_slice_dims) != tuple(dn.start_index_map)
            or dn.operand_batching_dims
            or dn.start_indices_batching_dims
        ):
            raise self.unsupported(e, "only a take along one axis translates")
        axis = dn.start_index_map[0]
        sizes = e.params["slice_sizes"]
        if sizes[axis] != 1 or not all(_same(s, d) for a, (s, d) in enumerate(zip(sizes, x.shape)) if a != axis):
            raise self.unsupported(e, "only a take along one axis translates")
        indices = np.broadcast_to(idx.const, idx.shape)[..., 0].astype(np.int64)
        k = indices.ndim
        out_rank = len(e.out_avals[0].shape)
        batch_pos = [d for d in range(out_rank) if d not in dn.offset_dims]
        if batch_pos != list(range(axis, axis + k)):
            raise self.unsupported(e, "the index axes must take the place of the gathered axis")
        n = x.shape[axis]
        if not _known(n):
            raise self.unsupported(e, "a take along a symbolic axis")
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            if e.params["mode"] == lax.GatherScatterMode.FILL_OR_DROP:
                raise self.unsupported(e, f"indices outside [0, {n}) with fill mode")
            indices = np.clip(indices, 0, n - 1)
        x = self.to(x, x.perm)
        if _unit(x.size(axis)) and n != 1:
            x = self.to(x, x.perm, dense=True)
        perm: list[int] = []
        phys: list = []
        shape = tuple(e.out_avals[0].shape)
        for i, a in enumerate(x.perm):
            if a == axis:
                perm.extend(range(axis, axis + k))
                phys.extend(indices.shape)
            else:
                perm.append(a if a < axis else a + k - 1)
                phys.append(x.phys[i])
        name = self.emit("Gather", [x.name, self.init(indices)], tuple(phys), x.dtype, axis=x.perm.index(axis))
        return [_Val(shape, x.dtype, name=name, perm=tuple(perm), phys=tuple(phys))]


def _value_info(name: str, phys: tuple, dtype: np.dtype, batch: Any) -> onnx.ValueInfoProto:
    """A tensor's declared type; the symbolic batch is the dimension parameter `batch`."""
    dims = [int(d) if _known(d) else (BATCH if _same(d, batch) else str(d)) for d in phys]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), dims)


def to_onnx(
    fn: Callable[[jax.Array], jax.Array | dict],
    input_shape: tuple[int | None, int, int, int],
    *,
    layout: str = "NHWC",
    opset: int = OPSET,
    input_name: str = "images",
    output_name: str = "logits",
    metadata: dict[str, str] | None = None,
    producer: str = "hrnet-flax",
) -> onnx.ModelProto:
    """The ONNX model of `fn` on a float32 NHWC image batch of `input_shape` (batch None: dynamic,
    the dimension `batch`). `layout="NHWC"` takes and returns NHWC tensors (a Transpose at each 4-D
    edge); `"NCHW"` declares the input and 4-D outputs NCHW. A dict output gives one graph output per
    key; an array output is named `output_name`. Raises NotImplementedError naming any primitive
    that does not translate.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"to_onnx: layout must be one of {LAYOUTS}; got {layout!r}")
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"to_onnx: opset must be in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}]; got {opset}")
    shape = tuple(input_shape)
    sizes_ok = all(_known(d) and d >= 1 for d in shape[1:]) and (shape[0] is None or (_known(shape[0]) and shape[0] >= 1))
    if len(shape) != 4 or not sizes_ok:
        raise ValueError(f"to_onnx: input_shape must be NHWC (batch or None, H, W, C) with positive sizes; got {input_shape}")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"to_onnx: metadata keys and values must be strings; got {metadata!r}")

    batch = jax.export.symbolic_shape(BATCH)[0] if shape[0] is None else int(shape[0])
    spec = jax.ShapeDtypeStruct((batch,) + tuple(int(d) for d in shape[1:]), jnp.float32)
    closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(spec)
    if isinstance(out_shapes, dict):
        if not all(isinstance(k, str) and hasattr(v, "shape") for k, v in out_shapes.items()):
            raise TypeError(f"to_onnx: fn must return an array or a flat dict of arrays keyed by strings; got {out_shapes}")
        names = sorted(out_shapes)  # the order in which JAX flattens a dict
    elif hasattr(out_shapes, "shape"):
        names = [output_name]
    else:
        raise TypeError(f"to_onnx: fn must return an array or a flat dict of arrays; got {out_shapes}")
    if input_name in names:
        raise ValueError(f"to_onnx: the input and an output are both named {input_name!r}")

    t = _Translator(opset, batch if shape[0] is None else None)
    t.input_name = input_name
    logical = tuple(spec.shape)
    phys_in = tuple(logical[a] for a in NCHW)
    if layout == "NHWC":
        graph_in = logical
        name = t.emit("Transpose", [input_name], phys_in, np.float32, perm=list(NCHW))
        image = _Val(logical, np.dtype(np.float32), name=name, perm=NCHW, phys=phys_in)
    else:
        graph_in = phys_in
        image = _Val(logical, np.dtype(np.float32), name=input_name, perm=NCHW, phys=phys_in)
    outputs = t.flatten(closed.jaxpr, closed.consts, [t.ref(image)])
    t.translate(outputs)

    finals = []
    for name, r in zip(names, outputs):
        v = t.vals[r]
        if v.const is not None:
            raise ValueError(f"to_onnx: output {name!r} does not depend on the input")
        finals.append(t.to(v, NCHW if layout == "NCHW" and v.rank == 4 else tuple(range(v.rank)), dense=True))
    out_infos, used, renamed = [], {input_name}, {}
    for name, v in zip(names, finals):
        tensor = renamed.get(v.name, v.name)
        if tensor in used or tensor in t.inits:  # the input itself, a constant, or another output
            tensor = t.emit("Identity", [tensor], v.phys, v.dtype)
        for node in t.nodes:
            node.input[:] = [name if s == tensor else s for s in node.input]
            node.output[:] = [name if s == tensor else s for s in node.output]
        renamed[v.name] = name
        t.info.pop(tensor, None)
        used.add(name)
        out_infos.append(_value_info(name, v.phys, v.dtype, batch))

    value_info = [_value_info(n, phys, dtype, batch) for n, (phys, dtype) in t.info.items() if n not in used]
    graph = helper.make_graph(
        t.nodes,
        "main",
        [_value_info(input_name, graph_in, np.dtype(np.float32), batch)],
        out_infos,
        initializer=[onnx.numpy_helper.from_array(a, n) for n, a in t.inits.items()],
        value_info=value_info,
    )
    opsets = [helper.make_opsetid("", opset)]
    ir_version = helper.find_min_ir_version_for(opsets)
    model = helper.make_model(graph, opset_imports=opsets, producer_name=producer, ir_version=ir_version)
    if metadata:
        helper.set_model_props(model, dict(metadata))
    return model
