"""Plain ``nn.Module`` layers, usable in any network. They know nothing of training."""
from .registry import Registry
from .pooling import POOLS, RMSPool2d, rms_pool2d, create_pool
from .norm import NORMS, ChannelLayerNorm, RMSScale, create_norm
from .context import CONTEXTS, create_context

__all__ = [
    "Registry", "POOLS", "RMSPool2d", "rms_pool2d", "create_pool",
    "NORMS", "ChannelLayerNorm", "RMSScale", "create_norm", "CONTEXTS", "create_context",
]
