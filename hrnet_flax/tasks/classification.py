"""Image classification: softmax cross-entropy, exact top-1/top-5, ImageNet or folder data."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hrnet_flax.tasks.base import Task


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels and optional label smoothing."""
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


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


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """Batches `{"image": float32 NHWC, "label": int32, "mask": bool}`; the model returns logits."""

    label_smoothing: float = 0.0
    name = "classification"
    main_metric = "top1"

    @classmethod
    def from_config(cls, config: Any) -> Classification:
        return cls(label_smoothing=config.label_smoothing)

    def loss(self, outputs, batch):
        mask = batch["mask"].astype(jnp.float32)
        count = jnp.maximum(jnp.sum(mask), 1.0)
        loss = jnp.sum(cross_entropy(outputs, batch["label"], self.label_smoothing) * mask) / count
        accuracy = jnp.sum((jnp.argmax(outputs, -1) == batch["label"]) * mask) / count
        return loss, {"accuracy": accuracy}

    def eval_sums(self, outputs, batch):
        return batch_sums(outputs, batch["label"], batch["mask"])

    def summarize(self, sums: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """Percent top-1/top-5, mean loss and count."""
        count = int(sums["count"])
        denom = max(count, 1)
        return {
            "top1": 100.0 * int(sums["correct1"]) / denom,
            "top5": 100.0 * int(sums["correct5"]) / denom,
            "count": count,
            "loss": float(sums["loss_sum"]) / denom,
        }

    def describe(self, metrics: Mapping[str, Any]) -> str:
        return f"top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}%"

    def resolve(self, config: Any) -> Any:
        """Checks `num_classes` against an image folder's classes; counts `train_examples`."""
        if config.dataset == "digits":
            from hrnet_flax.data import digits

            if config.num_classes != digits.NUM_CLASSES:
                raise ValueError(f"config.num_classes={config.num_classes} but the digits have {digits.NUM_CLASSES} classes")
            count = lambda: digits.split_size("train")  # noqa: E731
        else:
            from hrnet_flax.data import as_source, class_names, num_examples

            source = as_source(config.dataset, manual_dir=config.manual_dir)
            if source.kind == "folder" and len(class_names(source)) != config.num_classes:
                raise ValueError(
                    f"config.num_classes={config.num_classes} but the image folder {config.dataset} has "
                    f"{len(class_names(source))} classes"
                )
            count = lambda: num_examples(source, "train")  # noqa: E731
        if config.train_examples is not None:
            return config
        return dataclasses.replace(config, train_examples=count())

    def datasets(self, config, *, train_batch, eval_batch, start_step):
        if config.dataset == "digits":
            from hrnet_flax.data import digits

            train = digits.train_dataset(
                batch_size_per_process=train_batch, image_size=config.image_size, seed=config.seed, start_step=start_step
            )
            return train, lambda: digits.eval_dataset(batch_size_per_process=eval_batch, image_size=config.eval_image_size)
        from hrnet_flax import data

        source = data.as_source(config.dataset, manual_dir=config.manual_dir)
        train = data.train_dataset(
            source, batch_size_per_process=train_batch, image_size=config.image_size, seed=config.seed, start_step=start_step
        )
        return train, lambda: data.eval_dataset(
            source, batch_size_per_process=eval_batch, spec=config.eval_preset, image_size=config.eval_image_size
        )
