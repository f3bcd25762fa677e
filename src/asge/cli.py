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

from .options import add_train_arguments, config_from_args
from .errors import AsgeError, Preempted

# Subcommands defined in their own modules: each has add_arguments(parser) and command(args) -> int.
EXTRA_COMMANDS = {
    "ablate": ("asge.tools.ablate", "run a grid of pool x context settings (and splits x local rules) and "
                                    "write a results table"),
    "bench": ("asge.perf.bench", "ASGE against backprop on the same batches: speed and memory"),
    "report": ("asge.tools.report", "plots, report.md and report.html from one or more run directories"),
    "predict": ("asge.use.predict", "classify image files or folders with a trained run"),
    "export": ("asge.use.export", "write a run as TorchScript, ONNX or safetensors, with a model card"),
}


DESCRIPTION = ("Train convolutional networks without end-to-end backpropagation, by Adaptive Spatial Goodness "
               "Encoding (ASGE); test, use, export and compare what you trained.")


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


def plural(n, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary_rows(s: dict, out: Optional[str] = None) -> list[tuple[str, str]]:
    """The end-of-run summary as (label, text) rows: headline, strategies, per block, l*, parameters,
    seconds, recipe, method, model, run directory. Each test accuracy carries its 95% Wilson score interval
    in parentheses when the summary says how many images were tested (:mod:`asge.runs.stats`)."""
    from .runs.stats import accuracy_interval, interval_text, count_test_images
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
    rows.append(("model", f"{network_text(s)} on {s['dataset']}" + (f", channels {channels}" if channels else "")
                 + (f", {s['subset']:,} training images" if s.get("subset") else "")))
    if out:
        rows.append(("run directory", str(out)))
    return rows


def network_text(s: dict) -> str:
    """What network a summary's run trained: ``vgg8 preset``, ``custom channels``, or for a network cut into
    modules (one not a VGG preset, or a preset grouped by --split or trained by another --local-loss; its
    summary's ``modules``) ``resnet20 cut into 4 modules (asge rule)``; backprop names no rule."""
    from .nn.local_network import PYTHON_MODEL
    from .nn.presets import PRESETS
    model = s["model"]
    if s.get("custom_channels"):
        name = "custom channels"
    elif model in PRESETS:
        name = f"{model} preset"
    else:
        name = "your network (given from Python)" if model == PYTHON_MODEL else str(model)
    modules = s.get("modules") or []
    if not modules or not (s.get("network") or (model not in PRESETS and not s.get("custom_channels"))):
        return name
    rule = f" ({s.get('local_loss', 'asge')} rule)" if s.get("method") == "asge" else ""
    return f"{name} cut into {plural(len(modules), 'module')}{rule}"


def print_summary(s: dict, out: Optional[str]) -> None:
    rows = summary_rows(s, out)
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.out is None and not args.resume:     # --resume without --out: refused by fit, naming --out
        cfg.out = str(Path("runs") / f"{cfg.dataset}-{cfg.resolved().model}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}")
    from .train import fit
    finished = []                         # a finished run: its one line is all there is to say
    summary = fit(cfg, resume=args.resume, require_run=True, on_finished=finished.append)
    if not finished and "rank" not in summary:      # torchrun: rank 0 prints
        print_summary(summary, cfg.out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .use.evaluate import evaluate_run
    from .use.evaluate import format_eval
    results = evaluate_run(args.run_dir, strategy=args.strategy, device=args.device, data_root=args.data_root,
                           batch_size=args.batch_size, per_class=True, progress=args.progress,
                           log=lambda note: print(f"asge eval: note: {note}", file=sys.stderr, flush=True))
    print(format_eval(results, per_class=args.per_class))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import PROGRESS_MODES
    from .nn.heads import STRATEGIES
    from .version import __version__
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
    p.add_argument("--strategy", default="all", choices=("all", *STRATEGIES),
                   help="which strategies to test (default: all of the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--data-root", metavar="DIR", help="read the dataset here instead of the run's data root")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per forward pass (default: 256)")
    p.add_argument("--per-class", action="store_true", help="also the test accuracy of each class, by name")
    p.add_argument("--progress", default="auto", choices=PROGRESS_MODES,
                   help="auto (default): a bar on a terminal, lines otherwise (on stderr)")
    p.set_defaults(func=cmd_eval)
    for name, (module, help_text) in EXTRA_COMMANDS.items():
        if importlib.util.find_spec(module) is None:
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        mod.add_arguments(p)
        show_defaults(p)
        p.set_defaults(func=mod.command)
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
    from .runs.allocator import tune_malloc
    tune_malloc()                          # reuse freed activation buffers (ASGE_MALLOC=default: off)
    args = parse_args(build_parser(), argv)
    from .runs.preempt import StopSignals
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
