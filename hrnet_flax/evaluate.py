"""Exact evaluation: top-1, top-5, mean cross-entropy and the number of examples scored.

Each batch is split over all local devices (a 1-axis mesh, `NamedSharding`), padded so it
divides the device count; masked rows never count. Per-batch sums come back to the host and
are added as Python ints/floats, so every example counts exactly once whatever the batch size
and device count. With several processes the sums are added over processes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SUMS = ("count", "correct1", "correct5", "loss_sum")


def batch_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Sums over the unmasked rows: count, top-1/top-5 hits (the label's logit ranks among the
    top k: fewer than k logits strictly above it) and cross-entropy."""
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    above = jnp.sum(logits > label_logit, axis=-1)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    return {
        "count": jnp.sum(mask, dtype=jnp.int32),
        "correct1": jnp.sum(mask & (above < 1), dtype=jnp.int32),
        "correct5": jnp.sum(mask & (above < 5), dtype=jnp.int32),
        "loss_sum": jnp.sum(jnp.where(mask, nll, 0.0)),
    }


def _pad_rows(batch: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    n = len(batch["label"])
    extra = -n % multiple
    if not extra:
        return batch
    return {k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def summarize(sums: dict[str, float], unreadable: int = 0) -> dict[str, Any]:
    """Percent top-1/top-5, mean loss and count from accumulated sums."""
    count = int(sums["count"])
    denom = max(count, 1)
    return {
        "top1": 100.0 * int(sums["correct1"]) / denom,
        "top5": 100.0 * int(sums["correct5"]) / denom,
        "count": count,
        "loss": float(sums["loss_sum"]) / denom,
        "unreadable": int(unreadable),
    }


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


@functools.lru_cache(maxsize=8)
def _eval_step(model: Any, replicated: NamedSharding):
    """The jitted per-batch sums for `model`, built once per model (evaluations during training reuse it)."""

    @functools.partial(jax.jit, out_shardings=replicated)
    def step(variables, images, labels, mask):
        logits = model.apply(variables, images, train=False)
        return batch_sums(logits, labels, mask)

    return step


def evaluate(
    model: Any,
    variables: Any,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    devices: list[jax.Device] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every unmasked example of `batches` once with `model.apply(variables, images, train=False)`.

    Returns `{"top1": %, "top5": %, "count": n, "loss": mean cross-entropy, "unreadable": n}`;
    `unreadable` comes from `batches.unreadable` when the batches carry one (see `data.EvalBatches`).
    """
    devices = list(devices or jax.local_devices())
    mesh = Mesh(np.asarray(devices), ("batch",))
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    variables = jax.device_put(variables, replicated)
    step = _eval_step(model, replicated)
    totals = dict.fromkeys(SUMS, 0)
    totals["loss_sum"] = 0.0
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, total=len(batches) if hasattr(batches, "__len__") else None, unit="batch")
    for batch in iterator:
        batch = _pad_rows({"image": batch["image"], "label": batch["label"], "mask": batch["mask"]}, len(devices))
        image, label, mask = (
            jax.device_put(np.asarray(batch[k], dtype), rows)
            for k, dtype in (("image", np.float32), ("label", np.int32), ("mask", bool))
        )
        sums = jax.device_get(step(variables, image, label, mask))
        for k in ("count", "correct1", "correct5"):
            totals[k] += int(sums[k])
        totals["loss_sum"] += float(sums["loss_sum"])
        if progress and totals["count"]:
            iterator.set_postfix(top1=f"{100.0 * totals['correct1'] / totals['count']:.2f}")
    unreadable = len(getattr(batches, "unreadable", ()))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        wait_for_all_processes("evaluated")  # the processes may finish far apart (see there)
        counts = np.array([totals["count"], totals["correct1"], totals["correct5"], unreadable], np.int32)
        counts = np.asarray(multihost_utils.process_allgather(counts)).reshape(-1, 4).sum(0, dtype=np.int64)
        loss = np.asarray(multihost_utils.process_allgather(np.float32(totals["loss_sum"])), np.float64).sum()
        totals = {"count": int(counts[0]), "correct1": int(counts[1]), "correct5": int(counts[2]), "loss_sum": float(loss)}
        unreadable = int(counts[3])
    return summarize(totals, unreadable)


def default_spec(model_source: str) -> Any:
    """The evaluation preprocessing a registered weight was published with; for a file or URL
    the `paddle` preset for `.pdparams`, else `timm`."""
    import os

    if os.path.exists(model_source) or "://" in model_source:
        return "paddle" if model_source.endswith(".pdparams") else "timm"
    try:
        from hrnet_flax.pretrained import get_pretrained

        return get_pretrained(model_source)
    except Exception:  # not a registered name: the loader will say so
        return "timm"


def run_cli(args: Any) -> int:
    """`hrnet-flax eval`: prints a progress bar, then one JSON line of metrics."""
    import json
    import sys

    from hrnet_flax.data import eval_dataset
    from hrnet_flax.pretrained import load_pretrained
    from hrnet_flax.sources import DataSource

    kind = "imagenet" if args.manual_dir else "auto"
    source = DataSource(args.data_dir, kind, args.manual_dir)
    spec = args.preset or default_spec(args.model)
    batches = eval_dataset(
        source, batch_size_per_process=args.batch_size, spec=spec, image_size=args.size, split=args.split
    )
    model, variables = load_pretrained(args.model, arch=args.arch, num_classes=args.num_classes, scan=True)
    print(f"evaluating {args.model} on {batches.total_examples} images of {args.data_dir} ({args.split}), "
          f"preprocessing {batches.spec}", file=sys.stderr)
    result = evaluate(model, variables, batches, progress=True)
    if batches.unreadable:
        print(f"{len(batches.unreadable)} unreadable image(s) skipped: {', '.join(batches.unreadable)}", file=sys.stderr)
    print(json.dumps(result))
    return 0
