"""Training: the local (ASGE) algorithm, the backprop baseline, and the epoch loop that drives both."""
from .local import LocalLearning, block_step, make_optimizer
from .backprop import Backprop
from .evaluation import evaluate
from .loop import fit, build_model, resolve_device

METHODS = {"asge": LocalLearning, "bp": Backprop}

__all__ = ["LocalLearning", "Backprop", "block_step", "make_optimizer", "fit", "evaluate", "build_model",
           "resolve_device", "METHODS"]
