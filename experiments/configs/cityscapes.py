"""The official HRNetV2 Cityscapes recipe (HRNet-Semantic-Segmentation,
`experiments/cityscapes/seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml`).

Run (ARCH: hrnetv2_w48_seg, or any `*_seg` model; the backbone starts from its ImageNet weights):

    python experiments/train.py --config experiments/configs/cityscapes.py:hrnetv2_w48_seg \\
        --workdir runs/cityscapes_w48 --config.dataset=cityscapes:/data/tensorflow_datasets \\
        --config.manual_dir=/data/cityscapes_zips

`dataset`: `cityscapes:<tfds data_dir>` (tfds `cityscapes/semantic_segmentation`, prepared once
from the Cityscapes zips leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip in `manual_dir`),
or a folder of `train|val/images` + `masks` holding trainIds.

Recipe: 2975 train images, 484 epochs at global batch 12 (about 119.6k steps), random scale
0.5-2.0 of the 1024x2048 images, random 512x1024 crops padded with the ignore label, flips;
SGD momentum 0.9, lr 0.01, poly 0.9, weight decay 5e-4 on all parameters, class-weighted
cross-entropy (the official Cityscapes weights), OHEM off (the W48 yaml), bilinear fuse with
align_corners False, float32; evaluation on the 500 val images at full 1024x2048.
Should reach about 80.9% val mIoU single-scale (the official `hrnet_cs_8090_torch11.pth`; 81.1
in the paper table), 81.6-82 with multi-scale + flip (`--config.eval_scales="(0.5, 0.75, 1.0, 1.25,
1.5, 1.75)" --config.eval_flip=True`); not yet reproduced with this code.
"""

from hrnet_flax.train.config import TrainConfig

# Official per-class cross-entropy weights (lib/datasets/cityscapes.py), trainId order.
CITYSCAPES_CLASS_WEIGHTS = (
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
    0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507,
)  # fmt: skip


def get_config(arch: str = "hrnetv2_w48_seg") -> TrainConfig:
    backbone = arch.replace("hrnetv2", "hrnet").removesuffix("_seg")
    return TrainConfig(
        task="segmentation",
        model=arch,
        num_classes=19,
        pretrained=f"{backbone}.ms_in1k",  # the official ImageNet weights (timm's copy)
        dtype="float32",
        dataset="cityscapes",  # tfds' default data_dir; or cityscapes:<data_dir>, or a folder
        crop_size=(512, 1024),
        base_size=2048,
        scale_range=(0.5, 2.0),
        class_weights=CITYSCAPES_CLASS_WEIGHTS,
        ohem=False,
        global_batch_size=12,
        eval_batch_size=4,
        base_lr=0.01,
        base_batch_size=12,
        momentum=0.9,
        nesterov=False,
        weight_decay=5e-4,
        weight_decay_mode="l2",
        weight_decay_on="all",
        epochs=484,
        schedule="poly",
        poly_power=0.9,
        log_every_steps=100,
        eval_every_steps=10000,
        checkpoint_every_steps=2000,
        keep_checkpoints=2,
    )
