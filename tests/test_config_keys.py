"""One source for each fact of the configuration: every TrainConfig field is a flag with its help next to the
field (or named, with a reason, as no flag), every list of names comes from the module that defines it, the
context options are checked where a config is validated, and the keys --resume compares are named lists."""
import argparse
import dataclasses

import pytest

from asge import options
from asge.cli import build_parser, main
from asge.config import (AMP_MODES, CUDA_GRAPHS_MODES, PROGRESS_MODES, TrainConfig, key_choices)

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
KEY_LISTS = {"network": TrainConfig.NETWORK_KEYS, "data": TrainConfig.DATA_KEYS,
             "training": TrainConfig.TRAINING_KEYS, "runtime": TrainConfig.RUNTIME_KEYS}


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    options.add_train_arguments(p)
    return p


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


# -- flags from fields ---------------------------------------------------------------------------------------
def test_every_field_is_a_flag_with_its_help_or_named_as_none():
    assert set(options.NOT_FLAGS) <= set(FIELDS) and all(options.NOT_FLAGS.values())   # each with its reason
    by_dest = {a.dest: a for a in train_parser()._actions}
    for f in dataclasses.fields(TrainConfig):
        if f.name in options.NOT_FLAGS:
            continue
        assert f.metadata.get("help"), f"TrainConfig.{f.name}: no help text in its field metadata"
        assert f.metadata["group"] in (None, "data", "model", "optimisation", "execution"), f.name
        dest = "context_option" if f.name == "context_options" else f.name
        assert dest in by_dest, f"TrainConfig.{f.name} has no flag"
        assert by_dest[dest].help.startswith(f.metadata["help"].replace("%", "%%")), f.name
    flags = {f.name for f, _, _ in options.train_flags()}
    assert flags == set(FIELDS) - set(options.NOT_FLAGS)
    assert set(options.CONFIG_FLAGS) == flags - {"channels", "context_options"}


def test_flags_keep_their_names_types_and_groups():
    p = train_parser()
    by_flag = {s: a for a in p._actions for s in a.option_strings}
    group_of = {a.dest: g.title for g in p._action_groups for a in g._group_actions}
    assert by_flag["--data-root"].metavar == "DIR" and group_of["data_root"] == "data"
    assert by_flag["--subset"].type is int and by_flag["--lr"].type is float and by_flag["--dataset"].type is None
    assert isinstance(by_flag["--download"], argparse._StoreTrueAction) and by_flag["--download"].default is None
    assert by_flag["--context-option"].dest == "context_option" and by_flag["--context-option"].metavar == "KEY=VALUE"
    assert by_flag["--channels"].type is options.parse_channels and "--downsample" not in by_flag
    assert by_flag["--projection"].choices == ("fixed", "learned")
    assert by_flag["--cuda-graphs"].metavar == "auto|on|off" and group_of["cuda_graphs"] == "execution"
    order = [a.dest for a in p._actions if a.option_strings][1:]        # after -h
    assert order[:3] == ["config", "recipe", "dataset"] and order[order.index("out") + 1] == "resume"
    assert [g.title for g in p._action_groups][2:] == ["data", "model", "optimisation", "execution"]


def test_a_list_field_without_a_parser_is_refused_when_the_flags_are_made(monkeypatch):
    special = dict(options.FLAG_SPECIAL)
    del special["context_blocks"]
    monkeypatch.setattr(options, "FLAG_SPECIAL", special)
    with pytest.raises(TypeError, match="context_blocks"):
        options.train_flags()


def test_flags_still_make_the_same_config(tmp_path):
    args = train_parser().parse_args(["--channels", "8,16v", "--context", "sge", "--context-option", "groups=4",
                                      "--context-blocks", "2", "--download", "--lr", "0.01", "--log-interval",
                                      "30s", "--recipe", "plus"])
    cfg = options.config_from_args(args)
    assert (cfg.channels, cfg.downsample, cfg.context_options, cfg.context_blocks) == ([8, 16], [False, True],
                                                                                       {"groups": 4}, [2])
    assert (cfg.download, cfg.lr, cfg.log_interval, cfg.head_lr, cfg.recipe) == (True, 0.01, "30s", 1e-2, "plus")


# -- lists of names ------------------------------------------------------------------------------------------
def test_choices_come_from_their_modules():
    from asge.data import DATASETS
    from asge.data.augment import AUGMENTATIONS
    from asge.layers import POOLS
    from asge.nn.goodness import PROJECTIONS
    from asge.nn.heads import STRATEGIES
    choices = key_choices()
    assert choices["dataset"] == list(DATASETS) and choices["pool"] == list(POOLS)
    assert choices["augment"] == ["auto", *AUGMENTATIONS] and choices["projection"] == list(PROJECTIONS)
    assert (choices["amp"], choices["progress"], choices["cuda_graphs"]) == (list(AMP_MODES), list(PROGRESS_MODES),
                                                                             list(CUDA_GRAPHS_MODES))
    by_flag = {s: a for a in train_parser()._actions for s in a.option_strings}
    assert by_flag["--amp"].metavar == "{" + ",".join(AMP_MODES) + "}"
    assert by_flag["--progress"].metavar == "{" + ",".join(PROGRESS_MODES) + "}"
    evaluate = {s: a for a in subparser("eval")._actions for s in a.option_strings}
    assert list(evaluate["--progress"].choices) == list(PROGRESS_MODES)
    assert list(evaluate["--strategy"].choices) == ["all", *STRATEGIES]


@pytest.mark.parametrize("key, value, message", [
    ("amp", "fp8", "unknown amp 'fp8'; valid: none, bf16, fp16"),
    ("progress", "dots", "unknown progress 'dots'; valid: auto, bar, lines, none"),
    ("augment", "mixup", "unknown augment 'mixup'; valid: auto, none, hflip, crop-flip, cifar"),
    ("cuda_graphs", "yes", "cuda_graphs: expected auto, on or off, got 'yes'"),
    ("method", "hebb", "unknown method 'hebb'; valid: asge, bp"),
    ("model", "vgg99", "unknown model 'vgg99'; valid: vgg8, vgg11, quick, digits, resnetN (N = 6n + 2), "
                       "torchvision:NAME, timm:NAME"),
])
def test_a_name_not_in_its_list_is_refused_in_one_line(key, value, message):
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({key: value})
    assert str(e.value) == message


def test_cuda_graphs_help_says_what_auto_does():
    by_flag = {s: a for a in train_parser()._actions for s in a.option_strings}
    text = by_flag["--cuda-graphs"].help
    assert "auto: the same as off" in text and "off: every step eager" in text and text.endswith("(default: auto)")


# -- context options: checked with the config ----------------------------------------------------------------
def test_context_options_are_checked_where_the_config_is_validated():
    with pytest.raises(ValueError, match="has no option 'extnt'.*it takes: .*extent"):
        TrainConfig.from_dict({"context": "ge", "context_options": {"extnt": 4}})
    with pytest.raises(ValueError, match="context 'none' takes no options"):
        TrainConfig(context_options={"groups": 8}).validate()
    TrainConfig.from_dict({"context": "sge", "context_options": {"groups": 8}})
    # a template (asge ablate's base) holds the options of every module of its grid: checked per setting
    template = TrainConfig.from_dict({"context_options": {"sge:groups": 8, "reduction": 4}}, template=True)
    assert template.context_options == {"sge:groups": 8, "reduction": 4}


def test_cli_refuses_a_bad_context_option_in_one_line(tmp_path, capsys):
    code = main(["train", "--context", "sge", "--context-option", "grups=4", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("asge train: error: context 'sge'") and "grups" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_ablate_base_takes_per_module_options(tmp_path):
    p = argparse.ArgumentParser()
    from asge.tools.ablate import add_arguments
    add_arguments(p)
    args = p.parse_args(["--context-option", "sge:groups=8", "--context-option", "reduction=4"])
    cfg = options.config_from_args(args, template=True)
    assert cfg.context == "none" and cfg.context_options == {"sge:groups": 8, "reduction": 4}


# -- what --resume compares ----------------------------------------------------------------------------------
def test_every_field_is_in_exactly_one_key_list():
    listed = [k for keys in KEY_LISTS.values() for k in keys]
    assert sorted(listed) == sorted(FIELDS), (set(listed) ^ set(FIELDS), [k for k in listed if listed.count(k) > 1])


def test_resume_compares_the_network_data_and_training_keys_only():
    cfg = TrainConfig()
    assert set(cfg.defining_values()) == set(FIELDS) - set(TrainConfig.RUNTIME_KEYS)
    assert not cfg.differences(dataclasses.replace(cfg, out="elsewhere", device="cpu", num_workers=0,
                                                   progress="none", pipeline=2, cuda_graphs="off",
                                                   checkpoint_every=5, log_interval="30s", download=True,
                                                   data_root="/data", tensorboard=True))
    for key, value in [("width", 0.5), ("dataset", "mnist"), ("lr", 0.1), ("seed", 1), ("epochs", 3),
                       ("amp", "bf16"), ("val_subset", 100), ("recipe", "plus")]:
        assert cfg.differences(dataclasses.replace(cfg, **{key: value})).startswith(f"{key} ({value!r} -> "), key
    assert "epochs" in TrainConfig.TRAINING_KEYS           # --resume --epochs N may extend (train/resume.py)
    assert "cuda_graphs" in TrainConfig.RUNTIME_KEYS       # a run may resume with or without graphs
