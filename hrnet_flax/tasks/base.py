"""The task interface: everything the training loop and evaluation need to know about what is
learned and measured, so that a new task plugs in without touching either."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

from hrnet_flax.data.batches import Batch


class Task:
    """One kind of prediction (classification, segmentation, pose).

    The loop and `evaluate` call only these methods. Device-side methods (`loss`, `eval_sums`)
    run inside jitted per-device code on this device's rows; `mask` marks real rows. Host-side
    sums from `eval_sums` are added over batches, devices and processes exactly once, then turned
    into metrics by `summarize`.
    """

    name: str = ""
    main_metric: str = ""  # the metric `evaluate`'s progress bar shows ("": none, e.g. costly to compute)
    # Keys of `eval_sums`'s output that are per-example (leading batch axis) rather than sums:
    # `evaluate` keeps their unmasked rows and concatenates them over batches and processes.
    row_keys: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Any) -> Task:
        """The task as a training config sets it up (e.g. its label smoothing)."""
        return cls()

    # --- on the device -------------------------------------------------------------------------

    def infer(self, model: Any, variables: Any, images: jax.Array) -> jax.Array:
        """The outputs `eval_sums` scores (by default one plain forward pass; a task may add
        test-time augmentation, e.g. flips, scales or sliding windows)."""
        return model.apply(variables, images, train=False)

    def loss(self, outputs: jax.Array, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        """`(mean loss over the unmasked rows, {metric: mean})` for a training step."""
        raise NotImplementedError

    def eval_sums(self, outputs: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the unmasked rows of one batch (integers where they count, so totals are exact)."""
        raise NotImplementedError

    # --- on the host ---------------------------------------------------------------------------

    def summarize(self, sums: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """Metrics from the totals of `eval_sums` over a whole split (and its rows); `context` is
        what the evaluation batches carry for it (`batches.context`, e.g. pose crops' geometry)."""
        raise NotImplementedError

    def describe(self, metrics: Mapping[str, Any]) -> str:
        """The metrics in a few words, for log lines (e.g. `top-1 91.20%, top-5 99.00%`)."""
        raise NotImplementedError

    def resolve(self, config: Any) -> Any:
        """`config` checked against its dataset, with `train_examples` counted when it is None."""
        raise NotImplementedError

    def datasets(
        self, config: Any, *, train_batch: int, eval_batch: int, start_step: int
    ) -> tuple[Iterator[Batch], Callable[[], Any]]:
        """`(train batches from start_step on, a factory of the evaluation batches)`, per process."""
        raise NotImplementedError
