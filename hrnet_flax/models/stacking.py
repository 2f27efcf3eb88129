"""Between the canonical variable layout and the stacked one of `HRNet(scan=True)`.

Canonical names (what converters, checkpoints and the plain model use) number repeated layers:
`layer1_{k}`, `stage{s}_{m}`, `branch{b}_{k}`. The scanned model holds each run of identical
layers as one `repeated` layer whose parameters carry a leading axis: `layer1/layer` (blocks 1..),
`stage{s}/layer` (the modules of a stage alike in structure, where there are several) and `branch{b}/layer` (blocks), nested
outer axis first, e.g. `stage3/layer/branch0/layer/conv1/conv/kernel` of shape (4, 4, 3, 3, 18, 18).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

STACKED = "layer"  # the child name `repeated` gives the layer it repeats


def stack_variables(variables: Mapping) -> dict:
    """Canonical variables -> those of the same model built with `scan=True` (stacked runs)."""
    flat = flatten_dict(variables)
    stacked = _stacked_modules(flat)
    groups: dict[tuple, dict[tuple, Any]] = {}
    for path, leaf in flat.items():
        new, index = [], []
        for k in path:
            if (m := re.fullmatch(r"layer1_(\d+)", k)) and int(m.group(1)) > 0:
                new, index = new + ["layer1", STACKED], index + [int(m.group(1)) - 1]
            elif (m := re.fullmatch(r"stage(\d+)_(\d+)", k)) and k in stacked:
                new, index = new + [f"stage{m.group(1)}", STACKED], index + [int(m.group(2))]
            elif m := re.fullmatch(r"branch(\d+)_(\d+)", k):
                new, index = new + [f"branch{m.group(1)}", STACKED], index + [int(m.group(2))]
            else:
                new.append(k)
        groups.setdefault(tuple(new), {})[tuple(index)] = leaf
    out = {}
    for path, parts in groups.items():
        if () in parts:
            out[path] = parts[()]
            continue
        shape = tuple(max(i[d] for i in parts) + 1 for d in range(len(next(iter(parts)))))
        missing = [i for i in np.ndindex(shape) if i not in parts]
        if missing:
            raise ValueError(f"cannot stack {'/'.join(path)}: copy {missing[0]} of the repeated layer is missing")
        leaves = [parts[i] for i in np.ndindex(shape)]
        if any(isinstance(x, jax.core.Tracer) for x in leaves):  # inside a jitted step
            out[path] = jnp.stack(leaves).reshape(shape + jnp.shape(leaves[0]))
        else:  # concrete arrays: numpy, so no small XLA program is compiled per leaf shape
            out[path] = jnp.asarray(np.stack([np.asarray(x) for x in leaves]).reshape(shape + np.shape(leaves[0])))
    return unflatten_dict(out)


def _stacked_modules(flat: Mapping[tuple, Any]) -> set[str]:
    """The `stage{s}_{m}` modules a scanned model holds stacked: every module of a stage of more
    than one, except the pose network's last module, which fuses into branch 0 only (it has no
    `fuse{i}_*` with i > 0 where the stage's first module has them) and stays on its own."""
    modules: dict[str, set[str]] = {}  # module -> names of its fuse layers' target branches
    for path in flat:
        for i, k in enumerate(path):
            if re.fullmatch(r"stage\d+_\d+", k):
                fuse = re.fullmatch(r"fuse(\d+)_.*", path[i + 1]) if i + 1 < len(path) else None
                modules.setdefault(k, set()).update({fuse.group(1)} if fuse else set())
    out = set()
    for stage in {k.rsplit("_", 1)[0] for k in modules}:
        members = sorted((k for k in modules if k.rsplit("_", 1)[0] == stage), key=lambda k: int(k.rsplit("_", 1)[1]))
        last = members[-1]
        if len(members) > 1 and modules[last] == {"0"} and modules[members[0]] != {"0"}:
            members = members[:-1]
        if len(members) > 1:
            out.update(members)
    return out


def unstack_variables(variables: Mapping) -> dict:
    """Stacked variables of a `scan=True` model -> canonical ones (unchanged if already canonical)."""
    out = {}
    for path, leaf in flatten_dict(variables).items():
        depth = sum(k == STACKED for k in path)
        if depth and not isinstance(leaf, jax.core.Tracer):  # numpy slices: no XLA program per leaf shape
            leaf = np.asarray(leaf)
        for index in np.ndindex(jnp.shape(leaf)[:depth]):
            new, pos = [], 0
            for k in path:
                if k != STACKED:
                    new.append(k)
                    continue
                i, pos = index[pos], pos + 1
                parent = new.pop()
                new.append(f"layer1_{i + 1}" if parent == "layer1" else f"{parent}_{i}")
            part = leaf[index] if depth else leaf
            out[tuple(new)] = jnp.asarray(part) if isinstance(part, np.ndarray) else part
    return unflatten_dict(out)


def is_stacked(variables: Mapping) -> bool:
    """Whether `variables` are in the stacked layout of a `scan=True` model."""
    return any(STACKED in path for path in flatten_dict(variables))


def model_variables(model: Any, variables: Mapping) -> Mapping:
    """`variables` (canonical or stacked) in the layout `model` takes: stacked for a `scan=True`
    model, canonical otherwise. The one place that converts between the two layouts for a model."""
    if getattr(model, "scan", False):
        return variables if is_stacked(variables) else stack_variables(variables)
    return unstack_variables(variables) if is_stacked(variables) else variables


def canonical_apply(model: Any) -> Callable:
    """`model.apply` that takes canonical variables and returns canonical `mutable` updates, for
    either layout of `model` (a scanned model's stacking happens inside, where the gradient undoes it)."""

    def apply(variables: Mapping, *args: Any, **kwargs: Any) -> Any:
        out = model.apply(model_variables(model, variables), *args, **kwargs)
        if kwargs.get("mutable"):
            out, updates = out
            return out, unstack_variables(updates)
        return out

    return apply
