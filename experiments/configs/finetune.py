"""Fine-tune a pretrained HRNet on your own image folder (`ROOT/train/<class>/*.jpg`,
`ROOT/validation/<class>/*.jpg`, or `ROOT/<class>/*.jpg`).

Run:

    python experiments/train.py --config experiments/configs/finetune.py:hrnet_w18_c.paddle_in1k \\
        --workdir runs/flowers --config.dataset=/data/flowers --config.num_classes=5

The argument is any `load_pretrained` source: a registered name (`python -c "import hrnet_flax;
print(hrnet_flax.list_pretrained())"`), a URL, or a file such as a previous run's
`model.safetensors`. The classifier is re-initialised for `num_classes` (which must equal the
number of class folders); everything else starts from the pretrained weights, including the
BatchNorm statistics.

Recipe: 15 epochs, SGD Nesterov momentum 0.9, lr 0.01 at global batch 64 (scaled linearly),
one warmup epoch then cosine, label smoothing 0.1, weight decay 1e-4 on kernels only,
bfloat16 compute (`--config.dtype=float32` on CPUs), eval resize 256 / center crop 224.
What it reaches depends on the data; on small natural-image folders expect well above a
from-scratch run within a few epochs.
"""

from hrnet_flax.train.config import TrainConfig


def get_config(pretrained: str = "hrnet_w18_c.paddle_in1k") -> TrainConfig:
    from hrnet_flax.weights.pretrained import get_pretrained

    try:
        arch = get_pretrained(pretrained).arch
    except ValueError:  # a file or URL: the arch comes with --config.model (default hrnet_w18_c)
        arch = "hrnet_w18_c"
    return TrainConfig(
        model=arch,
        pretrained=pretrained,
        num_classes=0,  # required: --config.num_classes=N (the number of class folders)
        dtype="bfloat16",
        dataset="",  # required: --config.dataset=IMAGE_FOLDER
        image_size=224,
        eval_image_size=224,
        eval_preset="paddle",
        global_batch_size=64,
        eval_batch_size=64,
        base_lr=0.01,
        base_batch_size=64,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        weight_decay_mode="l2",
        weight_decay_on="kernels",
        label_smoothing=0.1,
        epochs=15,
        schedule="cosine",
        warmup_epochs=1,
        log_every_steps=20,
        checkpoint_every_steps=500,
        keep_checkpoints=2,
    )
