"""The training methods by name: what ``--method`` chooses.

The names are ``asge.config.METHODS`` (the config validates ``--method`` against them without importing
training); each class says its own in ``name``, and this module checks at import that the two agree.
"""
from ..config import METHODS as METHOD_NAMES
from .backprop import Backprop
from .local import LocalLearning
from .method import TrainingMethod

METHODS: dict[str, type[TrainingMethod]] = {cls.name: cls for cls in (LocalLearning, Backprop)}

if tuple(METHODS) != METHOD_NAMES:
    raise ImportError(f"asge.config.METHODS {METHOD_NAMES} and the training methods' names {tuple(METHODS)} "
                      "differ: add the method to both, in the same order")
