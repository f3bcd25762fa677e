"""asge: backprop-free training of convolutional networks by Adaptive Spatial Goodness Encoding.

Public names: :func:`partition_factor`, :func:`spatial_goodness`, :class:`GoodnessProjection`,
:class:`ASGEBlock`, :class:`ASGENet`, :class:`TrainConfig`, :mod:`asge.layers` (SoftPool, SGE, GSoP,
Gather-Excite, RMS pooling), :func:`asge.train.fit` and :func:`asge.load` (a trained network, ready to predict).
"""
from . import layers
from .block import ASGEBlock
from .config import TrainConfig
from .goodness import GoodnessProjection, partition_factor, spatial_goodness
from .inference import load
from .model import ASGENet

__version__ = "0.1.0"
__all__ = ["layers", "ASGEBlock", "ASGENet", "GoodnessProjection", "TrainConfig", "partition_factor",
           "spatial_goodness", "load", "__version__"]
