"""HRNet image classification and multi-resolution features in JAX/Flax."""

from hrnet_flax.config import ARCHS, HRNetConfig, StageConfig
from hrnet_flax.initialization import init_variables
from hrnet_flax.model import HRNet
from hrnet_flax.registry import create_model, list_models

__all__ = ["ARCHS", "HRNet", "HRNetConfig", "StageConfig", "create_model", "init_variables", "list_models"]
__version__ = "0.1.0"
