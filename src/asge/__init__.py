"""asge: backprop-free training of convolutional networks by Adaptive Spatial Goodness Encoding.

Public names: :func:`partition_factor`, :func:`spatial_goodness`, :class:`GoodnessProjection`,
:class:`ASGEBlock`, :class:`ASGENet`, :class:`TrainConfig`, :mod:`asge.layers` (SoftPool, SGE, GSoP,
Gather-Excite, RMS pooling), and :func:`asge.train.fit`.
"""
from . import layers
from .block import ASGEBlock
from .config import TrainConfig
from .goodness import GoodnessProjection, partition_factor, spatial_goodness
from .model import ASGENet

__version__ = "0.1.0"
__all__ = ["layers", "ASGEBlock", "ASGENet", "GoodnessProjection", "TrainConfig", "partition_factor",
           "spatial_goodness", "__version__"]
