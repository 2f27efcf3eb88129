"""Input pipelines: image sources, preprocessing, batches for training and exact evaluation
(classification: `pipeline`; segmentation: `segmentation`; top-down pose: `pose`, with the
keypoint geometry and heatmap codecs in `keypoints` and COCO in `coco`), and the embedded demo
data (`digits`, `canvases`, `figures`). Every pipeline yields the batch format of `batches`."""

from hrnet_flax.data.pipeline import EvalBatches, eval_dataset, train_dataset
from hrnet_flax.data.segmentation import (
    SegmentationEvalBatches,
    SegmentationSource,
    cityscapes_train_ids,
    segmentation_source,
)
from hrnet_flax.data.sources import DataSource, as_source, class_names, num_examples

__all__ = [
    "DataSource",
    "EvalBatches",
    "SegmentationEvalBatches",
    "SegmentationSource",
    "as_source",
    "cityscapes_train_ids",
    "class_names",
    "eval_dataset",
    "num_examples",
    "segmentation_source",
    "train_dataset",
]
