"""ASGE and backprop on the real Fashion-MNIST (Debian's dataset-fashion-mnist package)."""
from pathlib import Path

import pytest

from asge.config import TrainConfig
from asge.data import DEBIAN_FASHION_MNIST
from asge.train import fit

pytestmark = pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST).is_dir(),
                                reason=f"real Fashion-MNIST absent: {DEBIAN_FASHION_MNIST} not found "
                                       "(apt-get install dataset-fashion-mnist)")


@pytest.mark.parametrize("method", ["asge", "bp"])
def test_quick_preset_learns_fashion_mnist(tmp_path, method):
    cfg = TrainConfig(dataset="fashion-mnist", model="quick", width=0.5, epochs=1, subset=3000, batch_size=64,
                      method=method, progress="none", out=str(tmp_path / method))
    s = fit(cfg, log=lambda m: None)
    assert s["dataset"] == "fashion-mnist"
    # One short epoch (47 steps): well above chance (10%), far from converged.
    if method == "asge":
        assert len(s["block_test_accuracy"]) == 6
        assert max(s["block_test_accuracy"]) > 35
        assert s["test_accuracy"]["last"] > 15 and s["test_accuracy"]["fusion"] > 15
    else:
        assert s["test_accuracy"]["last"] > 35
