"""Fine-tune an HRNetV2 segmentation model on your own image/mask folder.

Folder: `ROOT/train/images/*.jpg` with `ROOT/train/masks/*.png` (same stems; palette or grey PNGs,
pixel value = class, 255 = ignore), the same under `ROOT/val/`, and optionally `ROOT/classes.txt`.

Run (SOURCE: any `load_pretrained` source: a classification checkpoint, whose backbone is used and
whose head is replaced, or a segmentation checkpoint, whose classifier is re-initialised when the
class count differs):

    python experiments/train.py --config experiments/configs/segment_folder.py:hrnet_w18_c.paddle_in1k \\
        --workdir runs/my_seg --config.dataset=/data/my_seg --config.num_classes=6

Recipe: 100 epochs, crops 512x512 from images scaled 0.5-2.0, flips; SGD momentum 0.9, lr 0.01 at
global batch 8 (scaled linearly), poly 0.9 down to 1e-4 (mmsegmentation's), weight decay 5e-4,
bfloat16 compute (`--config.dtype=float32` on CPUs). What it reaches depends on the data; starting
from an ImageNet backbone converges far faster than from scratch.
"""

from hrnet_flax.train.config import TrainConfig


def get_config(pretrained: str = "hrnet_w18_c.paddle_in1k") -> TrainConfig:
    from hrnet_flax.models.config import ARCHS
    from hrnet_flax.weights.convert import segmenter_for
    from hrnet_flax.weights.pretrained import get_pretrained

    try:
        arch = get_pretrained(pretrained).arch
    except ValueError:  # a file or URL: the model comes with --config.model (default hrnetv2_w18_seg)
        arch = "hrnetv2_w18_seg"
    if ARCHS[arch].head == "classification":  # a classifier's backbone under the HRNetV2 head
        segmenter = segmenter_for(ARCHS[arch])
        if segmenter is None:
            raise ValueError(f"{pretrained}: {arch} has no segmentation variant (SE blocks)")
        arch = segmenter
    return TrainConfig(
        task="segmentation",
        model=arch,
        pretrained=pretrained,
        num_classes=0,  # required: --config.num_classes=N
        dtype="bfloat16",
        dataset="",  # required: --config.dataset=ROOT
        crop_size=(512, 512),
        scale_range=(0.5, 2.0),
        global_batch_size=8,
        eval_batch_size=2,
        base_lr=0.01,
        base_batch_size=8,
        momentum=0.9,
        weight_decay=5e-4,
        epochs=100,
        schedule="poly",
        min_lr=1e-4,
        log_every_steps=20,
        checkpoint_every_steps=500,
        keep_checkpoints=2,
    )
