"""The official HRNet-Image-Classification recipe (Microsoft; the `hrnet_w*` timm weights).

Run (ARCH any official layout: hrnet_w18_small, hrnet_w18_small_v2, hrnet_w18 ... hrnet_w64):

    python experiments/train.py --config experiments/configs/official.py:hrnet_w18 \\
        --workdir runs/hrnet_w18 --config.dataset=/data/tensorflow_datasets

Recipe (`experiments/cls_hrnet_*.yaml`): 100 epochs, SGD Nesterov momentum 0.9, lr 0.05 at
global batch 128 (scaled linearly), /10 at epochs 30/60/90, weight decay 1e-4 as coupled L2
on all parameters (PyTorch SGD `weight_decay`), plain cross-entropy, float32.

Should reach the official ImageNet-1k val top-1 (resize 256 / crop 224): W18-small-v1 72.3,
W18-small-v2 75.1, W18 76.8, W30 78.2, W32 78.5, W40 78.9, W44 78.9, W48 79.3, W64 79.5
(not yet reproduced with this code).
"""

from hrnet_flax.train.config import TrainConfig


def get_config(arch: str = "hrnet_w18") -> TrainConfig:
    return TrainConfig(
        model=arch,
        num_classes=1000,
        dtype="float32",
        dataset="",  # required: --config.dataset=TFDS_DATA_DIR (imagenet2012) or an image folder
        image_size=224,
        eval_image_size=224,
        eval_preset="timm",  # crop_pct 0.875: resize 256, center crop 224
        global_batch_size=256,
        eval_batch_size=256,
        base_lr=0.05,
        base_batch_size=128,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        weight_decay_mode="l2",
        weight_decay_on="all",
        epochs=100,
        schedule="piecewise",
        decay_epochs=(30, 60, 90),
        decay_factor=0.1,
        log_every_steps=100,
        checkpoint_every_steps=2000,
    )
