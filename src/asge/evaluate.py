"""Test a finished run: rebuild its network from config.yaml, load best.pt, predict by each strategy."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .data import load_data
from .heads import STRATEGIES, check_strategy
from .run import RunDir, load_checkpoint, load_model_state
from .train.loop import build_model, resolve_device


@torch.no_grad()
def strategy_accuracy(net, split, strategy: str, batch_size: int, device) -> float:
    """Test accuracy (percent) of ``net.predict(x, strategy)``; Best stops after block l* (early exit)."""
    net.eval()
    correct, n = torch.zeros((), dtype=torch.long, device=device), 0
    for x, y in split.batches(batch_size, shuffle=False, augment=False, seed=0, device=device):
        correct += (net.predict(x, strategy).argmax(1) == y).sum()
        n += y.shape[0]
    return 100.0 * int(correct) / max(n, 1)


def evaluate_run(run_dir: str, strategy: str = "all", device: str = "auto", data_root: Optional[str] = None,
                 batch_size: int = 256) -> dict:
    run = RunDir(run_dir)
    cfg = run.read_config()
    if data_root:
        cfg = dataclasses.replace(cfg, data_root=data_root)
    strategies = (["last"] if cfg.method == "bp" else list(STRATEGIES)) if strategy == "all" \
        else [check_strategy(strategy)]
    if cfg.method == "bp" and strategies != ["last"]:
        raise ValueError(f"a backprop run only has the 'last' strategy, not {strategy!r}")
    dev = resolve_device(device)
    ckpt = load_checkpoint(run.best_checkpoint)
    data = load_data(cfg.dataset, cfg.data_root, subset=None, seed=cfg.seed, device=dev,
                     input_size=cfg.input_size, num_workers=cfg.num_workers)
    net = build_model(cfg, data.info).to(dev)
    load_model_state(net, ckpt["model"], run.best_checkpoint)
    out = {s: strategy_accuracy(net, data.test, s, batch_size, dev) for s in strategies}
    if "best" in strategies:
        out["best_block"] = int(net.best_block)
    return out
