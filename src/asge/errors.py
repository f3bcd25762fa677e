"""Errors that reach the user as a one-line message and exit code 2 (never a traceback)."""


class AsgeError(Exception):
    """Base class: bad input, damaged files, diverged runs."""


class CheckpointError(AsgeError):
    """A checkpoint is missing, damaged, or from another configuration."""


class NonFiniteLossError(AsgeError):
    """A local loss became NaN or inf. The last good checkpoint is kept."""

    def __init__(self, block, step: int, epoch: int):
        self.block, self.step, self.epoch = block, step, epoch
        what = "the backprop loss" if block is None else f"the local loss of block {block}"
        super().__init__(f"{what} became NaN or inf at step {step} of epoch {epoch}; "
                         "stopped (the last good checkpoint is kept). Try a lower --lr or --amp none.")


class RunDirError(AsgeError):
    """A directory is not an asge run, or the run is not finished."""


class RunLockedError(AsgeError):
    """Another process holds the run directory's lock (one run per directory)."""


class Preempted(AsgeError):
    """SIGTERM or SIGINT stopped a run at a step boundary, after a checkpoint of that point was written.

    ``exit_code`` is 128 + the signal number, as a shell reports a process that the signal ended. ``report``
    is False on the data-parallel ranks that leave the message to rank 0.
    """

    def __init__(self, what: str, signum: int, hint: str, report: bool = True):
        super().__init__(f"{what}; {hint}")
        self.what, self.hint = what, hint
        self.signum, self.exit_code, self.report = signum, 128 + signum, report


class PeerFailedError(AsgeError):
    """Another rank of a data-parallel group failed; the message names it."""
