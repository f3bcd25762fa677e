"""The network: goodness, the ASGE block, the heads, ASGENet and its presets. It knows nothing of training."""
