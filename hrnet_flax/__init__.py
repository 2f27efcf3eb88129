"""HRNet image classification and multi-resolution features in JAX/Flax.

Layers, lowest first: `models` (the network as a config table and Linen modules), `weights`
(checkpoints, layouts, the pretrained registry), `data` (sources, preprocessing, batches),
`tasks` (loss, metrics and data of each task), `parallel` and `runtime` (devices, XLA),
`evaluate`, `train`, `predict` and `cli`. A module imports only from layers below it.
"""

from hrnet_flax.models.config import ARCHS, HRNetConfig, StageConfig
from hrnet_flax.models.fold import fold_batchnorm
from hrnet_flax.models.hrnet import HRNet
from hrnet_flax.models.initialization import init_variables
from hrnet_flax.models.registry import create_model, list_models
from hrnet_flax.models.stacking import is_stacked, stack_variables, unstack_variables
from hrnet_flax.weights.convert import export_timm, save_checkpoint
from hrnet_flax.weights.pretrained import get_pretrained, list_pretrained, load_pretrained

__all__ = [
    "ARCHS",
    "HRNet",
    "HRNetConfig",
    "StageConfig",
    "create_model",
    "export_timm",
    "fold_batchnorm",
    "get_pretrained",
    "init_variables",
    "is_stacked",
    "list_models",
    "list_pretrained",
    "load_pretrained",
    "save_checkpoint",
    "stack_variables",
    "unstack_variables",
]

__version__ = "0.1.0"
