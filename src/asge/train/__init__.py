"""Training: the local (ASGE) algorithm, the backprop baseline, and the epoch loop that drives both."""
from .local import LocalLearning, block_step, make_optimizer
from .backprop import Backprop
from ..runs.evaluation import evaluate_split
from .modes import fit
from .methods import METHODS
from ..runs.build import build_model, resolve_device

__all__ = ["LocalLearning", "Backprop", "block_step", "make_optimizer", "fit", "evaluate_split", "build_model",
           "resolve_device", "METHODS"]
