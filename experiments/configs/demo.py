"""Embedded demo: hrnet_w18_small on scikit-learn's handwritten digits (no download).

Run:  python experiments/train.py --config experiments/configs/demo.py --workdir /tmp/hrnet_demo
  or  python -m hrnet_flax demo
1438 train / 359 val digits (8x8 upscaled to 32x32 RGB), 10 classes, float32, global batch 64,
SGD Nesterov, lr 0.02 with a short warmup then cosine, 3 epochs (66 steps), on all local devices.
Should reach >= 90% validation top-1 (95.0% measured) in a few minutes on two CPU cores,
most of it the one-off XLA compilation of the train step.
"""

from hrnet_flax.demo_data import demo_config
from hrnet_flax.train_config import TrainConfig


def get_config() -> TrainConfig:
    return demo_config()
