"""Embedded demo: hrnet_w18_small on scikit-learn's handwritten digits (no download).

Run:  python experiments/train.py --config experiments/configs/demo.py --workdir /tmp/hrnet_demo
  or  python -m hrnet_flax demo
1438 train / 359 val digits (8x8 upscaled to 32x32 RGB), 10 classes, float32, global batch 64,
SGD Nesterov, lr 0.02 with a short warmup then cosine, 3 epochs (66 steps), on all local devices.
Should reach >= 90% validation top-1 (91-95% measured). On a 2-core AVX-512 machine
`hrnet-flax demo` took 69 s with a cold XLA compilation cache and 41 s with a warm one
(91.92%; 2026-11-29).
"""

from hrnet_flax.train.config import TrainConfig, demo_config


def get_config() -> TrainConfig:
    return demo_config()
