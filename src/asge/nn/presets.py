"""Architecture presets: plain data. ``channels[i]`` is block i+1's width; ``downsample[i]`` pools after it.

``lr``, ``head_lr`` and ``epochs`` are the preset's training defaults: the paper's recipe (lr 2e-4 for
blocks and heads, 100 epochs) for the VGGs; the quick presets use lr 2e-3 for the blocks, because 2e-4
leaves blocks and heads barely trained in short runs (README, "Learning rates"), and 1e-2 for the linear heads,
which otherwise lag the blocks they read by 20-30 points after a few epochs (measured on digits, README).
"""
from __future__ import annotations

PRESETS: dict[str, dict] = {
    # The authors' VGG8: 128, 256v, 256, 512v, 512v, 512v, 512 (v = 2x2 pooling after the block).
    "vgg8": dict(channels=[128, 256, 256, 512, 512, 512, 512],
                 downsample=[False, True, False, True, True, True, False],
                 image_size=32, lr=2e-4, epochs=100),
    # VGG11: 128, 256v, 256, 512v, 512, 512v, 512, 512v, 512, 512.
    "vgg11": dict(channels=[128, 256, 256, 512, 512, 512, 512, 512, 512, 512],
                  downsample=[False, True, False, True, False, True, False, True, False, False],
                  image_size=32, lr=2e-4, epochs=100),
    # A CPU-sized VGG for 28-32 px images (MNIST, Fashion-MNIST, CIFAR): minutes per epoch on 2 cores.
    "quick": dict(channels=[32, 64, 64, 128, 128, 128],
                  downsample=[False, True, False, True, True, False],
                  image_size=32, lr=2e-3, head_lr=1e-2, epochs=5),
    # For scikit-learn's 8x8 digits: trains in well under a minute.
    "digits": dict(channels=[32, 64, 64, 128, 128],
                   downsample=[False, True, False, True, False],
                   image_size=8, lr=2e-3, head_lr=1e-2, epochs=30),
}


def default_preset(image_size: int) -> str:
    """The preset a run without ``--model`` trains: ``digits`` for images of up to 16 px, else ``quick``."""
    return "digits" if image_size <= 16 else "quick"


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def scale_channels(channels, width: float) -> list[int]:
    """Width multiplier: ``max(1, round(c * width))`` for each block."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return [max(1, round(c * width)) for c in channels]
