"""The 95% Wilson score interval of a test accuracy (asge.runs.stats), and where ``asge train`` shows it."""
from __future__ import annotations

import json
import math

import pytest

from asge.cli import main
from asge.runs.stats import Z95, accuracy_interval, interval_text, count_test_images, wilson_interval


def score_test_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson interval by its definition, without its closed form: the p in [0, 1] that the score test
    does not reject, (k/n - p)^2 <= z^2 p (1 - p) / n, found by bisection on each side of k/n."""
    p_hat = k / n

    def rejected(p: float) -> bool:
        return (p_hat - p) ** 2 > z * z * p * (1 - p) / n

    def edge(inside: float, outside: float) -> float:
        if not rejected(outside):
            return outside
        for _ in range(200):
            mid = (inside + outside) / 2
            inside, outside = (inside, mid) if rejected(mid) else (mid, outside)
        return (inside + outside) / 2

    return edge(p_hat, 0.0), edge(p_hat, 1.0)


def test_z_is_the_normal_975_quantile():
    assert 0.5 * math.erfc(-Z95 / math.sqrt(2)) == pytest.approx(0.975, abs=1e-12)


def test_closed_forms_worked_by_hand():
    # 5 of 10: centre 1/2, half width z/(1 + z^2/10) sqrt(1/40 + z^2/400) = 0.2634...
    z2 = Z95 ** 2
    half = Z95 / (1 + z2 / 10) * math.sqrt(0.025 + z2 / 400)
    assert wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)      # the textbook value
    # 0 of n: [0, z^2 / (n + z^2)]; n of n: its mirror image
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-12)
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0), abs=1e-12)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (1, 3), (37, 40), (81, 263), (540, 540), (9123, 10000)])
def test_wilson_interval_is_the_set_the_score_test_does_not_reject(k, n):
    assert wilson_interval(k, n) == pytest.approx(score_test_interval(k, n), abs=1e-9)


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (0, 0)])
def test_impossible_counts_are_refused(k, n):
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(k, n)


def test_accuracy_interval_in_percent_only_when_the_count_fits():
    low, high = score_test_interval(81, 263)
    assert accuracy_interval(100 * 81 / 263, 263) == pytest.approx((100 * low, 100 * high), abs=1e-7)
    assert accuracy_interval(100 * 81 / 263, None) is None            # number of images unknown
    assert accuracy_interval(100 * 81 / 263, 264) is None             # not k/264 for any k: a wrong n
    assert accuracy_interval(float("nan"), 263) is None
    assert interval_text((96.421, 98.639)) == "96.42–98.64"
    assert interval_text((96.421, 98.639), 1, dash="-") == "96.4-98.6" and interval_text(None) == ""


def test_count_test_images_from_the_confusion_matrix_or_the_split_sizes():
    assert count_test_images({"test_confusion": {"fusion": [[3, 1], [2, 4]]}}) == 10
    assert count_test_images({"provenance": {"data": {"images": {"train": 90, "val": 10, "test": 25}}}}) == 25
    assert count_test_images({"test_accuracy": {"fusion": 90.0}, "data": {"classes": ["a", "b"]}}) is None


def test_train_summary_table_shows_each_interval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--channels", "8,16v", "--subset", "300", "--batch-size", "64", "--epochs", "1",
                 "--progress", "none", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("  ")[1].strip(): line for line in text.splitlines() if line.startswith("  ")}
    s = json.loads((out / "summary.json").read_text())
    matrix = s["test_confusion"]["fusion"]
    n = sum(map(sum, matrix))

    def expected(acc: float, digits: int) -> str:
        low, high = score_test_interval(round(acc * n / 100), n)
        return f"({100 * low:.{digits}f}-{100 * high:.{digits}f})"

    for k, acc in s["test_accuracy"].items():
        assert f"{k} {acc:.2f}% {expected(acc, 2)}" in rows["strategies"]
    for i, acc in enumerate(s["block_test_accuracy"]):
        assert f"{i + 1}: {acc:.1f}% {expected(acc, 1)}" in rows["per block"]
    fusion = expected(s["test_accuracy"]["fusion"], 2)[1:-1]
    assert f"; 95% interval {fusion}% over {n:,} test images" in rows["headline"]
    # a summary that does not say how many images were tested: no interval, rather than a wrong one
    from asge.cli import summary_rows
    s.pop("test_confusion")
    bare = dict(summary_rows(s))
    assert "(" not in bare["strategies"] and "interval" not in bare["headline"]
