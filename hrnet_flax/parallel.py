"""Data parallelism over a one-axis mesh, from one CPU to a multi-host pod.

`data_parallel` maps a per-device function over the mesh with `jax.jit(jax.shard_map(...))`:
the semantics of `pmap` (named-axis collectives over `AXIS`) on today's JAX. Every process runs
the same program (multi-controller JAX); `global_batch` assembles each process's rows into one
global array, and `wait_for_all_processes` / `process_sum` are the multi-host meeting points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"  # the one mesh axis: data parallelism


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis mesh ("batch") over all devices of all processes (or the given ones)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def data_parallel(fn: Callable, mesh: Mesh, in_specs, out_specs, donate: tuple[int, ...] = ()) -> Callable:
    """`jax.jit(jax.shard_map(fn))`: P() = replicated, P(AXIS) = split along the batch.

    `check_vma=False`: gradients are averaged explicitly with `pmean` (as under `pmap`);
    with the check on, JAX would already sum the gradients of replicated parameters.
    """
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    return jax.jit(mapped, donate_argnums=donate)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """One global array per key from this process's rows (processes hold consecutive slices)."""
    sharding = NamedSharding(mesh, P(AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


_barriers = iter(range(1 << 62))


def wait_for_all_processes(name: str, timeout_s: int = 3600) -> None:
    """Block until every process has reached this call (a no-op in a single process).

    It is the `jax.distributed` client's barrier. A collective would not do: gloo (CPU) gives
    processes 30 s to meet at one, and `multihost_utils.sync_global_devices` (which orbax's
    `sync_global_processes` uses by default) is a collective.
    """
    if jax.process_count() > 1:
        import orbax.checkpoint as ocp

        barrier = ocp.multihost.get_barrier_sync_fn()
        barrier(key=f"hrnet_flax_{name}_{next(_barriers)}", timeout_ms=timeout_s * 1000)


def process_sum(totals: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host-side totals summed over all processes: integers exactly (int64), floats in float64."""
    if jax.process_count() == 1:
        return dict(totals)
    from jax.experimental import multihost_utils

    wait_for_all_processes("summed")  # the processes may arrive far apart (see there)
    out = {}
    for key, value in totals.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.integer):
            # exchanged as int32 (JAX's default); each process's share fits, the sum is taken in int64
            gathered = multihost_utils.process_allgather(value.astype(np.int32))
            out[key] = np.asarray(gathered).reshape(-1, *value.shape).sum(0, dtype=np.int64)
        else:
            gathered = multihost_utils.process_allgather(value.astype(np.float32))
            out[key] = np.asarray(gathered, np.float64).reshape(-1, *value.shape).sum(0)
    return out


def process_concat(rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-example host arrays of all processes, concatenated in process order (integers exchanged
    as int32, floats as float32: what the devices computed them in)."""
    if jax.process_count() == 1:
        return dict(rows)
    from jax.experimental import multihost_utils

    wait_for_all_processes("concatenated")
    n = len(next(iter(rows.values())))
    counts = np.asarray(multihost_utils.process_allgather(np.int32(n))).reshape(-1)
    most = int(counts.max())
    out = {}
    for key, value in rows.items():
        value = np.asarray(value)
        dtype = np.int32 if np.issubdtype(value.dtype, np.integer) else np.float32
        padded = np.zeros((most, *value.shape[1:]), dtype)
        padded[:n] = value
        gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(counts), most, *value.shape[1:])
        out[key] = np.concatenate([gathered[p, :c] for p, c in enumerate(counts)])
    return out


def compile_for_all_processes(fn: Callable, *args) -> Callable:
    """`fn` (jitted) compiled ahead of time for `args`, returned once every process has compiled it.

    CPU collectives (gloo) give processes 30 s to meet at the first collective; compile times
    differ by more on a loaded machine, so no process runs the program before all have compiled it.
    """
    compiled = fn.lower(*args).compile()
    wait_for_all_processes("compiled")
    return compiled
