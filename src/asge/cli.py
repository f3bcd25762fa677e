"""The ``asge`` command: train, eval, and the subcommands that other modules add (ablate, bench, report,
predict, export).

Bad input exits with code 2 and a one-line message, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .config import TrainConfig, read_yaml_options
from .errors import AsgeError, Preempted

# Subcommands defined in their own modules: each has add_arguments(parser) and run(args) -> int.
EXTRA_COMMANDS = {
    "ablate": ("asge.ablate", "run a grid of pool x context settings and write a results table"),
    "bench": ("asge.bench", "ASGE against backprop on the same batches: speed and memory"),
    "report": ("asge.report", "plots, report.md and report.html from one or more run directories"),
    "predict": ("asge.predict", "classify image files or folders with a trained run"),
    "export": ("asge.export", "write a run as TorchScript, ONNX or safetensors, with a model card"),
}


DESCRIPTION = ("Train convolutional networks without end-to-end backpropagation, by Adaptive Spatial Goodness "
               "Encoding (ASGE); test, use, export and compare what you trained.")


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


class OneLineParser(argparse.ArgumentParser):
    """Bad flags: one line (what was wrong, where to look) and exit code 2, not the whole usage text.

    Abbreviated flags are not accepted (``--epoch`` for ``--epochs``: they change meaning when options are
    added); a misspelled one gets "did you mean --epochs?"."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        import difflib
        import re
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            close = difflib.get_close_matches(wrong[1], re.findall(r"'([^']*)'", wrong[2]), n=1)
            message += f" (did you mean {close[0]}?)" if close else ""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")

    def suggest(self, word: str) -> str:
        """`` (did you mean --epochs?)`` for a flag close to one of this parser's, else ``""``."""
        import difflib
        flag = word.split("=", 1)[0]
        if not flag.startswith("-"):
            return ""
        options = [o for o in self._option_string_actions if o.startswith("--")]
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""

    def unrecognized(self, extras: Sequence[str]):
        """The one-line error for arguments no option takes, naming the closest flag."""
        hint = next((h for h in (self.suggest(w) for w in extras) if h), "")
        self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


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
    g.add_argument("--projection", choices=("fixed", "learned"),
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


def option_choices() -> dict:
    """The valid names of each option that takes one (shown as ``{a,b,c}`` in ``--help``); pools and
    contexts also take your own module by import path."""
    from .config import METHODS
    from .data import DATASETS
    from .data.augment import AUGMENTATIONS
    from .goodness import GOODNESS_REDUCTIONS
    from .heads import HEAD_FEATURES
    from .layers import CONTEXTS, NORMS, POOLS
    from .presets import PRESETS
    from .recipes import RECIPES
    return {"recipe": list(RECIPES), "dataset": list(DATASETS), "model": list(PRESETS), "pool": list(POOLS),
            "norm": list(NORMS), "goodness": list(GOODNESS_REDUCTIONS), "context": list(CONTEXTS),
            "head_features": list(HEAD_FEATURES), "method": list(METHODS), "amp": ["none", "bf16", "fp16"],
            "progress": ["auto", "bar", "lines", "none"], "augment": ["auto", *AUGMENTATIONS]}


def _preset_values(key: str) -> str:
    from .presets import PRESETS
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
    choices = option_choices()
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
        from .run import RunDir
        base = RunDir(args.out).read_config().to_dict()
    if args.config:
        base.update(read_yaml_options(args.config))
    base.update(overrides)
    return TrainConfig.from_dict(base)


def plural(n, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary_rows(s: dict, out: Optional[str] = None) -> list[tuple[str, str]]:
    """The end-of-run summary as (label, text) rows: headline, strategies, per block, l*, parameters,
    seconds, recipe, method, model, run directory. Each test accuracy carries its 95% Wilson score interval
    in parentheses when the summary says how many images were tested (:mod:`asge.stats`)."""
    from .stats import accuracy_interval, interval_text, count_test_images
    acc = s["test_accuracy"]
    head = s.get("headline") or ("fusion" if "fusion" in acc else "last")
    n = count_test_images(s)

    def ci(a, digits: int) -> str:
        text = interval_text(accuracy_interval(a, n), digits, dash="-")
        return f" ({text})" if text else ""

    headline = interval_text(accuracy_interval(acc[head], n), dash="-")
    rows = [("headline", f"{acc[head]:.2f}% test accuracy ({head}) after {plural(s['epochs'], 'epoch')}, "
                         f"the model of epoch {s['best_epoch']} (best validation)"
                         + (f"; 95% interval {headline}% over {n:,} test images" if headline else "")),
            ("strategies", "   ".join(f"{k} {v:.2f}%{ci(v, 2)}" for k, v in acc.items()))]
    if s.get("block_test_accuracy"):
        rows.append(("per block", "  ".join(f"{i + 1}: {a:.1f}%{ci(a, 1)}"
                                            for i, a in enumerate(s["block_test_accuracy"]))))
    if s.get("best_block"):
        rows.append(("l*", f"block {s['best_block']} (early exit spends {100 * s['best_compute_fraction']:.0f}% of "
                           "Fusion's multiply-accumulates per image)"))
    params = s.get("parameters") or {}
    rows.append(("parameters", "   ".join(f"{k} {v:,}" for k, v in params.items() if isinstance(v, int) and v)))
    rows.append(("seconds", f"{s['train_seconds']:.1f} training, {s['images_per_second']:,.0f} images/s on "
                            f"{s.get('device_name') or s['device']}"))
    rows.append(("recipe", str(s.get("recipe", "paper"))))
    rows.append(("method", s["method"] + (" (local losses: no gradient crosses a block)" if s["method"] == "asge"
                                          else " (backprop through the same blocks)")))
    channels = ", ".join(str(c) for c in s.get("channels") or [])
    network = "custom channels" if s.get("custom_channels") else f"{s['model']} preset"
    rows.append(("model", f"{network} on {s['dataset']}" + (f", channels {channels}" if channels else "")
                 + (f", {s['subset']:,} training images" if s.get("subset") else "")))
    if out:
        rows.append(("run directory", str(out)))
    return rows


def print_summary(s: dict, out: Optional[str]) -> None:
    rows = summary_rows(s, out)
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from .train.resume import check_resume, finished_message
    finished = check_resume(cfg, args.resume)     # before anything is locked, loaded or written
    if finished is not None:
        if int(os.environ.get("RANK", "0")) == 0:   # torchrun: the other ranks stop quietly
            print(finished_message(cfg.out, finished))
        return 0
    if cfg.out is None:
        cfg.out = str(Path("runs") / f"{cfg.dataset}-{cfg.resolved().model}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}")
    from .train.distributed import fit_distributed, launched_by_torchrun
    if launched_by_torchrun():            # torchrun --nproc_per_node=N -m asge train ...: one rank of N
        if cfg.pipeline > 1:
            raise AsgeError("--pipeline and torchrun data parallelism cannot be combined; use one of them")
        summary = fit_distributed(cfg, resume=args.resume)
        if "rank" in summary:             # not the main rank: rank 0 prints and writes the run
            return 0
    elif cfg.pipeline > 1:
        from .train.pipeline import fit_pipeline
        summary = fit_pipeline(cfg, resume=args.resume)
    else:
        from .train import fit
        summary = fit(cfg, resume=args.resume)
    print_summary(summary, cfg.out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run
    from .evaluate import format_eval
    results = evaluate_run(args.run_dir, strategy=args.strategy, device=args.device, data_root=args.data_root,
                           batch_size=args.batch_size, per_class=True, progress=args.progress,
                           log=lambda note: print(f"asge eval: note: {note}", file=sys.stderr, flush=True))
    print(format_eval(results, per_class=args.per_class))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = OneLineParser(prog="asge", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"asge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    help_text = "train a network by ASGE (or --method bp)"
    p = sub.add_parser("train", help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    help_text = "test a finished run's best checkpoint"
    p = sub.add_parser("eval", help=help_text, description=help_text[0].upper() + help_text[1:] + " on the "
                       "test split, by each strategy (an unfinished run: fusion and last of its last checkpoint).")
    p.add_argument("run_dir", metavar="RUN", help="a run directory")
    p.add_argument("--strategy", default="all", choices=("all", "fusion", "last", "best"),
                   help="which strategies to test (default: all of the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--data-root", metavar="DIR", help="read the dataset here instead of the run's data root")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per forward pass (default: 256)")
    p.add_argument("--per-class", action="store_true", help="also the test accuracy of each class, by name")
    p.add_argument("--progress", default="auto", choices=("auto", "bar", "lines", "none"),
                   help="auto (default): a bar on a terminal, lines otherwise (on stderr)")
    p.set_defaults(func=cmd_eval)
    for name, (module, help_text) in EXTRA_COMMANDS.items():
        if importlib.util.find_spec(module) is None:
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        mod.add_arguments(p)
        show_defaults(p)
        p.set_defaults(func=mod.run)
    return parser


def show_defaults(p: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` to the help of every option that has a default and does not say it."""
    import re
    for action in p._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings or action.default is None \
                or isinstance(action.default, bool) or action.default == argparse.SUPPRESS \
                or re.search(r"\bdefault\b", action.help or ""):
            continue
        value = action.default
        text = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) \
            if isinstance(value, (list, tuple)) else f"{value:g}" if isinstance(value, float) else str(value)
        action.help = f"{action.help or ''} (default: {text.replace('%', '%%')})".strip()


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """``parser.parse_args``, with arguments that no option takes refused by the subcommand's parser (its
    name in the error, and the flag it was probably meant to be)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].unrecognized(extras)
    return args


def report_error(e: Exception, command: Optional[str] = None) -> None:
    """``asge COMMAND: error: ...`` on one line (the prefix of argparse's errors too). In a torchrun group, one
    line for the whole group: the first rank to fail prints it (naming itself), the others stay quiet."""
    message = " ".join(str(e).split()) or type(e).__name__
    from .train.distributed import launched_by_torchrun
    if launched_by_torchrun():
        from .errors import PeerFailedError
        from .train import peers
        if not peers.first_to_report():
            return
        if not isinstance(e, PeerFailedError):
            message = f"rank {os.environ['RANK']}: {message}"
    print(f"asge{' ' + command if command else ''}: error: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .allocator import tune_malloc
    tune_malloc()                          # reuse freed activation buffers (ASGE_MALLOC=default: off)
    args = parse_args(build_parser(), argv)
    from .preempt import StopSignals
    from .train.distributed import launched_by_torchrun
    # torchrun answers a failing worker with SIGTERM to the others: they still finish saying why they stop
    with StopSignals(announce=False) if launched_by_torchrun() else contextlib.nullcontext():
        try:
            return args.func(args)
        except Preempted as e:      # SIGTERM / SIGINT: a checkpoint of the step it stopped at is written
            if e.report:
                print(f"asge: {e}", file=sys.stderr)
            return e.exit_code
        except (AsgeError, ValueError) as e:
            report_error(e, args.command)
            return 2
        except OSError as e:        # a file system refusal no check above foresaw: still one line
            where = f" ({e.filename})" if e.filename else ""
            report_error(AsgeError(f"{e.strerror or e}{where}"), args.command)
            return 2
        except KeyboardInterrupt:
            print("asge: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
