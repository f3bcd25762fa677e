"""The lean step (issue 14): dropout from a generator per block, one fused AdamW step for all blocks, the
learning rate in a device tensor, the beta map's constants built once. It trains bitwise like the step it
replaced, which is kept here as the reference (per-block AdamW and schedule, masks drawn from the global RNG
after fork_rng + manual_seed), for the paper's and the plus recipe."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from asge.nn.block import tap_rows
from asge.config import TrainConfig
from asge.errors import CheckpointError
from asge.nn.model import ASGENet
from asge.train import Backprop, LocalLearning
from asge.train import optim as optim_mod
from asge.train.local import channels_last, dropout_seed, local_forward
from asge.train.optim import DeviceLRAdamW


def make_net(cfg) -> ASGENet:
    torch.manual_seed(0)
    return ASGENet([8, 16, 16, 32], [False, True, False, True], in_channels=3, num_classes=10, image_size=8,
                   context=cfg.context, head_features=cfg.head_features, fusion_from=cfg.fusion_from,
                   dropout=0.3, seed=0)


class OldStep:
    """The step before issue 14, verbatim in substance: per block, forward, dropout under
    ``fork_rng`` + ``torch.manual_seed(dropout_seed(...))``, zero_grad, backward, its own fused AdamW step
    (Python-float learning rate) and its own cosine schedule step; then the heads."""

    def __init__(self, net, cfg, total_steps: int):
        self.net, self.cfg = net, cfg

        def make(params, lr):
            opt = torch.optim.AdamW(list(params), lr=lr, weight_decay=cfg.weight_decay, fused=True)
            return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=min(cfg.min_lr, lr))
        self.block_opts = [make(b.parameters(), cfg.lr) for b in net.blocks]
        self.head_opt = make(net.heads.parameters(), cfg.head_lr or cfg.lr)
        L = len(net.blocks)
        self.loss_sum, self.correct = torch.zeros(L), torch.zeros(L + 2, dtype=torch.long)
        self.head_loss_sum, self.first_bad_step = torch.zeros(()), torch.full((L,), -1, dtype=torch.long)

    def train_step(self, x, labels, step, epoch_seed):
        h, feats, losses, correct = x, [], [], []
        for l, block in enumerate(self.net.blocks):
            opt, sched = self.block_opts[l]
            h = h.detach()
            y_square = None
            if block.fusable:
                y, logits, y_square = block.fused_local_forward(channels_last(h))
            else:
                y, logits = local_forward(block, h)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.label_smoothing)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(dropout_seed(epoch_seed, step, l))
                h = block.transmit(y, y_square)
            feats.append(block.head_features(y.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            correct.append((logits.detach().argmax(1) == labels).sum())
        opt, sched = self.head_opt
        fusion, last = self.net.heads(feats)
        loss = F.cross_entropy(fusion, labels) + F.cross_entropy(last, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        self.head_loss_sum += loss.detach()
        losses = torch.stack(losses)
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(losses), step,
                                          self.first_bad_step)
        self.loss_sum += losses * labels.shape[0]
        self.correct[:-2] += torch.stack(correct)
        self.correct[-2:] += torch.stack([(fusion.argmax(1) == labels).sum(), (last.argmax(1) == labels).sum()])


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)) for _ in range(n)]


def assert_states_equal(a: dict, b: dict) -> None:
    """Two AdamW states (per-parameter exp_avg, exp_avg_sq, step), bitwise."""
    assert a.keys() == b.keys()
    for k in a:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a[k][key], b[k][key]), (k, key)


@pytest.mark.parametrize("recipe", ["paper", "plus"])
def test_lean_step_trains_bitwise_like_the_old_step(recipe):
    cfg = TrainConfig.from_dict({"recipe": recipe, "lr": 1e-2, "weight_decay": 1e-3, "min_lr": 1e-5}).resolved()
    new_net, old_net = make_net(cfg), make_net(cfg)
    assert all(torch.equal(a, b) for a, b in zip(new_net.state_dict().values(), old_net.state_dict().values()))
    new, old = LocalLearning(new_net, cfg, 5, torch.device("cpu")), OldStep(old_net, cfg, 5)
    new.start_epoch(77)
    for step, (x, y) in enumerate(batches(3)):
        new.train_step(x, y, step)
        old.train_step(x, y, step, 77)
    for (k, a), b in zip(new_net.state_dict().items(), old_net.state_dict().values()):
        assert torch.equal(a, b), k
    for l in range(len(new_net.blocks)):                         # per-block optimizer and schedule states
        mine = new.block_state(l)
        opt, sched = old.block_opts[l]
        assert_states_equal(mine["opt"]["state"], opt.state_dict()["state"])
        assert mine["sched"]["_last_lr"] == sched.state_dict()["_last_lr"]
    assert_states_equal(new.head_opt.opt.state_dict()["state"], old.head_opt[0].state_dict()["state"])
    assert new.lrs() == {"blocks": old.block_opts[0][0].param_groups[0]["lr"],
                         "heads": old.head_opt[0].param_groups[0]["lr"]}
    for name in ("loss_sum", "correct", "head_loss_sum", "first_bad_step"):
        assert torch.equal(getattr(new, name), getattr(old, name)), name
    assert new.seen == 18 and new.steps == 3


def test_generator_masks_equal_the_global_rng_masks_and_the_global_rng_is_untouched():
    from asge.layers.dropout import keep_mask
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    for seed in (0, dropout_seed(5, 3, 2), 2 ** 62 + 12345):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            old = keep_mask(x, 0.1)
        assert torch.equal(keep_mask(x, 0.1, torch.Generator().manual_seed(seed)), old)
    cfg = TrainConfig(lr=1e-3).resolved()
    m = LocalLearning(make_net(cfg), cfg, 5, torch.device("cpu"))
    m.start_epoch(3)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    m.train_step(*batches(1)[0], 0)
    assert torch.equal(torch.get_rng_state(), before)


def test_one_update_for_all_blocks_after_the_last_handoff():
    """Every block's forward and backward run before any block's weights change (the update is one fused
    step at the end): block 1's weights are unchanged when the last block hands its output on."""
    cfg = TrainConfig(lr=1e-2).resolved()
    net = make_net(cfg)
    m = LocalLearning(net, cfg, 5, torch.device("cpu"))
    w0 = net.blocks[0].conv.weight.detach().clone()
    seen = {}
    x, y = batches(1)[0]

    def handoff(out, feats):
        seen["w"] = net.blocks[0].conv.weight.detach().clone()
        seen["grads"] = [p.grad is not None for p in net.blocks.parameters()]

    m.run_blocks(x, y, 0, 0, len(net.blocks), handoff)
    assert torch.equal(seen["w"], w0) and not all(seen["grads"])  # the last block's backward comes after
    assert not torch.equal(net.blocks[0].conv.weight, w0)
    assert len(m.block_optims) == 1 and len(m.block_optims[0].opt.param_groups) == 1


def test_block_state_has_the_old_per_block_layout_and_loads_old_checkpoints():
    """A one-block AdamW's state_dict (what checkpoints held before) loads into its block's slice and the
    run continues bitwise as the old optimizer would; a state of the wrong size is refused in one line."""
    cfg = TrainConfig(lr=1e-2).resolved()
    net, ref = make_net(cfg), make_net(cfg)
    old = OldStep(ref, cfg, 6)
    for step, (x, y) in enumerate(batches(2)):
        old.train_step(x, y, step, 5)
    m = LocalLearning(net, cfg, 6, torch.device("cpu"))
    net.load_state_dict(ref.state_dict())
    saved = {"blocks": [{"opt": o.state_dict(), "sched": s.state_dict(), "scaler": {}} for o, s in old.block_opts],
             "heads": {"opt": old.head_opt[0].state_dict(), "sched": old.head_opt[1].state_dict()}}
    m.load_state_dict(copy.deepcopy(saved))            # a copy, as read from a file: no state shared with old
    for l, (o, _) in enumerate(old.block_opts):
        got = m.block_state(l)["opt"]
        assert_states_equal(got["state"], o.state_dict()["state"])
        assert got["param_groups"][0]["params"] == o.state_dict()["param_groups"][0]["params"]
    m.start_epoch(5)
    m.stats_state()
    for step, (x, y) in enumerate(batches(2, seed=1), 2):
        m.train_step(x, y, step)
        old.train_step(x, y, step, 5)
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    bad = dict(m.block_state(1))
    bad["opt"] = copy.deepcopy(old.block_opts[0][0].state_dict())    # block 1's state for block 2
    bad["opt"]["param_groups"][0]["params"] = [0]
    with pytest.raises(CheckpointError, match="another model or version") as e:
        m.load_block_state(1, bad)
    assert "\n" not in str(e.value)


def test_lr_tensor_float64_on_cpu_is_bitwise_and_float32_is_bounded(monkeypatch):
    """The learning rate as a tensor, on its own: float64 (what the CPU gets) gives bitwise the updates of a
    Python float; float32 (what CUDA gets) rounds the rate by at most 2**-24 of it, so over 3 steps each
    weight moves by at most 3 * (2**-23 * lr * (1 + |p|) + one ulp of p) from the float's result."""
    torch.manual_seed(0)
    p0 = torch.randn(257) * 3
    grads = [torch.randn(257) for _ in range(3)]
    lr = 3.3e-3

    def run(make):
        p = torch.nn.Parameter(p0.clone())
        opt = make([p])
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return p.detach()

    plain = run(lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=1e-3, fused=True))
    assert torch.equal(run(lambda ps: DeviceLRAdamW(ps, lr=lr, weight_decay=1e-3, fused=True)), plain)
    monkeypatch.setattr(optim_mod, "lr_dtype", lambda device: torch.float32)
    f32 = run(lambda ps: DeviceLRAdamW(ps, lr=lr, weight_decay=1e-3, fused=True))
    ulp = torch.finfo(torch.float32).eps * plain.abs()
    bound = 3 * (2 ** -23 * lr * (1 + plain.abs()) + ulp)
    assert ((f32 - plain).abs() <= bound).all()


def test_beta_map_constants_are_built_once():
    tap_rows.cache_clear()
    cfg = TrainConfig(lr=1e-3).resolved()
    m = LocalLearning(make_net(cfg), cfg, 5, torch.device("cpu"))
    for step, (x, y) in enumerate(batches(3)):
        m.train_step(x, y, step)
    info = tap_rows.cache_info()
    assert info.misses == len({(b.in_size,) for b in m.net.blocks}) and info.hits > 0


def test_backprop_gets_the_device_lr_and_fixed_statistics():
    cfg = TrainConfig(lr=1e-3, method="bp").resolved()
    m = Backprop(make_net(cfg), cfg, 5, torch.device("cpu"))
    assert isinstance(m.opt, DeviceLRAdamW)
    addresses = [t.data_ptr() for t in (m.loss_sum, m.correct, m.first_bad_step)]
    x, y = batches(1)[0]
    m.train_step(x, y, 0)
    assert m.opt.lr_tensors[0].item() == m.opt.param_groups[0]["lr"]     # written by the schedule
    m.reset_stats()
    assert addresses == [t.data_ptr() for t in (m.loss_sum, m.correct, m.first_bad_step)]


def test_bench_overhead_prints_both_medians_and_the_ratio(tmp_path, capsys):
    import json
    import re
    from asge.cli import main
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "--overhead", "--overhead-steps", "3", "--warmup", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    r = json.loads((tmp_path / "overhead.json").read_text())
    assert r["channels"][0] == 4 and max(r["channels"]) == 16 and r["batch_size"] == 1 and r["threads"] == 1
    assert len(r["step_ms"]["asge"]) == len(r["step_ms"]["bp"]) == 3
    assert r["ratio"] == r["median_ms"]["asge"] / r["median_ms"]["bp"]
    out = capsys.readouterr().out
    assert re.search(r"ASGE median [\d.]+ ms", out) and re.search(r"BP +median [\d.]+ ms", out)
    assert re.search(r"ASGE/BP [\d.]+x", out) and "goal" not in out.lower()
    assert main(["bench", "--overhead", "--overhead-steps", "1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["bench", "--overhead", "--width", "0.5", "--equal-memory", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--width, --equal-memory: not used by --overhead, which measures vgg8 at width 1/32, batch 1" in err
    assert err.strip().count("\n") == 0 and not (tmp_path / "x").exists()


def test_bench_overhead_of_a_recipe_with_batchnorm_layers_runs_at_batch_2(tmp_path, capsys):
    import json
    from asge.cli import main
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "--overhead", "--recipe", "plus", "--overhead-steps", "2", "--warmup", "1",
                     "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "overhead.json").read_text())["batch_size"] == 2
    assert "batch 2 (the BatchNorm layers of context 'ge' need 2 images)" in capsys.readouterr().out
