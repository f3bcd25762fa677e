"""The ``asge train`` options: a flag for every :class:`~asge.config.TrainConfig` field, derived from the fields
(their types, and the help texts of their metadata), the help completed with the choices and defaults read off
the config, the presets and the recipes, and the merge of defaults, recipe, config.yaml, ``--config`` YAML and
flags into one config. ``asge train``, ``asge ablate`` and ``asge bench``
share them.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
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


#: TrainConfig fields that are no flag of their own, and why.
NOT_FLAGS = {"downsample": "--channels sets it with channels: a v after a block's width pools after that block"}

#: Flags that are not the plain ``--<field name>`` reading the field's type (int, float, a bool as a switch,
#: else text): argparse keywords by field. A list or dict field needs one here (or a reason in NOT_FLAGS).
FLAG_SPECIAL = {
    "channels": dict(type=parse_channels),          # its value sets channels and downsample (config_from_args)
    "context_options": dict(flag="--context-option", type=parse_option, action="append"),
    "context_blocks": dict(type=parse_int_list),
    "projection": dict(choices=True),               # refused by argparse (did you mean ...?), not by validate
}


def train_flags() -> list[tuple[dataclasses.Field, str, dict]]:
    """(field, flag, argparse keywords) of every TrainConfig field that is a flag, in the fields' order: the
    keywords read off the field's type and metadata (help, metavar) and :data:`FLAG_SPECIAL`."""
    hints = typing.get_type_hints(TrainConfig)
    flags = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_FLAGS:
            continue
        special = dict(FLAG_SPECIAL.get(f.name, {}))
        flag = special.pop("flag", "--" + f.name.replace("_", "-"))
        kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
        kw: dict = {"help": f.metadata.get("help")}
        if kind is bool:
            kw.update(action="store_true", default=None)
        elif kind in (int, float):
            kw["type"] = kind
        elif kind in (list, dict) and "type" not in special:
            raise TypeError(f"TrainConfig.{f.name}: a {kind.__name__} field needs its parser in FLAG_SPECIAL "
                            "(asge/options.py), or a reason in NOT_FLAGS")
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        if special.pop("choices", False):
            kw["choices"] = tuple(key_choices()[f.name])
        kw.update(special)
        if not kw["help"]:
            raise TypeError(f"TrainConfig.{f.name} has no help text (its field metadata, asge/config.py)")
        flags.append((f, flag, kw))
    return flags


def add_config_flag(p, name: str, more_help: str = "", **overrides) -> argparse.Action:
    """The ``asge train`` flag of TrainConfig field ``name`` on another command's parser ``p`` (a parser or an
    argument group): its help, type and metavar, and for a key whose every value is a name (not ``model``,
    ``pool`` or ``context``, which also take networks and import paths) those names as its choices;
    ``more_help`` is added to the help, and ``overrides`` are argparse keywords, for a command that reads the
    flag otherwise (``asge bench``: another default, several values)."""
    by_name = {f.name: (f, flag, kw) for f, flag, kw in train_flags()}
    if name not in by_name:
        raise KeyError(f"TrainConfig has no flag for {name!r}")
    f, flag, kw = by_name[name]
    choices = key_choices()
    if name in choices:
        kw.setdefault("metavar", choices_metavar(name, choices))
        if name not in ("model", "pool", "context"):
            kw["choices"] = tuple(choices[name])
    kw["help"] += more_help
    default_text = f.metadata.get("default_text")
    if default_text is not None and "default" not in overrides:
        text = default_text() if callable(default_text) else default_text
        kw["help"] += f" (default: {text.replace('%', '%%')})"
    kw.update(overrides)
    return p.add_argument(flag, **kw)


def choices_metavar(key: str, choices: dict) -> str:
    """How ``--help`` shows a key's names: ``{rms,avg,max,soft}``, with what else it takes (your own module by
    import path, a network by name)."""
    text = "{" + ",".join(choices[key]) + "}"
    if key in ("pool", "context"):
        text += "|MODULE:NAME"
    if key == "model":
        text += "|resnetN|torchvision:NAME|timm:NAME"
    return text


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """A flag for every TrainConfig field (:func:`train_flags`), in the field's group; defaults are None so that
    YAML and presets fill the gaps."""
    p.add_argument("--config", help="YAML file of options (flags given here override it)")
    groups: dict = {None: p}
    for f, flag, kw in train_flags():
        group = f.metadata.get("group")
        if group not in groups:
            groups[group] = p.add_argument_group(group)
        groups[group].add_argument(flag, **kw)
        if f.name == "out":               # not a config key: what to do with the run in --out
            groups[group].add_argument("--resume", action="store_true",
                                       help="continue the run in --out from its last checkpoint (a finished run: "
                                            "says so and stops)")
    document_train_options(p)


def document_train_options(p: argparse.ArgumentParser) -> None:
    """Give every train flag its choices (``{rms,avg,max,soft}``) and its default, read off TrainConfig (a
    field's default, or the ``default_text`` of its metadata), the presets and the recipes (so that ``--help``
    cannot drift from what a run does)."""
    import re
    from .recipes import RECIPES
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    choices = key_choices()
    for action in p._actions:
        key = action.dest
        if key not in fields or action.help == argparse.SUPPRESS:
            continue
        if key in choices and action.metavar is None:
            action.metavar = choices_metavar(key, choices)
        if action.metavar is None and action.type is int:
            action.metavar = "N"
        if re.search(r"\bdefault\b", action.help or ""):    # says its default itself
            continue
        f = fields[key]
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default_text = f.metadata.get("default_text")
        if default_text is not None:
            text = default_text() if callable(default_text) else default_text
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


#: The fields whose flag gives their value as parsed (all but NOT_FLAGS, channels and context_options).
CONFIG_FLAGS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                     if f.name not in NOT_FLAGS and f.name not in ("channels", "context_options"))


def config_from_args(args: argparse.Namespace, *, template: bool = False) -> TrainConfig:
    """Defaults < the recipe's (``--recipe``, or the YAML's ``recipe``) < the run's own config.yaml (when
    resuming) < --config YAML < flags. ``template``: the config is a template of others
    (:meth:`TrainConfig.validate`: ``asge ablate``'s base)."""
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
    return TrainConfig.from_dict(base, template=template)
