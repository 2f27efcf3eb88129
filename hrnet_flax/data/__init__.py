"""Input pipelines: image sources, preprocessing, batches for training and exact evaluation,
and the embedded digits of the demo. Every pipeline yields the batch format of `batches`."""

from hrnet_flax.data.pipeline import EvalBatches, eval_dataset, train_dataset
from hrnet_flax.data.sources import DataSource, as_source, class_names, num_examples

__all__ = ["DataSource", "EvalBatches", "as_source", "class_names", "eval_dataset", "num_examples", "train_dataset"]
