"""Exact evaluation of any task: every unmasked example of a split scored exactly once.

Each batch is split over all local devices (a 1-axis mesh, `NamedSharding`), padded so it
divides the device count; masked rows never count. The task's per-batch sums come back to the
host and are added as integers (counts) or float64 (losses), whatever the batch size and device
count; with several processes the totals are added over processes. A task's per-example outputs
(`Task.row_keys`, e.g. decoded keypoints with their crop ids) are kept for the unmasked rows and
concatenated over batches and processes instead.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hrnet_flax.data.batches import pad_rows
from hrnet_flax.models.stacking import model_variables
from hrnet_flax.parallel import process_concat, process_sum
from hrnet_flax.tasks import Classification, Task


@functools.lru_cache(maxsize=8)
def _eval_step(model: Any, task: Task, replicated: NamedSharding):
    """The jitted per-batch sums for `model`, built once per model (evaluations during training reuse it)."""

    @functools.partial(jax.jit, out_shardings=replicated)
    def step(variables, batch):
        return task.eval_sums(task.infer(model, variables, batch["image"]), batch)

    return step


def _add(total: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    wide = np.int64 if np.issubdtype(value.dtype, np.integer) else np.float64
    return value.astype(wide) if total is None else total + value.astype(wide)


def evaluate(
    model: Any,
    variables: Any,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    task: Task | None = None,
    devices: list[jax.Device] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every unmasked example of `batches` once with `model.apply(variables, images, train=False)`.

    `variables` may be canonical or stacked, whatever `model` takes. Returns the task's metrics
    (classification, the default: `{"top1": %, "top5": %, "count": n, "loss": mean cross-entropy}`)
    and `unreadable`, the number of images the batches skipped (`batches.unreadable`, see
    `data.EvalBatches`). `batches.context`, where the batches have one (pose: the crops' boxes and
    the ground truth), goes to the task's `summarize`.
    """
    task = task or Classification()
    devices = list(devices or jax.local_devices())
    mesh = Mesh(np.asarray(devices), ("batch",))
    sharded = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    variables = jax.device_put(model_variables(model, variables), replicated)
    step = _eval_step(model, task, replicated)
    totals: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in task.row_keys}
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, total=len(batches) if hasattr(batches, "__len__") else None, unit="batch")
    for batch in iterator:
        n = len(batch["mask"])
        batch = pad_rows(batch, n + -n % len(devices))
        sums = jax.device_get(step(variables, jax.device_put(batch, sharded)))
        for key in task.row_keys:
            rows[key].append(np.asarray(sums.pop(key))[batch["mask"]])
        totals = {k: _add(totals.get(k), v) for k, v in sums.items()}
        if progress and task.main_metric and int(totals.get("count", 0)):
            iterator.set_postfix({task.main_metric: f"{task.summarize(totals)[task.main_metric]:.2f}"})
    if not totals:
        raise ValueError("evaluate: the batches are empty (no batch to score)")
    totals["unreadable"] = np.int64(len(getattr(batches, "unreadable", ())))
    totals = process_sum(totals)
    if task.row_keys:
        totals.update(process_concat({k: np.concatenate(v) for k, v in rows.items()}))
    context = getattr(batches, "context", None)
    return {**task.summarize(totals, context), "unreadable": int(totals["unreadable"])}
