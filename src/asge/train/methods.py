"""The training methods by name: what ``--method`` chooses."""
from .backprop import Backprop
from .local import LocalLearning

METHODS = {"asge": LocalLearning, "bp": Backprop}
