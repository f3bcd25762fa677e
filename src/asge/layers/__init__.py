"""Plain ``nn.Module`` layers, usable in any network. They know nothing of training.

Importing this package registers every pool (``rms``, ``avg``, ``max``, ``soft``) in ``POOLS`` and every
context module (``none``, ``sge``, ``gsop``, ``gsop-spatial``, ``ge-minus``, ``ge``, ``ge-plus``) in
``CONTEXTS``.
"""
from .registry import Registry
from .pooling import POOLS, RMSPool2d, rms_pool2d, create_pool
from .norm import NORMS, ChannelLayerNorm, RMSScale, create_norm
from .dropout import Dropout16, dropout16
from .context import CONTEXTS, create_context
from .softpool import SoftPool1d, SoftPool2d, SoftPool3d, soft_pool1d, soft_pool2d, soft_pool3d
from .sge import SpatialGroupEnhance
from .gsop import GSoP
from .gather_excite import GatherExcite

__all__ = [
    "Registry", "POOLS", "RMSPool2d", "rms_pool2d", "create_pool",
    "NORMS", "ChannelLayerNorm", "RMSScale", "create_norm", "CONTEXTS", "create_context",
    "SoftPool1d", "SoftPool2d", "SoftPool3d", "soft_pool1d", "soft_pool2d", "soft_pool3d",
    "SpatialGroupEnhance", "GSoP", "GatherExcite", "Dropout16", "dropout16",
]
