"""HRNet image classification and multi-resolution features in JAX/Flax."""

from hrnet_flax.config import ARCHS, HRNetConfig, StageConfig
from hrnet_flax.fold import fold_batchnorm
from hrnet_flax.initialization import init_variables
from hrnet_flax.model import HRNet
from hrnet_flax.registry import create_model, list_models
from hrnet_flax.stacking import is_stacked, stack_variables, unstack_variables
from hrnet_flax.pretrained import get_pretrained, list_pretrained, load_pretrained, save_checkpoint  # noqa: F401

__all__ = ["ARCHS", "HRNet", "HRNetConfig", "StageConfig", "create_model", "fold_batchnorm", "init_variables", "is_stacked", "list_models",
           "stack_variables", "unstack_variables"]  # fmt: skip
__version__ = "0.1.0"
