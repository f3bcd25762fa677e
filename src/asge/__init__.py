"""asge: backprop-free training of convolutional networks by Adaptive Spatial Goodness Encoding.

Public names: :func:`partition_factor`, :func:`spatial_goodness`, :class:`GoodnessProjection`,
:class:`ASGEBlock`, :class:`ASGENet`, :class:`TrainConfig`, :mod:`asge.layers` (SoftPool, SGE, GSoP,
Gather-Excite, RMS pooling), :func:`asge.train.fit` and :func:`asge.load` (a trained network, ready to predict).
"""
from .runs.runtime import apply_cli_defaults as _apply_cli_defaults

_apply_cli_defaults()                 # the asge command's OpenMP setting: before torch loads (runtime.py)

from . import layers  # noqa: E402
from .nn.block import ASGEBlock  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .nn.goodness import GoodnessProjection, partition_factor, spatial_goodness  # noqa: E402
from .use.inference import load  # noqa: E402
from .nn.model import ASGENet  # noqa: E402
from .nn.local_network import local_network  # noqa: E402

from .version import __version__  # noqa: E402
__all__ = ["layers", "ASGEBlock", "ASGENet", "GoodnessProjection", "TrainConfig", "partition_factor",
           "spatial_goodness", "load", "local_network", "__version__"]
