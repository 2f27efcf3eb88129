"""Training: the config, optimizer, train state and step, checkpoints, metrics and the loop."""

from hrnet_flax.train.config import TrainConfig, apply_overrides, demo_config, load_config
from hrnet_flax.train.loop import NonFiniteLossError, TrainResult, summary_line, train_and_evaluate

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "demo_config",
    "load_config",
    "summary_line",
    "train_and_evaluate",
]
