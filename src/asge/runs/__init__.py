"""What a run is, for training and using it alike: its directory and checkpoints, the lock, stop signals,
provenance, the network and data a config builds, evaluation over a split, progress display."""
