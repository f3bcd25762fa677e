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
    """Bad flags: one line (what was wrong, where to look) and exit code 2, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


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
    a("--recipe", help="paper (default: the paper's recipe) or plus (the improved local recipe, "
                       "docs/accuracy.md); sets defaults that --config and flags override")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="digits (default), mnist, fashion-mnist, cifar10, cifar100, imagefolder, imagenet")
    g.add_argument("--data-root", help="where the dataset lives (fashion-mnist also finds Debian's package)")
    g.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    g.add_argument("--subset", type=int, help="train on a random subset of N training images (from --seed)")
    g.add_argument("--input-size", type=int, help="image side for imagefolder/imagenet")
    g.add_argument("--num-workers", type=int, help="data loader workers (imagefolder/imagenet)")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="preset: vgg8, vgg11, quick, digits")
    g.add_argument("--width", type=float, help="width multiplier for the preset's channels")
    g.add_argument("--channels", type=parse_channels, help="custom blocks, e.g. 64,128v,128,256v (v = pool after)")
    g.add_argument("--alpha", type=float, help="partition granularity (P_l = floor(alpha*C_L/C_l)), default 1")
    g.add_argument("--pool", help="rms (default), avg, max, soft")
    g.add_argument("--norm", help="layer (default), rms, none")
    g.add_argument("--goodness", help="patch energy: mean (default) or sum")
    g.add_argument("--context", help="none, sge, gsop, gsop-spatial, ge-minus, ge, ge-plus")
    g.add_argument("--context-option", type=parse_option, action="append", metavar="KEY=VALUE",
                   help="option for the context module (repeatable), e.g. groups=32, extent=4")
    g.add_argument("--context-blocks", type=parse_int_list,
                   help="1-based blocks that get the context module, e.g. 2,3,4 (default: all)")
    g.add_argument("--dropout", type=float)
    g.add_argument("--head-features", help="what the Fusion head reads of each block: gap (default), goodness "
                                          "(GAP + patch energies), patch (GAP + patch means)")
    g.add_argument("--fusion-from", type=int, help="first block (1-based) the Fusion head reads (default 2)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--method", help="asge (default) or bp (backprop baseline on the same blocks)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    g.add_argument("--head-lr", type=float, help="learning rate of the Fusion/Last heads (default: --lr)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--min-lr", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("execution")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--amp", help="none (default), bf16, fp16")
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile each block")
    g.add_argument("--pipeline", type=int, metavar="K",
                   help="run the blocks as K pipelined stages, one process each (ASGE; same result as K=1)")
    g.add_argument("--out", help="run directory (default runs/<dataset>-<model>-<method>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--tensorboard", action="store_true", default=None, help="write TensorBoard events to the run")
    g.add_argument("--progress", help="auto (default), bar, lines, none")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also write a resumable checkpoint every N steps within an epoch (long epochs); "
                        "SIGTERM / SIGINT always write one at the step they stop")


CONFIG_FLAGS = ("recipe", "dataset", "data_root", "download", "subset", "input_size", "num_workers", "model",
                "width", "alpha", "pool", "norm", "goodness", "context", "context_blocks", "dropout",
                "head_features", "fusion_from", "method", "epochs",
                "batch_size", "lr", "head_lr", "weight_decay", "min_lr", "label_smoothing", "seed", "device",
                "amp", "channels_last", "compile", "pipeline", "out", "tensorboard", "progress", "checkpoint_every")


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


def print_summary(s: dict, out: Optional[str]) -> None:
    print(f"\n{s['method']} on {s['dataset']} ({s['model']}, channels {s['channels']}), "
          f"{s['epochs']} epochs, best epoch {s['best_epoch']}")
    if s["block_test_accuracy"]:
        print("test accuracy per block: " + "  ".join(f"{i + 1}:{a:.2f}%" for i, a in
                                                       enumerate(s["block_test_accuracy"])))
    print("test accuracy per strategy: " + "  ".join(f"{k} {v:.2f}%" for k, v in s["test_accuracy"].items()))
    if s.get("best_block"):
        print(f"best block l* = {s['best_block']} (early exit uses {100 * s['best_compute_fraction']:.0f}% "
              "of the conv compute)")
    print(f"parameters: {s['parameters']}")
    print(f"train time {s['train_seconds']:.1f}s, {s['images_per_second']:.0f} images/s on {s['device']}")
    if out:
        print(f"run directory: {out}")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.out is None:
        cfg.out = str(Path("runs") / f"{cfg.dataset}-{cfg.model}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}")
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
                           batch_size=args.batch_size, per_class=True)
    print(format_eval(results, per_class=args.per_class))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="asge", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train a network by ASGE (or --method bp)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="test a finished run's best checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--strategy", default="all", help="fusion, last, best, or all (default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", help="override the run's data root")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--per-class", action="store_true", help="also the test accuracy of each class, by name")
    p.set_defaults(func=cmd_eval)
    for name, (module, help_text) in EXTRA_COMMANDS.items():
        if importlib.util.find_spec(module) is None:
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def report_error(e: Exception) -> None:
    """``asge: error: ...`` on one line. In a torchrun group, one line for the whole group: the first rank to
    fail prints it (naming itself), the others stay quiet."""
    message = " ".join(str(e).split()) or type(e).__name__
    from .train.distributed import launched_by_torchrun
    if launched_by_torchrun():
        from .errors import PeerFailedError
        from .train import peers
        if not peers.first_to_report():
            return
        if not isinstance(e, PeerFailedError):
            message = f"rank {os.environ['RANK']}: {message}"
    print(f"asge: error: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .allocator import tune_malloc
    tune_malloc()                          # reuse freed activation buffers (ASGE_MALLOC=default: off)
    args = build_parser().parse_args(argv)
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
            report_error(e)
            return 2
        except KeyboardInterrupt:
            print("asge: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
