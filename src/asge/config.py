"""One configuration object that travels from the CLI (or YAML, or Python) into the model and trainer."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

METHODS = ("asge", "bp")


def read_yaml_options(path: str | Path) -> dict:
    """The option: value mapping of a YAML config file (keys with ``_``), as written: nothing filled in."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


@dataclass
class TrainConfig:
    recipe: str = "paper"                 # paper | plus: defaults for the keys below (asge/recipes.py)
    # data
    dataset: str = "digits"
    data_root: Optional[str] = None
    download: bool = False
    subset: Optional[int] = None
    input_size: Optional[int] = None      # imagefolder / imagenet side; others use their native size
    num_workers: int = 2                  # DataLoader workers (imagefolder / imagenet only)
    # model
    model: str = "digits"
    width: float = 1.0
    channels: Optional[list] = None       # custom widths (overrides the preset's)
    downsample: Optional[list] = None     # custom pooling flags, one per block (bools or 0/1)
    alpha: float = 1.0
    pool: str = "rms"
    norm: str = "layer"
    goodness: str = "mean"
    context: str = "none"
    context_options: dict = field(default_factory=dict)
    context_blocks: Optional[list] = None  # 1-based blocks that get the context module (None = all)
    dropout: float = 0.1
    head_features: str = "gap"            # what the Fusion head reads of Y_l: gap | goodness | patch
    fusion_from: int = 2                  # first block (1-based) the Fusion head reads; the paper skips block 1
    # optimisation
    method: str = "asge"
    epochs: Optional[int] = None          # None: the preset's default
    batch_size: int = 128
    lr: Optional[float] = None            # None: the preset's default
    head_lr: Optional[float] = None       # None: the preset's head_lr, else lr
    weight_decay: float = 1e-3
    min_lr: float = 1e-5
    label_smoothing: float = 0.0
    seed: int = 0
    # execution
    device: str = "auto"
    amp: str = "none"                     # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    pipeline: int = 1                     # stages (processes) of a pipelined ASGE run; 1 = sequential
    out: Optional[str] = None
    tensorboard: bool = False
    progress: str = "auto"                # auto | bar | lines | none

    # Keys that may differ between a run and its resumption.
    RUNTIME_KEYS = ("out", "device", "num_workers", "tensorboard", "progress", "download", "data_root", "pipeline")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from the keys given; the keys not given come from ``d["recipe"]`` (asge/recipes.py),
        then from the dataclass defaults."""
        from .recipes import recipe_defaults
        d = {k.replace("-", "_"): v for k, v in d.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid: {', '.join(sorted(names))}")
        d = {**recipe_defaults(d.get("recipe", "paper")), **d}
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        data = read_yaml_options(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        from .data import DATASETS
        from .layers import CONTEXTS, NORMS, POOLS
        from .presets import PRESETS
        if self.dataset.lower().replace("_", "-") not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.model not in PRESETS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(PRESETS)}")
        POOLS.check(self.pool)
        NORMS.check(self.norm)
        CONTEXTS.check(self.context)
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"unknown amp {self.amp!r}; valid: none, bf16, fp16")
        if self.progress not in ("auto", "bar", "lines", "none"):
            raise ValueError(f"unknown progress {self.progress!r}; valid: auto, bar, lines, none")
        for name in ("batch_size",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pipeline < 1:
            raise ValueError(f"pipeline must be >= 1 (stages), got {self.pipeline}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be >= 1, got {self.subset}")
        from .heads import HEAD_FEATURES
        from .recipes import RECIPES
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; valid: {', '.join(RECIPES)}")
        if self.head_features not in HEAD_FEATURES:
            raise ValueError(f"unknown head_features {self.head_features!r}; valid: {', '.join(HEAD_FEATURES)}")
        if self.fusion_from < 1:
            raise ValueError(f"fusion_from must be a 1-based block number >= 1, got {self.fusion_from}")
        if (self.channels is None) != (self.downsample is None):
            raise ValueError("channels and downsample must be given together (one entry per block)")

    def resolved(self) -> "TrainConfig":
        """A copy with the preset's defaults filled in: epochs, lr, and head_lr (the preset's, else lr)."""
        from .presets import get_preset
        p = get_preset(self.model)
        lr = self.lr or p["lr"]
        head_lr = self.head_lr or p.get("head_lr") or lr
        return dataclasses.replace(self, epochs=self.epochs or p["epochs"], lr=lr, head_lr=head_lr)

    def architecture(self) -> dict:
        """Everything that shapes the network's state dict (compared when resuming or evaluating)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS}

    def differences(self, other: "TrainConfig") -> str:
        """``"key (other's value -> this value), ..."`` over the non-runtime keys; empty when they agree."""
        mine, theirs = self.architecture(), other.architecture()
        return ", ".join(f"{k} ({theirs.get(k)!r} -> {mine[k]!r})" for k in sorted(mine) if theirs.get(k) != mine[k])
