"""The batch format every pipeline yields, and the helpers they share.

A batch is a dict of numpy arrays with a leading batch axis, `mask` (bool) False on padding rows;
each task adds its own keys (`image` and `label` for classification).
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

Batch = dict[str, np.ndarray]
T = TypeVar("T")


def pad_rows(batch: Mapping[str, np.ndarray], size: int) -> Batch:
    """`batch` padded with zero rows to `size` rows; `mask` False on the new rows (and True on the
    old ones when `batch` has no mask)."""
    n = len(next(iter(batch.values())))
    if n > size:
        raise ValueError(f"a batch of {n} rows does not fit in {size}")
    if n == size and "mask" in batch:  # already full: no copy of the images
        return dict(batch)
    mask = np.asarray(batch["mask"], bool) if "mask" in batch else np.ones(n, bool)
    out = {k: np.concatenate([v, np.zeros((size - n, *np.shape(v)[1:]), np.asarray(v).dtype)]) for k, v in batch.items()}
    out["mask"] = np.concatenate([mask, np.zeros(size - n, bool)])
    return out


def process_share(process_index: int | None = None, process_count: int | None = None) -> tuple[int, int]:
    """`(index, count)` of this process (JAX's, where not given); checks that they fit."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
    return process_index, process_count


def stream_indices(
    n: int, seed: int, start_step: int, batch: int, process_index: int, process_count: int
) -> Iterator[tuple[int, int]]:
    """(example index, global position) of this process's examples from step `start_step` on: the
    global stream is epoch permutations seeded by (seed, epoch), step s holds positions
    [s*G, (s+1)*G) with G = batch * process_count, process p taking the p-th consecutive `batch`."""
    global_batch = batch * process_count
    perm_epoch, perm = -1, np.arange(0)
    step = start_step
    while True:
        first = step * global_batch + process_index * batch
        for position in range(first, first + batch):
            epoch, offset = divmod(position, n)
            if epoch != perm_epoch:
                perm_epoch, perm = epoch, np.random.default_rng([seed, epoch]).permutation(n)
            yield int(perm[offset]), position
        step += 1


def default_workers() -> int:
    """Loading threads when the caller gives none: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def prefetch(jobs: Iterator[Callable[[], T]], workers: int, ahead: int, *, name: str = "data") -> Iterator[T]:
    """Results of `jobs`, in order, computed by `workers` threads (named `name`) at most `ahead`
    jobs in advance."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    pending: collections.deque = collections.deque()
    try:
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # (shutdown's own cancel_futures fails while the interpreter exits)
            future.cancel()
        pool.shutdown(wait=False)


def example_batches(
    example: Callable[[int, int], Mapping[str, np.ndarray]],
    n: int,
    *,
    seed: int,
    start_step: int,
    batch_size: int,
    process_index: int,
    process_count: int,
    workers: int | None = None,
    name: str = "data",
) -> Iterator[Batch]:
    """Infinite training batches from `example(index, position)` (a dict of arrays per example) over
    the resumable stream of `stream_indices`, made by `workers` threads ahead of use; `mask` all True."""
    stream = stream_indices(n, seed, start_step, batch_size, process_index, process_count)
    jobs = (functools.partial(example, index, position) for index, position in stream)
    workers = workers or default_workers()
    examples = prefetch(jobs, workers, ahead=2 * batch_size + workers, name=name)
    while True:
        rows = [next(examples) for _ in range(batch_size)]
        batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
        batch["mask"] = np.ones(batch_size, bool)
        yield batch
