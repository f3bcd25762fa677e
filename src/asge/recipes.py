"""Recipes: named sets of defaults for ``TrainConfig``. A key a recipe sets is used unless the YAML config or a
flag gives it (``asge train --recipe plus --lr 1e-3``: the plus recipe with another lr).

``paper``: the paper's recipe as the paper (arXiv 2509.12394) words it (LayerNorm entry, RMS pooling, Fusion on
GAP(Y) of blocks 2..L): every key keeps its ``TrainConfig`` default. ``plus``: the improved local recipe, chosen
and measured in docs/accuracy.md on grey images. ``colour``: plus with a learned goodness projection, no
augmentation, batch 32 and heads at lr 3e-3, for short budgets, colour images first (docs/accuracy.md). All keep
the method local: blocks learn only from their own local loss, the heads read detached features.
"""
from __future__ import annotations

PLUS = {
    "context": "ge",                      # Gather-Excite (theta-, global extent) after each block's ReLU
    "head_features": "goodness",          # Fusion reads GAP(Y_l) and the patch energies each block is trained on
    "fusion_from": 1,                     # ... of every block, block 1 included
    "head_lr": 1e-2,                      # linear heads on ~2k features lag the blocks at the blocks' lr
}

RECIPES: dict[str, dict] = {
    "paper": {},
    "plus": PLUS,
    # plus, tuned on colour images at a short budget (docs/accuracy.md, CIFAR-10 section). It leaves the
    # paper's method in one named way: each block also learns its goodness read-out (--projection learned).
    "colour": {
        **PLUS,
        "head_lr": 3e-3,                  # four times plus's steps: plus's 1e-2 leaves the Fusion head noisy
        "projection": "learned",          # the block's own loss also trains W_l, b_l (same initial values)
        "augment": "none",                # at 3 epochs random crops slow the blocks down more than they regularise
        "batch_size": 32,                 # four times the local steps per epoch: the blocks underfit at 128
    },
}


def recipe_defaults(name: str) -> dict:
    """The keys recipe ``name`` sets (a copy); an unknown name lists the valid ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    return dict(RECIPES[name])
