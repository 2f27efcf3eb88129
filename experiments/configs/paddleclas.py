"""PaddleClas recipe for the seven `hrnet_w*_c` models on ImageNet-1k.

Run (one host, all its accelerators; ARCH one of hrnet_w18_c, hrnet_w30_c, hrnet_w32_c,
hrnet_w40_c, hrnet_w44_c, hrnet_w48_c, hrnet_w64_c; default hrnet_w18_c):

    python experiments/train.py --config experiments/configs/paddleclas.py:hrnet_w48_c \\
        --workdir runs/hrnet_w48_c --config.dataset=/data/tensorflow_datasets

Recipe (PaddleClas `ImageNet/HRNet/HRNet_W*_C.yaml`): 120 epochs, SGD momentum 0.9 (no
Nesterov), lr 0.1 at global batch 256 (scaled linearly with the batch), /10 at epochs
30/60/90, no warmup, coupled L2 1e-4 on all parameters (BatchNorm included), plain
cross-entropy, random-resized-crop 224 + flip. Float32 as PaddleClas trains; bfloat16 compute
with `--config.dtype=bfloat16`.

Should reach PaddleClas's published ImageNet-1k val top-1 (224, resize 256 / crop 224):
W18 76.92, W30 78.04, W32 78.28, W40 78.77, W44 79.00, W48 78.95, W64 79.30 (not yet
reproduced with this code).
"""

from hrnet_flax.train.config import TrainConfig

ARCHS = ("hrnet_w18_c", "hrnet_w30_c", "hrnet_w32_c", "hrnet_w40_c", "hrnet_w44_c", "hrnet_w48_c", "hrnet_w64_c")


def get_config(arch: str = "hrnet_w18_c") -> TrainConfig:
    if arch not in ARCHS:
        raise ValueError(f"paddleclas.py: arch {arch!r} is not one of {', '.join(ARCHS)}")
    return TrainConfig(
        model=arch,
        num_classes=1000,
        dtype="float32",
        dataset="",  # required: --config.dataset=TFDS_DATA_DIR (imagenet2012) or an image folder
        image_size=224,
        eval_image_size=224,
        eval_preset="paddle",  # resize short side 256 (cv2 bilinear), center crop 224
        global_batch_size=256,
        eval_batch_size=256,
        base_lr=0.1,
        base_batch_size=256,
        momentum=0.9,
        nesterov=False,
        weight_decay=1e-4,
        weight_decay_mode="l2",
        weight_decay_on="all",
        label_smoothing=0.0,
        epochs=120,
        schedule="piecewise",
        decay_epochs=(30, 60, 90),
        decay_factor=0.1,
        warmup_epochs=0.0,
        log_every_steps=100,
        checkpoint_every_steps=2000,
        keep_checkpoints=3,
    )
