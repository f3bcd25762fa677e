"""One source for each fact of the configuration: every list of names comes from the module that defines it."""
import argparse
import pytest

from asge import options
from asge.cli import build_parser
from asge.config import AMP_MODES, CUDA_GRAPHS_MODES, PROGRESS_MODES, TrainConfig, key_choices



def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    options.add_train_arguments(p)
    return p


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


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
    assert by_flag["--projection"].choices == ("fixed", "learned")
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
    ("model", "vgg99", "unknown model 'vgg99'; valid: vgg8, vgg11, quick, digits"),
])
def test_a_name_not_in_its_list_is_refused_in_one_line(key, value, message):
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({key: value})
    assert str(e.value) == message
