"""One configuration object that travels from the CLI (or YAML, or Python) into the model and trainer."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

METHODS = ("asge", "bp")


def read_yaml_options(path: str | Path) -> dict:
    """The option: value mapping of a YAML config file (keys with ``_``), as written: nothing filled in."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {p} does not exist" if not p.exists() else f"config file {p} is not a file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        detail = " ".join(str(e).split())     # YAML's messages span lines
        raise ValueError(f"config file {p} is not valid YAML text: {detail}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


#: Smallest value of each integer count.
MIN_INT = {"subset": 1, "input_size": 1, "test_split": 1, "batch_size": 1, "epochs": 1, "pipeline": 1, "fusion_from": 1,
           "num_workers": 0, "checkpoint_every": 0, "seed": 0, "val_every": 1, "val_subset": 1}
MAX_SEED = 2 ** 32 - 1
#: Range of each real-valued key: (low, high, low allowed, high allowed).
REAL_RANGE = {"width": (0.0, math.inf, False, False), "alpha": (0.0, math.inf, False, False),
              "lr": (0.0, math.inf, False, False), "head_lr": (0.0, math.inf, False, False),
              "weight_decay": (0.0, math.inf, True, False), "min_lr": (0.0, math.inf, True, False),
              "dropout": (0.0, 1.0, True, False), "label_smoothing": (0.0, 1.0, True, False)}


def parse_log_interval(value) -> tuple[str, float]:
    """``log_interval`` -> ("auto", 0) for None or "auto", ("steps", N) for N or "N", ("seconds", S) for
    "Ss" (e.g. "30s"); anything else: one ValueError naming the key, the value and what is expected."""
    if value is None or value == "auto":
        return "auto", 0.0
    text = str(value).strip().lower() if not isinstance(value, bool) else ""
    try:
        if text.endswith("s") and float(text[:-1]) > 0 and math.isfinite(float(text[:-1])):
            return "seconds", float(text[:-1])
        if text and not text.endswith("s") and int(text) >= 1 and float(text) == int(text):
            return "steps", float(int(text))
    except ValueError:
        pass
    raise ValueError(f"log_interval: expected a number of steps >= 1 (e.g. 50) or of seconds (e.g. 30s), "
                     f"or auto, got {value!r}")


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    if high == math.inf:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_types_and_ranges(cfg: "TrainConfig") -> None:
    """Every key holds a value of its field's type and range; else one ValueError naming key, value and what
    is expected. Numbers written as strings are read as numbers for real-valued keys (YAML 1.1 reads
    ``1e-3`` as a string); booleans are never taken for numbers."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = f.name, getattr(cfg, f.name)
        hint = hints[key]
        optional = type(None) in typing.get_args(hint)
        kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
        if value is None and optional:
            continue
        if kind is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
            else:
                setattr(cfg, key, value)
        if kind is int:
            low = MIN_INT.get(key)
            what = "an integer" + (f" >= {low}" if low is not None else "")
            ok = isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)
            if key == "seed":
                what, ok = f"an integer in [0, {MAX_SEED}]", ok and value <= MAX_SEED
        elif kind is float:
            rng = REAL_RANGE.get(key, (-math.inf, math.inf, False, False))
            what = "a number" + (f" {_interval(*rng)}" if key in REAL_RANGE else "")
            low, high, low_in, high_in = rng
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (value > low or (low_in and value == low)) and (value < high or (high_in and value == high)))
        elif kind is bool:
            what, ok = "true or false", isinstance(value, bool)
        elif kind is str:
            what, ok = "a string", isinstance(value, str) and value != ""
        elif kind is list:
            what, ok = "a list", isinstance(value, (list, tuple))
        elif kind is dict:
            what, ok = "a mapping of option: value", isinstance(value, dict) and all(isinstance(k, str) for k in value)
        else:
            continue
        if not ok:
            raise ValueError(f"{key}: expected {what}, got {value!r}")
    _check_block_lists(cfg)


def _check_block_lists(cfg: "TrainConfig") -> None:
    """channels (ints >= 1), downsample (one flag per block) and context_blocks (1-based block numbers)."""
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if cfg.channels is not None and (not cfg.channels or not all(is_int(c) and c >= 1 for c in cfg.channels)):
        raise ValueError(f"channels: expected a list of integers >= 1 (one per block), got {cfg.channels!r}")
    if cfg.downsample is not None:
        if not all(isinstance(d, bool) or d in (0, 1) for d in cfg.downsample):
            raise ValueError(f"downsample: expected a list of true/false (one per block), got {cfg.downsample!r}")
        if cfg.channels is not None and len(cfg.downsample) != len(cfg.channels):
            raise ValueError(f"downsample: expected {len(cfg.channels)} entries (one per channel entry), "
                             f"got {cfg.downsample!r}")
    if cfg.context_blocks is not None and not all(is_int(b) and b >= 1 for b in cfg.context_blocks):
        raise ValueError(f"context_blocks: expected a list of 1-based block numbers (integers >= 1), "
                         f"got {cfg.context_blocks!r}")


#: The values of the keys whose names are defined by the config itself (the others come from the modules that
#: define them: :func:`key_choices`).
AMP_MODES = ("none", "bf16", "fp16")                  # the training step's precision
PROGRESS_MODES = ("auto", "bar", "lines", "none")     # how progress is shown (asge/runs/progress.py)
CUDA_GRAPHS_MODES = ("auto", "on", "off")             # whether the step is one CUDA graph (asge/train/graphs.py)
AUGMENT_AUTO = "auto"                                 # augment: the dataset's own augmentation


#: The keys of the VGG presets' blocks, refused for a network cut into modules of its own layers (a recipe's
#: values for them are left out there).
VGG_BLOCK_KEYS = ("channels", "downsample", "context", "context_options", "context_blocks", "pool", "norm")


def builds_vgg_blocks(model: Optional[str], channels: Optional[list]) -> bool:
    """Whether a config of this ``model`` and ``channels`` builds the VGG presets' blocks (a preset, the
    default preset, or ``--channels``), rather than a network cut into modules of its own layers."""
    from .nn.presets import PRESETS
    return channels is not None or model is None or model in PRESETS


def key_choices() -> dict[str, list[str]]:
    """The valid names of each key that takes one, each list read from the module that defines it (shown as
    ``{a,b,c}`` in ``--help``, checked by :meth:`TrainConfig.validate`); pools and contexts also take your own
    module by import path."""
    from .data import DATASETS
    from .data.augment import AUGMENTATIONS
    from .layers import CONTEXTS, NORMS, POOLS
    from .nn.goodness import GOODNESS_REDUCTIONS, PROJECTIONS
    from .nn.heads import HEAD_FEATURES
    from .nn.local_rules import LOCAL_RULES
    from .nn.presets import PRESETS
    from .recipes import RECIPES
    return {"recipe": list(RECIPES), "dataset": list(DATASETS), "model": list(PRESETS), "pool": list(POOLS),
            "local_loss": list(LOCAL_RULES),
            "norm": list(NORMS), "module_norm": list(NORMS), "goodness": list(GOODNESS_REDUCTIONS),
            "context": list(CONTEXTS),
            "head_features": list(HEAD_FEATURES), "method": list(METHODS), "amp": list(AMP_MODES),
            "progress": list(PROGRESS_MODES), "augment": [AUGMENT_AUTO, *AUGMENTATIONS],
            "projection": list(PROJECTIONS), "cuda_graphs": list(CUDA_GRAPHS_MODES)}


def _preset_values(key: str) -> str:
    from .nn.presets import PRESETS
    return ", ".join(f"{name} {p[key]:g}" for name, p in PRESETS.items() if key in p)


def _section(group: Optional[str]):
    """The field maker of one group of options (``data``, ``model``, ...; None: the command's own): each field
    carries its ``--help`` text, and where needed its metavar and the text of a default that is not the
    field's plain value (a callable: read when the help is made), as dataclass field metadata."""
    def option(default=None, help: str = "", *, factory=None, metavar: Optional[str] = None,
               default_text=None):
        metadata = {"group": group, "help": help, "metavar": metavar, "default_text": default_text}
        if factory is not None:
            return field(default_factory=factory, metadata=metadata)
        return field(default=default, metadata=metadata)
    return option


_top, _data, _model, _optimisation, _execution = (_section(g) for g in (None, "data", "model", "optimisation",
                                                                         "execution"))


@dataclass
class TrainConfig:
    """Every option of a training run. Each field is an ``asge train`` flag (``--data-root`` for
    ``data_root``; asge/options.py derives them, and names the fields that are not one), its ``--help`` text
    in the field's metadata. The tuples below sort the keys by what they define, for ``--resume``."""

    recipe: str = _top("paper", "paper (the paper's recipe), plus (the improved local recipe) or colour (plus with "
                                "learned goodness projections, no augmentation, batch 32: for short budgets; "
                                "docs/accuracy.md): sets defaults that --config and flags override (for a network "
                                "cut into modules, all but the VGG blocks' context and pool)")
    # data
    dataset: str = _data("digits", "dataset to train and test on")
    data_root: Optional[str] = _data(None, "where the dataset lives: used as given, or refused if the files are "
                                           "not there", metavar="DIR",
                                     default_text="./data, and for fashion-mnist also /usr/share/datasets/fashion-mnist")
    download: bool = _data(False, "download the dataset if missing")
    subset: Optional[int] = _data(None, "train on a random subset of N training images (from --seed)",
                                  default_text="all the training images")
    input_size: Optional[int] = _data(None, "image side for imagefolder/imagenet",  # others: their native size
                                      default_text="the dataset's: digits 8, imagenet 224, others 32")
    augment: str = _data(AUGMENT_AUTO, "training augmentation; auto: the dataset's own (CIFAR and ImageFolder trees of "
                                       "S x S images: cifar; Fashion-MNIST: hflip; digits, MNIST: none; larger images: "
                                       "RandomResizedCrop + flip); crop-flip: 4 px padded crop + flip")
    test_split: Optional[int] = _data(None, "imagefolder without test/: hold back N class-balanced images of train/ "
                                            "(seed 42) as the test split", metavar="N",
                                      default_text="none: the tree's own test/ (or val/) folder")
    skip_unreadable: bool = _data(False, "imagefolder/imagenet: leave unreadable image files out (every image is "
                                         "decoded once to find them), say how many, list them in the run "
                                         "directory's unreadable.txt")
    num_workers: int = _data(2, "data loader workers (imagefolder/imagenet)")
    # model
    model: Optional[str] = _model(None, "the network: a VGG preset (default: digits for images of up to 16 px, "
                                        "else quick), a CIFAR ResNet (resnet20, resnet32, resnet56, resnet110), "
                                        "torchvision:NAME or timm:NAME (cut at its blocks into --split modules)")
    split: Optional[str] = _model(None, "the modules the network is cut into, each learning alone: K (contiguous, "
                                        "cut at block boundaries, balanced by forward FLOPs), the unit indices "
                                        "where a module starts (e.g. 3,7,12), or InfoPro's stage.block ends "
                                        "(e.g. 1.2,2.1; CIFAR ResNets)", metavar="K|CUTS",
                                  default_text="one module per block for the VGG presets, 4 for other networks")
    local_loss: str = _model("asge", "each module's local rule: asge (the paper's spatial goodness), cwc "
                                     "(channel-wise competitive Forward-Forward: channels a multiple of the "
                                     "classes), dgl (DGL's auxiliary net), predsim (Nokland & Eidnes' "
                                     "prediction + similarity)")
    width: float = _model(1.0, "width multiplier for the preset's channels")
    channels: Optional[list] = _model(None, "custom blocks, e.g. 64,128v,128,256v (v = pool after)",
                                      default_text="the preset's, scaled by --width")   # overrides the preset's
    downsample: Optional[list] = _model(None)   # pooling flags, one per block (bools or 0/1): --channels' v
    alpha: float = _model(1.0, "partition granularity (P_l = floor(alpha*C_L/C_l))")
    pool: str = _model("rms", "2x2 pooling after a v block; or your own by import path, pkg.module:Name")
    norm: str = _model("layer", "block entry norm")
    goodness: str = _model("mean", "patch energy: mean or sum of Y^2 over each patch")
    context: str = _model("none", "context module after each block's ReLU; or your own by import path, "
                                  "pkg.module:Name")
    context_options: dict = _model(factory=dict, help="option for the context module (repeatable), e.g. "
                                                      "groups=32, extent=4", metavar="KEY=VALUE")
    context_blocks: Optional[list] = _model(None, "1-based blocks that get the context module, e.g. 2,3,4 "
                                                  "(default: all)")
    dropout: float = _model(0.1, "dropout probability after each block's pooling")
    head_features: str = _model("gap", "what the Fusion head reads of each block: gap, goodness (GAP + patch "
                                       "energies), patch (GAP + patch means)")
    fusion_from: int = _model(2, "first block (1-based) the Fusion head reads", metavar="L")  # the paper skips 1
    module_norm: str = _model("none", "a norm at the entry of modules 2..K of a network cut into modules (resnetN, "
                                      "torchvision:NAME, timm:NAME), trained by its module's own loss, as the "
                                      "paper's blocks have (none: the network as given)")
    projection: str = _model("fixed", "each block's goodness projection: fixed (the paper's fixed random map) or "
                                      "learned (the same initial map, trained by the block's own loss: leaves "
                                      "the paper's method)")
    # optimisation
    method: str = _optimisation("asge", "asge, or bp (the backprop baseline on the same blocks)")
    epochs: Optional[int] = _optimisation(None, "training epochs", metavar="N",
                                          default_text=lambda: f"the preset's: {_preset_values('epochs')}")
    batch_size: int = _optimisation(128, "training images per step", metavar="N")
    lr: Optional[float] = _optimisation(None, "peak learning rate of the blocks",
                                        default_text=lambda: f"the preset's: {_preset_values('lr')}")
    head_lr: Optional[float] = _optimisation(None, "learning rate of the Fusion/Last heads",
                                             default_text=lambda: f"the preset's head lr "
                                                                  f"({_preset_values('head_lr')}), else --lr (the VGGs)")
    weight_decay: float = _optimisation(1e-3, "AdamW weight decay (blocks and heads)")
    min_lr: float = _optimisation(1e-5, "learning rate at the end of the cosine schedule")
    label_smoothing: float = _optimisation(0.0, "label smoothing of every cross-entropy")
    seed: int = _optimisation(0, "draws the init, the projections, data order, dropout and --subset")
    # execution
    device: str = _execution("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps")
    amp: str = _execution("none", "mixed precision")
    channels_last: bool = _execution(False, "channels_last memory format")
    compile: bool = _execution(False, "torch.compile each block")
    pipeline: int = _execution(1, "run the blocks as K pipelined stages, one process each (ASGE; same result as "
                                  "K=1)", metavar="K", default_text="1: one process")
    cuda_graphs: str = _execution("auto", "capture the whole training step as one CUDA graph and replay it. on: "
                                          "captured on CUDA (a run with fp16, --compile, --pipeline or torchrun "
                                          "stays eager and says why; on another device: an error); off: every "
                                          "step eager; auto: the same as off, for now",
                                  metavar="|".join(CUDA_GRAPHS_MODES))
    out: Optional[str] = _execution(None, "run directory (default: runs/<dataset>-<model>-<method>-<time>)",
                                    metavar="DIR")
    tensorboard: bool = _execution(False, "write TensorBoard events to the run")
    progress: str = _execution("auto", "auto: a bar on a terminal, lines otherwise")
    checkpoint_every: int = _execution(0, "also write a resumable checkpoint every N steps within an epoch (long "
                                          "epochs); SIGTERM / SIGINT always write one at the step they stop",
                                       metavar="N", default_text="0: at epoch ends only")
    log_interval: Optional[object] = _execution(None, "a progress line every N steps, or every N seconds with an s "
                                                      "suffix (e.g. 30s); default auto: on a terminal a bar, "
                                                      "otherwise a line when both 30 s and a quarter of the epoch "
                                                      "have passed", metavar="N|Ns")
    val_every: int = _execution(1, "validate every N epochs, and always after the last (checkpoint selection uses "
                                   "the validated epochs)", metavar="N")
    val_subset: Optional[int] = _execution(None, "validate on a fixed subset of N validation images (seed 42, the "
                                                 "same for every run); the final test always uses the whole test "
                                                 "split", metavar="N", default_text="the whole validation split")
    init_from: Optional[str] = _execution(None, "start from another run's model weights (its best checkpoint; "
                                                "RUN/checkpoints/X.pt for another), with a new optimizer and "
                                                "schedule", metavar="RUN")

    # What each key defines, for ``--resume`` (nanoGPT's resume check): a run continues only with the values it
    # was started with for every key of NETWORK_KEYS, DATA_KEYS and TRAINING_KEYS (``--resume --epochs N``
    # may still extend it: asge/train/resume.py's ``extends``); RUNTIME_KEYS may differ. Every field is in
    # exactly one of them (tests/test_config_keys.py).
    #: The network: its blocks, their local read-out and the heads (what the state dict holds and how it is used).
    NETWORK_KEYS = ("model", "split", "local_loss", "width", "channels", "downsample", "alpha", "pool", "norm",
                    "goodness", "context", "context_options", "context_blocks", "dropout", "head_features",
                    "fusion_from", "projection", "module_norm")
    #: The images: which dataset, which of its images, at what size, how they are augmented.
    DATA_KEYS = ("dataset", "subset", "input_size", "augment", "test_split", "skip_unreadable")
    #: How the network is trained and its checkpoint chosen: the recipe, the method, the optimizer and its
    #: schedule, the seed, the arithmetic of a step (amp, channels_last, compile), validation, the starting weights.
    TRAINING_KEYS = ("recipe", "method", "epochs", "batch_size", "lr", "head_lr", "weight_decay", "min_lr",
                     "label_smoothing", "seed", "amp", "channels_last", "compile", "val_every", "val_subset",
                     "init_from")
    #: Where and how the run executes and reports: may differ between a run and its resumption.
    RUNTIME_KEYS = ("out", "device", "num_workers", "tensorboard", "progress", "download", "data_root", "pipeline",
                    "cuda_graphs", "checkpoint_every", "log_interval")

    @classmethod
    def from_dict(cls, d: dict, *, template: bool = False) -> "TrainConfig":
        """A config from the keys given; the keys not given come from ``d["recipe"]`` (asge/recipes.py; for a
        network that is not a VGG preset, its keys but those of the VGG blocks, :data:`VGG_BLOCK_KEYS`), then
        from the dataclass defaults. ``template``: see :meth:`validate`."""
        from .recipes import recipe_defaults
        d = {str(k).replace("-", "_"): v for k, v in d.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid: {', '.join(sorted(names))}")
        recipe = d.get("recipe", "paper")
        if not isinstance(recipe, str):
            raise ValueError(f"recipe: expected a string, got {recipe!r}")
        defaults = recipe_defaults(recipe)
        if not builds_vgg_blocks(d.get("model"), d.get("channels")):          # a cut network's own layers
            defaults = {k: v for k, v in defaults.items() if k not in VGG_BLOCK_KEYS}
        d = {**defaults, **d}
        cfg = cls(**d)
        cfg.validate(template=template)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        data = read_yaml_options(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, *, template: bool = False) -> None:
        """Raise ValueError, one line naming the key, the value and what is expected, on any bad value: every
        key's type and range, every name (:func:`key_choices`), and the context options (keys the context
        module takes: :func:`~asge.layers.context.check_context_options`, before any data is read).

        ``template``: the config is the template of others (``asge ablate``'s base, whose ``context_options``
        hold the options of every module of its grid, ``sge:groups=8``): its context options are left to be
        checked in each config made from it."""
        check_types_and_ranges(self)
        from .layers import CONTEXTS, NORMS, POOLS
        choices = key_choices()
        if self.dataset.lower().replace("_", "-") not in choices["dataset"]:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(choices['dataset'])}")
        _check_choice("method", self.method, choices)
        if self.model is not None and self.model not in choices["model"]:
            from .nn.local_network import check_model_name
            check_model_name(self.model)
            self._check_chain_options()
        if self.split is not None:
            from .nn.local_network import parse_split
            parse_split(self.split)
        _check_choice("local_loss", self.local_loss, choices)
        POOLS.check(self.pool)
        NORMS.check(self.norm)
        NORMS.check(self.module_norm)
        vgg = builds_vgg_blocks(self.model, self.channels)
        if self.module_norm != "none" and vgg:
            raise ValueError("--module-norm applies to networks cut into modules (resnetN, torchvision:NAME, "
                             "timm:NAME); the VGG presets' blocks have their entry norm (--norm)")
        vgg_units = vgg and (self.split is not None or self.local_loss != "asge")   # the blocks grouped into modules
        if vgg_units and self.pipeline > 1 and self.dropout > 0 and self.method == "asge":
            raise ValueError("--pipeline with the VGG blocks grouped into modules (--split, --local-loss) needs "
                             "--dropout 0: inside a module the blocks draw their dropout from each process's "
                             "own random state, so the stages would not train as one process does")
        CONTEXTS.check(self.context)
        for key in ("augment", "projection", "amp", "progress"):
            _check_choice(key, getattr(self, key), choices)
        if self.cuda_graphs not in choices["cuda_graphs"]:
            *first, last = choices["cuda_graphs"]
            raise ValueError(f"cuda_graphs: expected {', '.join(first)} or {last}, got {self.cuda_graphs!r}")
        parse_log_interval(self.log_interval)
        from .recipes import recipe_defaults
        recipe_defaults(self.recipe)                 # an unknown recipe: one line listing the valid ones
        _check_choice("head_features", self.head_features, choices)
        if (self.channels is None) != (self.downsample is None):
            raise ValueError("channels and downsample must be given together (one entry per block)")
        if not template:
            from .layers.context import check_context_options
            check_context_options(self.context, self.context_options)

    def _check_chain_options(self) -> None:
        """A network that is not a VGG preset has its own layers: the VGG blocks' options
        (:data:`VGG_BLOCK_KEYS`) are refused."""
        defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                    for f in dataclasses.fields(self)}
        given = ["--context-option" if key == "context_options" else "--" + key.replace("_", "-")
                 for key in VGG_BLOCK_KEYS if key != "downsample" and getattr(self, key) != defaults[key]]
        if given:
            raise ValueError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the VGG presets' "
                             f"blocks; {self.model} is cut into modules of its own layers (--split, --local-loss)")

    def image_size(self) -> int:
        """The side S of the images the run reads: ``input_size``, else the dataset's own."""
        from .data import native_size
        return int(self.input_size or native_size(self.dataset))

    def resolved(self) -> "TrainConfig":
        """A copy with the defaults filled in: the model (:func:`~asge.nn.presets.default_preset` for the image
        size), epochs, lr, and head_lr (the preset's, else lr; a network that is not a preset takes the
        defaults of the preset for its image size)."""
        from .nn.presets import default_preset, get_preset
        from .nn.presets import PRESETS
        model = self.model or default_preset(self.image_size())
        p = get_preset(model if model in PRESETS else default_preset(self.image_size()))
        lr = self.lr or p["lr"]
        head_lr = self.head_lr or p.get("head_lr") or lr
        return dataclasses.replace(self, model=model, epochs=self.epochs or p["epochs"], lr=lr, head_lr=head_lr)

    def defining_values(self) -> dict:
        """The values of every key a resumed run must keep: NETWORK_KEYS, DATA_KEYS and TRAINING_KEYS (compared
        on ``--resume``, and when ``asge ablate`` reuses a finished setting)."""
        values = self.to_dict()
        return {k: values[k] for k in self.NETWORK_KEYS + self.DATA_KEYS + self.TRAINING_KEYS}

    def differences(self, other: "TrainConfig") -> str:
        """``"key (other's value -> this value), ..."`` over the keys of :meth:`defining_values` (every key but
        the RUNTIME_KEYS); empty when they agree."""
        mine, theirs = self.defining_values(), other.defining_values()
        return ", ".join(f"{k} ({theirs.get(k)!r} -> {mine[k]!r})" for k in sorted(mine) if theirs.get(k) != mine[k])


def _check_choice(key: str, value, choices: dict) -> None:
    if value not in choices[key]:
        raise ValueError(f"unknown {key} {value!r}; valid: {', '.join(choices[key])}")
