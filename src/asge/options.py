"""The ``asge train`` options: a flag for every :class:`~asge.config.TrainConfig` field, their help with the
choices and defaults read off the config, the presets and the recipes, and the merge of defaults, recipe,
config.yaml, ``--config`` YAML and flags into one config. ``asge train``, ``asge ablate`` and ``asge bench``
share them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import TrainConfig, key_choices, read_yaml_options


def parse_channels(text: str) -> tuple[list[int], list[bool]]:
    """``"128,256v,256,512v"`` -> ([128, 256, 256, 512], [False, True, False, True]); v = pool after."""
    channels, down = [], []
    for part in text.split(","):
        part = part.strip()
        v = part.endswith("v")
        try:
            c = int(part[:-1] if v else part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad --channels entry {part!r}: expected e.g. 128,256v,256 "
                                             "(an int per block, v to pool after it)") from None
        channels.append(c)
        down.append(v)
    return channels, down


def parse_int_list(text: str) -> list[int]:
    """``"2,3,4"`` -> [2, 3, 4]."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 2,3,4, got {text!r}") from None


def parse_option(text: str) -> tuple[str, object]:
    import yaml
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"bad --context-option {text!r}: expected KEY=VALUE, e.g. groups=32")
    k, v = text.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"bad --context-option value in {text!r}: not a number, word or "
                                         "list") from None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for every TrainConfig field; defaults are None so that YAML and presets fill the gaps."""
    a = p.add_argument
    a("--config", help="YAML file of options (flags given here override it)")
    a("--recipe", help="paper (the paper's recipe), plus (the improved local recipe) or colour (plus with "
                       "learned goodness projections, no augmentation, batch 32: for short budgets; "
                       "docs/accuracy.md): sets defaults that --config and flags override")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="dataset to train and test on")
    g.add_argument("--data-root", metavar="DIR", help="where the dataset lives: used as given, or refused if the "
                                                      "files are not there")
    g.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    g.add_argument("--subset", type=int, help="train on a random subset of N training images (from --seed)")
    g.add_argument("--input-size", type=int, help="image side for imagefolder/imagenet")
    g.add_argument("--augment", help="training augmentation; auto: the dataset's own (CIFAR and ImageFolder trees "
                                     "of S x S images: cifar; Fashion-MNIST: hflip; digits, MNIST: none; larger "
                                     "images: RandomResizedCrop + flip); crop-flip: 4 px padded crop + flip")
    g.add_argument("--test-split", type=int, metavar="N",
                   help="imagefolder without test/: hold back N class-balanced images of train/ (seed 42) "
                        "as the test split")
    g.add_argument("--skip-unreadable", action="store_true", default=None,
                   help="imagefolder/imagenet: leave unreadable image files out (every image is decoded once to "
                        "find them), say how many, list them in the run directory's unreadable.txt")
    g.add_argument("--num-workers", type=int, help="data loader workers (imagefolder/imagenet)")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="architecture preset (default: digits for images of up to 16 px, else quick)")
    g.add_argument("--width", type=float, help="width multiplier for the preset's channels")
    g.add_argument("--channels", type=parse_channels, help="custom blocks, e.g. 64,128v,128,256v (v = pool after)")
    g.add_argument("--alpha", type=float, help="partition granularity (P_l = floor(alpha*C_L/C_l))")
    g.add_argument("--pool", help="2x2 pooling after a v block; or your own by import path, pkg.module:Name")
    g.add_argument("--norm", help="block entry norm")
    g.add_argument("--goodness", help="patch energy: mean or sum of Y^2 over each patch")
    g.add_argument("--context", help="context module after each block's ReLU; or your own by import path, "
                                     "pkg.module:Name")
    g.add_argument("--context-option", type=parse_option, action="append", metavar="KEY=VALUE",
                   help="option for the context module (repeatable), e.g. groups=32, extent=4")
    g.add_argument("--context-blocks", type=parse_int_list,
                   help="1-based blocks that get the context module, e.g. 2,3,4 (default: all)")
    g.add_argument("--dropout", type=float, help="dropout probability after each block's pooling")
    g.add_argument("--head-features", help="what the Fusion head reads of each block: gap, goodness "
                                          "(GAP + patch energies), patch (GAP + patch means)")
    g.add_argument("--fusion-from", type=int, metavar="L", help="first block (1-based) the Fusion head reads")
    g.add_argument("--projection", choices=tuple(key_choices()["projection"]),
                   help="each block's goodness projection: fixed (the paper's fixed random map) or learned "
                        "(the same initial map, trained by the block's own loss: leaves the paper's method)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--method", help="asge, or bp (the backprop baseline on the same blocks)")
    g.add_argument("--epochs", type=int, metavar="N", help="training epochs")
    g.add_argument("--batch-size", type=int, metavar="N", help="training images per step")
    g.add_argument("--lr", type=float, help="peak learning rate of the blocks")
    g.add_argument("--head-lr", type=float, help="learning rate of the Fusion/Last heads")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (blocks and heads)")
    g.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine schedule")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of every cross-entropy")
    g.add_argument("--seed", type=int, help="draws the init, the projections, data order, dropout and --subset")
    g = p.add_argument_group("execution")
    g.add_argument("--device", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--amp", help="mixed precision")
    g.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile each block")
    g.add_argument("--pipeline", type=int, metavar="K",
                   help="run the blocks as K pipelined stages, one process each (ASGE; same result as K=1)")
    g.add_argument("--cuda-graphs", metavar="auto|on|off",
                   help="capture the whole training step as one CUDA graph and replay it (on: CUDA only; auto "
                        "means off until the CUDA graph tests have passed on a GPU)")
    g.add_argument("--out", metavar="DIR", help="run directory (default: runs/<dataset>-<model>-<method>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                                                         "(a finished run: says so and stops)")
    g.add_argument("--tensorboard", action="store_true", default=None, help="write TensorBoard events to the run")
    g.add_argument("--progress", help="auto: a bar on a terminal, lines otherwise")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also write a resumable checkpoint every N steps within an epoch (long epochs); "
                        "SIGTERM / SIGINT always write one at the step they stop")
    g.add_argument("--log-interval", metavar="N|Ns",
                   help="a progress line every N steps, or every N seconds with an s suffix (e.g. 30s); "
                        "default auto: on a terminal a bar, otherwise a line when both 30 s and a quarter of "
                        "the epoch have passed")
    g.add_argument("--val-every", type=int, metavar="N",
                   help="validate every N epochs, and always after the last (checkpoint selection uses the "
                        "validated epochs)")
    g.add_argument("--val-subset", type=int, metavar="N",
                   help="validate on a fixed subset of N validation images (seed 42, the same for every run); "
                        "the final test always uses the whole test split")
    g.add_argument("--init-from", metavar="RUN",
                   help="start from another run's model weights (its best checkpoint; RUN/checkpoints/X.pt "
                        "for another), with a new optimizer and schedule")
    document_train_options(p)


def _preset_values(key: str) -> str:
    from .nn.presets import PRESETS
    return ", ".join(f"{name} {p[key]:g}" for name, p in PRESETS.items() if key in p)


#: Defaults that are not a TrainConfig field's plain value.
DEFAULT_TEXT = {
    "epochs": lambda: f"the preset's: {_preset_values('epochs')}",
    "lr": lambda: f"the preset's: {_preset_values('lr')}",
    "head_lr": lambda: f"the preset's head lr ({_preset_values('head_lr')}), else --lr (the VGGs)",
    "subset": lambda: "all the training images",
    "input_size": lambda: "the dataset's: digits 8, imagenet 224, others 32",
    "channels": lambda: "the preset's, scaled by --width",
    "data_root": lambda: "./data, and for fashion-mnist also /usr/share/datasets/fashion-mnist",
    "checkpoint_every": lambda: "0: at epoch ends only",
    "pipeline": lambda: "1: one process",
    "val_subset": lambda: "the whole validation split",
    "test_split": lambda: "none: the tree's own test/ (or val/) folder",
}


def document_train_options(p: argparse.ArgumentParser) -> None:
    """Give every train flag its choices (``{rms,avg,max,soft}``) and its default, read off TrainConfig, the
    presets and the recipes (so that ``--help`` cannot drift from what a run does)."""
    import dataclasses as dc
    import re
    from .recipes import RECIPES
    fields = {f.name: f for f in dc.fields(TrainConfig)}
    choices = key_choices()
    for action in p._actions:
        key = action.dest
        if key not in fields or action.help == argparse.SUPPRESS:
            continue
        if key in choices and action.metavar is None:
            action.metavar = "{" + ",".join(choices[key]) + "}"
            if key in ("pool", "context"):
                action.metavar += "|MODULE:NAME"
        if action.metavar is None and action.type is int:
            action.metavar = "N"
        if re.search(r"\bdefault\b", action.help or ""):    # says its default itself
            continue
        f = fields[key]
        value = f.default if f.default is not dc.MISSING else f.default_factory()
        if key in DEFAULT_TEXT:
            text = DEFAULT_TEXT[key]()
        elif isinstance(value, bool):
            text = "on" if value else "off"
        elif value is None:
            text = "none"
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        by_value: dict[str, list[str]] = {}          # the recipes that set this key, grouped by value
        for recipe, keys in RECIPES.items():
            if key in keys:
                by_value.setdefault(f"{keys[key]:g}" if isinstance(keys[key], float) else str(keys[key]),
                                    []).append(recipe)
        for v, recipes in by_value.items():
            text += f"; {v} with --recipe {' or '.join(recipes)}"
        action.help = f"{action.help or ''} (default: {text.replace('%', '%%')})".strip()


CONFIG_FLAGS = ("recipe", "dataset", "data_root", "download", "subset", "input_size", "augment", "test_split",
                "skip_unreadable", "num_workers", "model",
                "width", "alpha", "pool", "norm", "goodness", "context", "context_blocks", "dropout",
                "head_features", "fusion_from", "projection", "method", "epochs",
                "batch_size", "lr", "head_lr", "weight_decay", "min_lr", "label_smoothing", "seed", "device",
                "amp", "channels_last", "compile", "pipeline", "cuda_graphs", "out", "tensorboard", "progress", "checkpoint_every",
                "log_interval", "val_every", "val_subset", "init_from")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < the recipe's (``--recipe``, or the YAML's ``recipe``) < the run's own config.yaml (when
    resuming) < --config YAML < flags."""
    overrides = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k, None) is not None}
    if getattr(args, "channels", None) is not None:
        overrides["channels"], overrides["downsample"] = args.channels
    if getattr(args, "context_option", None):
        overrides["context_options"] = dict(args.context_option)
    base = {}
    if getattr(args, "resume", False) and args.out and (Path(args.out) / "config.yaml").is_file():
        from .runs.directory import RunDir
        base = RunDir(args.out).read_config().to_dict()
    if args.config:
        base.update(read_yaml_options(args.config))
    base.update(overrides)
    return TrainConfig.from_dict(base)
