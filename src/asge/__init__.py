"""asge: backprop-free training of convolutional networks by Adaptive Spatial Goodness Encoding."""
__version__ = "0.1.0"
