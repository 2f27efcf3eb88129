"""Training and evaluation batches from ImageNet (tfds) or an image folder.

Batches are dicts of numpy arrays: `{"image": float32 [B, H, W, 3] normalised, "label": int32 [B],
"mask": bool [B]}` (mask False on padding rows), B = `batch_size_per_process`.

Training streams are infinite, deterministic in `seed`, and resumable: `train_dataset(...,
start_step=s)` yields exactly the batches an uninterrupted run gives from step `s` on (each
example's crop and flip are seeded by its position in the stream).

- Image folder: a global stream of examples (epoch `e` is a permutation seeded by (seed, e));
  step `s` is examples `[s*G, (s+1)*G)` with G the global batch, each process taking its
  consecutive B of them, so the global batch does not depend on the number of processes.
  Resuming costs nothing.
- ImageNet (tfds TFRecords, no random access): each process reads its own equal part
  (`tfds.even_splits`); per epoch the file order and a shuffle buffer are seeded by (seed, epoch);
  an epoch is `steps_per_epoch` whole batches. Resuming mid-epoch re-reads (does not decode)
  the skipped records of that epoch.

Evaluation (`eval_dataset`) covers every example once: each process takes its part, the last
batch is padded and masked, every process yields the same number of batches, and images that
cannot be decoded are skipped and listed in `.unreadable`, not raised mid-run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from hrnet_flax.data.batches import Batch, pad_rows, process_share, stream_indices
from hrnet_flax.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalSpec,
    decode_rgb,
    eval_image,
    eval_spec,
    graph_fn,
    tf,
    train_image,
)
from hrnet_flax.data.sources import as_source, folder_index, imagenet_builder

log = logging.getLogger(__name__)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, epoch, 7]).integers(0, 2**31 - 1))


def train_dataset(
    source: Any,
    *,
    batch_size_per_process: int,
    image_size: int = 224,
    seed: int = 0,
    start_step: int = 0,
    split: str = "train",
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    flip: bool = True,
    shuffle_buffer: int = 16_384,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """Infinite training batches: random resized crop (scale 0.08-1, ratio 3/4-4/3), flip, normalise.

    The first batch is step `start_step` of the run; see the module doc for the order.
    """
    if batch_size_per_process <= 0:
        raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
    source = as_source(source)
    p, count = process_share(process_index, process_count)
    t = tf()

    def to_example(encoded, label, position):
        key = t.stack([t.constant(seed, t.int64), t.cast(position, t.int64)])
        return {"image": train_image(encoded, key, image_size, mean, std, flip), "label": t.cast(label, t.int32)}

    def batches(ds) -> Iterator[Batch]:
        ds = ds.map(graph_fn(to_example), num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors(log_warning=True).batch(batch_size_per_process, drop_remainder=True)
        for batch in ds.prefetch(2).as_numpy_iterator():
            batch["mask"] = np.ones(batch_size_per_process, bool)
            yield batch

    if source.kind == "folder":
        paths, labels, _ = folder_index(source.path, split)
        yield from batches(_folder_train_records(paths, labels, seed, start_step, batch_size_per_process, p, count))
        return
    builder = imagenet_builder(source, split)
    import tensorflow_datasets as tfds

    part = tfds.even_splits(split, n=count, drop_remainder=True)[p]
    n_part = builder.info.splits[part].num_examples
    per_epoch = n_part // batch_size_per_process
    if per_epoch == 0:
        raise ValueError(f"{split} has {n_part} examples per process, fewer than one batch of {batch_size_per_process}")
    epoch, step_in_epoch = divmod(start_step, per_epoch)
    while True:
        es = _epoch_seed(seed, epoch)
        ds = builder.as_dataset(
            split=part,
            shuffle_files=True,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=es, interleave_cycle_length=16),
        )
        ds = ds.shuffle(shuffle_buffer, seed=es).take(per_epoch * batch_size_per_process)
        first = step_in_epoch * batch_size_per_process
        ds = ds.enumerate().skip(first)
        base = (epoch * count + p) * n_part
        ds = ds.map(graph_fn(lambda i, ex, base=base: (ex["image"], ex["label"], base + i)))
        yield from batches(ds)
        epoch, step_in_epoch = epoch + 1, 0


def _folder_train_records(paths, labels, seed, start_step, batch, p, count):
    """tf.data of (encoded bytes, label, global position) for this process, from `start_step` on."""
    t = tf()
    paths = np.asarray(paths)

    def positions() -> Iterator[tuple[str, int, int]]:
        for i, pos in stream_indices(len(paths), seed, start_step, batch, p, count):
            yield paths[i], labels[i], pos

    signature = (
        t.TensorSpec([], t.string),
        t.TensorSpec([], t.int32),
        t.TensorSpec([], t.int64),
    )
    ds = t.data.Dataset.from_generator(positions, output_signature=signature)
    return ds.map(graph_fn(lambda path, label, pos: (t.io.read_file(path), label, pos)))


class EvalBatches:
    """Every example of a split once, in fixed order, as padded+masked batches (iterable).

    `num_examples`: this process's examples; `total_examples`: all processes; `len()`: batches
    (equal on every process); after iterating, `unreadable` lists the images that could not
    be decoded (skipped, not scored).
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size_per_process: int,
        spec: Any = "timm",
        image_size: int | None = None,
        split: str = "validation",
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        if batch_size_per_process <= 0:
            raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
        self.source = as_source(source)
        self.spec: EvalSpec = eval_spec(spec, size=image_size)
        self.split = split
        self.batch_size = batch_size_per_process
        self.process_index, self.process_count = process_share(process_index, process_count)
        self.unreadable: list[str] = []
        if self.source.kind == "folder":
            paths, labels, _ = folder_index(self.source.path, split)
            self.total_examples = len(paths)
            part = np.array_split(np.arange(len(paths)), self.process_count)[self.process_index]
            self._paths, self._labels = [paths[i] for i in part], labels[part]
            self.num_examples = len(part)
        else:
            import tensorflow_datasets as tfds

            self._builder = imagenet_builder(self.source, split)
            self.total_examples = self._builder.info.splits[split].num_examples
            self._part = tfds.even_splits(split, n=self.process_count)[self.process_index]
            self.num_examples = self._builder.info.splits[self._part].num_examples
        if self.total_examples == 0:
            raise ValueError(f"split {split!r} of {self.source.path} has no examples")
        most = math.ceil(self.total_examples / self.process_count)
        self.num_batches = math.ceil(most / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def _records(self):
        t = tf()
        if self.source.kind == "folder":
            ds = t.data.Dataset.from_tensor_slices((self._paths, self._labels))
            ds = ds.map(graph_fn(lambda path, label: (t.io.read_file(path), label)))
        else:
            import tensorflow_datasets as tfds

            ds = self._builder.as_dataset(
                split=self._part, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
            )
            ds = ds.map(graph_fn(lambda ex: (ex["image"], ex["label"])))
        return ds.enumerate()

    def _names(self, indices: list[int]) -> list[str]:
        if self.source.kind == "folder":
            return [self._paths[i] for i in indices]
        import tensorflow_datasets as tfds

        wanted, names = set(indices), {}
        ds = self._builder.as_dataset(split=self._part, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
        for i, ex in enumerate(ds.map(graph_fn(lambda ex: ex["file_name"])).as_numpy_iterator()):
            if i in wanted:
                names[i] = f"{self.split}:{ex.decode()}"
        return [names.get(i, f"{self.split}[{i}]") for i in indices]

    def __iter__(self) -> Iterator[Batch]:
        t = tf()
        spec, b = self.spec, self.batch_size
        self.unreadable = []

        def to_example(i, record):
            encoded, label = record
            return {"image": eval_image(decode_rgb(encoded), spec), "label": t.cast(label, t.int32), "index": i}

        ds = self._records().map(to_example, num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors().batch(b).prefetch(2)
        seen = np.zeros(self.num_examples, bool)
        produced = 0
        for batch in ds.as_numpy_iterator():
            seen[batch.pop("index")] = True
            yield pad_rows(batch, b)
            produced += 1
        # fewer batches here than on the busiest process (or unreadable images skipped): pad
        empty = {
            "image": np.zeros((0, spec.size, spec.size, 3), np.float32),
            "label": np.zeros((0,), np.int32),
        }
        for _ in range(produced, self.num_batches):
            yield pad_rows(empty, b)
        if produced > self.num_batches:
            raise AssertionError(f"produced {produced} eval batches, expected at most {self.num_batches}")
        missing = np.flatnonzero(~seen).tolist()
        if missing:
            self.unreadable = self._names(missing)
            log.warning("%d unreadable image(s) skipped: %s", len(missing), ", ".join(self.unreadable[:10]))


def eval_dataset(source: Any, **kwargs: Any) -> EvalBatches:
    """Finite, padded+masked evaluation batches: `EvalBatches(source, **kwargs)`."""
    return EvalBatches(source, **kwargs)
