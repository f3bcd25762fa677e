"""``asge export RUN --format torchscript|onnx|safetensors``: a trained network for runtimes without asge.

* ``torchscript`` (``.pt``) and ``onnx`` (``.onnx``): a self-contained inference graph, :class:`InferenceGraph`,
  float32 images ``(B, C, S, S)`` -> class scores ``(B, N)`` (logits; softmax gives probabilities), any B.
  For ``best`` it holds only blocks 1..l* and that block's fixed projection. The graph divides each image by
  its RMS itself, so it takes pixels scaled to [0, 1] (after the run's resize) as well as ``net.preprocess``'s
  output (RMS normalising twice changes nothing).
* ``safetensors``: every weight and buffer of the network, plus a JSON header (``asge`` metadata key): the
  config, the data (classes, image size), the preprocessing, the test accuracies. ``asge.load`` reads it back
  bit-exactly; nothing in it is executable.

Beside the file, ``FILE.md``: a model card (what the model is, how it was trained, its test accuracy per
strategy, its input and output, how to load it). A file or card that exists already is replaced only with
``--force``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..version import __version__
from ..data import rms_normalize
from ..errors import AsgeError
from .inference import SAFETENSORS_FORMAT, check_run_strategy, check_strategy_available, load
from ..nn.model import ASGENet
from ..runs.directory import refuse_overwrite

FORMATS = {"torchscript": ".pt", "onnx": ".onnx", "safetensors": ".safetensors"}


class InferenceGraph(nn.Module):
    """The part of ``net`` that ``strategy`` runs: images (B, C, S, S) float -> scores (B, N).

    ``best``: blocks 1..l* and block l*'s local scores; ``fusion``/``last``: every block and the heads.
    """

    def __init__(self, net: ASGENet, strategy: str):
        super().__init__()
        self.strategy = strategy
        if strategy == "best":
            l_star = int(net.best_block)
            if l_star < 1:
                raise AsgeError("the run has no best block l* (it did not finish); export --strategy fusion or last")
            self.blocks = nn.ModuleList(net.blocks[:l_star])
        else:
            self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rms_normalize(x.clone())
        if self.strategy != "best":
            return self.net.predict(x, self.strategy)
        for block in self.blocks:
            y, x = block(x)
        return self.blocks[-1].local_logits(y)


def example_batch(net: ASGENet, batch: int = 2) -> torch.Tensor:
    """A random (batch, C, S, S) float batch in [0, 1] (tracing and checking the exported graphs)."""
    c, s = net.blocks[0].in_channels, net.image_size
    return torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(0))


def _quiet(fn):
    """Run ``fn()`` without the tracer's and the deprecated exporters' warnings (they do not apply here: the
    graph has no data-dependent control flow, and the batch size is left free)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def export_torchscript(graph: InferenceGraph, path: Path, example: torch.Tensor) -> None:
    traced = _quiet(lambda: torch.jit.trace(graph, example, check_trace=False))   # checked by max_difference
    _quiet(lambda: torch.jit.save(traced, str(path)))


def export_onnx(graph: InferenceGraph, path: Path, example: torch.Tensor) -> None:
    """The TorchScript-based exporter (``dynamo=False``): works offline, no onnxscript needed."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise AsgeError("ONNX export needs the onnx package: pip install 'asge[export]'") from None
    _quiet(lambda: torch.onnx.export(graph, (example,), str(path), dynamo=False, input_names=["images"],
                                     output_names=["scores"], opset_version=17,
                                     dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}}))


def header(net: ASGENet, strategy: str) -> dict:
    """What the safetensors header and the model card say about ``net`` (loaded by :func:`asge.load`)."""
    info, summary = net.data_info, net.summary
    keep = ("method", "epochs", "best_epoch", "test_accuracy", "val_accuracy", "block_test_accuracy",
            "best_block", "best_compute_fraction", "parameters", "train_seconds", "device", "torch")
    return {"config": net.config.to_dict(), "strategy": strategy,
            "data": {**info.to_dict(), "classes": list(net.classes)},
            "preprocessing": net.preprocessing.to_dict(),
            "summary": {k: summary[k] for k in keep if k in summary}, "asge_version": __version__}


def export_safetensors(net: ASGENet, path: Path, strategy: str) -> None:
    from safetensors.torch import save
    from ..runs.directory import atomic_write
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    data = save(state, metadata={"format": SAFETENSORS_FORMAT, "asge": json.dumps(header(net, strategy))})
    atomic_write(path, lambda f: f.write(data), AsgeError)   # safetensors' save_file creates 0600 files


@torch.no_grad()
def max_difference(net: ASGENet, path: Path, fmt: str, strategy: str, example: torch.Tensor) -> Optional[float]:
    """Largest |score difference| between the exported file and ``net.predict`` on ``example`` (None when
    the runtime to check it, onnxruntime, is not installed)."""
    want = net.predict(rms_normalize(example.clone()), strategy)
    if fmt == "torchscript":
        got = _quiet(lambda: torch.jit.load(str(path)))(example)
    elif fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        got = torch.from_numpy(ort.InferenceSession(str(path)).run(None, {"images": example.numpy()})[0])
    else:
        from safetensors.torch import load_file
        state = load_file(str(path))
        return max(float((state[k].float() - v.float()).abs().max()) if v.numel() else 0.0
                   for k, v in net.state_dict().items())
    return float((got - want).abs().max())


def check_output_file(path: Path) -> None:
    """Refuse, in one line and before any work, an output file that cannot be written where it is asked."""
    from ..runs.directory import file_in_the_way
    path = Path(path)
    if path.is_dir():
        raise AsgeError(f"--out {path} is a directory: give the name of the file to write in it")
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise AsgeError(f"cannot write {path}: {blocker} is a file, not a directory")


def card_path(path: Path) -> Path:
    """Where the model card of the exported file ``path`` goes: ``<file>.md`` beside it."""
    return path.with_name(path.name + ".md")


def export_model(net: ASGENet, path, fmt: str, strategy: str) -> dict:
    """Write ``net`` (from :func:`asge.load`) to ``path`` as ``fmt`` for ``strategy``, and the model card
    ``path.md``. The network is moved to the CPU. Returns {"file", "card", "max_difference"}."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    strategy = check_run_strategy(net.config.method, strategy)
    net = net.cpu().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example_batch(net)
    if fmt == "safetensors":
        export_safetensors(net, path, strategy)
    else:
        graph = InferenceGraph(net, strategy).eval()
        (export_torchscript if fmt == "torchscript" else export_onnx)(graph, path, example)
    diff = max_difference(net, path, fmt, strategy, example)
    card = card_path(path)
    card.write_text(model_card(net, path, fmt, strategy, diff))
    return {"file": str(path), "card": str(card), "max_difference": diff}


# -- model card --------------------------------------------------------------------------------------------
_LOAD = {
    "torchscript": "```python\nimport torch\nmodel = torch.jit.load(\"{name}\")\nscores = model(images)          "
                   "# images: float32 {shape}\n```",
    "onnx": "```python\nimport onnxruntime as ort\nsession = ort.InferenceSession(\"{name}\")\n"
            "scores = session.run(None, {{\"images\": images}})[0]   # images: numpy float32 {shape}\n```",
    "safetensors": "```python\nimport asge\nnet = asge.load(\"{name}\")\nscores = net.predict(net.preprocess"
                   "([\"image.png\"]), strategy=\"{strategy}\")\n```\n\nor `asge predict {name} image.png`. "
                   "The weights alone: `safetensors.torch.load_file(\"{name}\")`; the metadata: the JSON under "
                   "the `asge` key of the file's header.",
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_card(net: ASGENet, path: Path, fmt: str, strategy: str, diff: Optional[float]) -> str:
    cfg, s, info = net.config, net.summary, net.data_info
    method = "ASGE (local learning: no gradient crosses a block boundary)" if cfg.method == "asge" else \
        "end-to-end backpropagation (baseline)"
    arch = f"{len(net.blocks)} VGG-style blocks, channels {net.channels}"
    ctx = "" if cfg.context == "none" else f", context module `{cfg.context}`"
    pre = net.preprocessing
    shape = f"(B, {pre.in_channels}, {pre.image_size}, {pre.image_size})"
    part = {"best": f"blocks 1..{int(net.best_block)} (l*, chosen on validation) and block {int(net.best_block)}'s "
                    "local scores: early exit",
            "fusion": "every block and the Fusion head (sum of linear heads on blocks' features)",
            "last": "every block and the Last head (linear on the last block's features)"}[strategy]
    lines = [f"# {info.name} classifier, {strategy} strategy ({fmt})", "",
             f"A convolutional network ({arch}{ctx}, pool `{cfg.pool}`, norm `{cfg.norm}`; "
             f"{sum(p.numel() for p in net.parameters()):,} parameters) trained by {method} with asge "
             f"{__version__}. Classes ({info.num_classes}): {', '.join(net.classes)}.", "",
             "## Training", "",
             f"Dataset `{cfg.dataset}`{f' (subset of {cfg.subset} images)' if cfg.subset else ''}, "
             f"{s.get('epochs', cfg.epochs)} epochs, batch {cfg.batch_size}, lr {cfg.lr} (heads {cfg.head_lr}), "
             f"seed {cfg.seed}; the checkpoint of the best validation epoch ({s.get('best_epoch', '?')}) is the "
             "one exported. Full configuration: the `config` entry of the safetensors header, or the run's "
             "config.yaml.", "", "## Test accuracy", ""]
    acc = s.get("test_accuracy") or {}
    if acc:
        lines += ["| strategy | test accuracy |", "| --- | ---: |"]
        lines += [f"| {k}{' (this file)' if k == strategy else ''} | {v:.2f}% |" for k, v in acc.items()]
        if s.get("block_test_accuracy"):
            lines += ["", "Per block: " + ", ".join(f"{i + 1}: {a:.2f}%" for i, a in
                                                    enumerate(s["block_test_accuracy"])) + "."]
    else:
        lines += ["Not recorded (the run did not finish)."]
    lines += ["", "## Input and output", "",
              f"This file computes {part}." if fmt != "safetensors" else
              f"This file holds every weight; `asge.load` rebuilds the network (default strategy `{strategy}`).",
              "", f"Input `images`: float32 {shape}, any batch size B. Preprocessing: {pre.describe()} "
              + ("The graph divides by the RMS itself: pixels in [0, 1] after the resize are enough."
                 if fmt != "safetensors" else ""),
              "", f"Output `scores`: float32 (B, {info.num_classes}), class scores (logits): softmax gives "
              "probabilities, index i is class i of the list above.", "",
              "## How to load", "", _LOAD[fmt].format(name=path.name, shape=shape, strategy=strategy), "",
              "## File", "", f"`{path.name}`, {path.stat().st_size:,} bytes, sha256 `{_sha256(path)}`. "
              f"Exported {time.strftime('%Y-%m-%d %H:%M %Z')} with torch {torch.__version__}."]
    if diff is not None:
        lines.append(f"Checked at export: largest |score difference| to the PyTorch model on a random batch "
                     f"{diff:.2e}." if fmt != "safetensors" else
                     f"Checked at export: weights read back with largest difference {diff:g}.")
    return "\n".join(lines) + "\n"


# -- command line ------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory (or a .safetensors file from asge export)")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="torchscript, onnx or safetensors")
    p.add_argument("--strategy", help="best (default for ASGE runs: blocks 1..l* only), fusion, or last "
                                      "(the only one of a backprop run)")
    p.add_argument("--out", help="file to write (default RUN/export/model-<strategy><.pt|.onnx|.safetensors>); "
                                 "the model card goes beside it as <file>.md")
    p.add_argument("--force", action="store_true",
                   help="replace the file and its model card if they exist (without it, an existing export is "
                        "never overwritten: choose another --out)")


def command(args: argparse.Namespace) -> int:
    net = load(args.run)
    if net.load_note:
        print(f"asge export: note: {net.load_note}", file=sys.stderr, flush=True)
    strategy = check_strategy_available(net, check_run_strategy(net.config.method, args.strategy))
    base = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else base / "export" / f"model-{strategy}{FORMATS[args.format]}"
    check_output_file(out)
    refuse_overwrite(out.parent, "an export", [p for p in (out, card_path(out)) if p.exists()], args.force)
    result = export_model(net, out, args.format, strategy)
    print(f"wrote {result['file']} ({args.format}, strategy {strategy}) and its model card {result['card']}")
    diff = result["max_difference"]
    if args.format == "safetensors":
        print(f"checked: weights read back {'bit-exactly' if diff == 0 else f'with largest difference {diff:g}'}")
    elif diff is not None:
        print(f"checked: largest |score difference| to the PyTorch model on a random batch {diff:.2e}")
    return 0


__all__ = ["InferenceGraph", "export_model", "model_card", "header", "FORMATS", "add_arguments", "command"]
