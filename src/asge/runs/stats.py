"""Uncertainty of a test accuracy: the 95% Wilson score interval, and the number of test images a run's
summary.json says its accuracies were measured on.

A test accuracy is a proportion k/n of n test images. The Wilson score interval is the set of true
accuracies p that a two-sided score test at level 5% does not reject, |k/n - p| <= z sqrt(p (1 - p) / n),
with z the 97.5% normal quantile; solving that quadratic in p gives the closed form of
:func:`wilson_interval`. Unlike the normal approximation k/n +- z sqrt(k/n (1 - k/n) / n), it stays inside
[0, 1] and does not shrink to a point at 0% or 100%.

The ``asge train`` summary table (:func:`asge.cli.summary_rows`) and the report tables
(:mod:`asge.tools.report_html`) show it; a summary that does not say how many images were tested shows none.
"""
from __future__ import annotations

import math
from typing import Optional

#: The 97.5% quantile of the standard normal distribution: z of a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (low, high) of the proportion ``successes / n``, both in [0, 1].

    centre = (p + z^2 / 2n) / (1 + z^2 / n), half width = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2),
    with p = successes / n. ValueError for n < 1 or successes outside 0..n.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy, n: Optional[int]) -> Optional[tuple[float, float]]:
    """The 95% Wilson interval (low, high), in percent, of a test accuracy given in percent over ``n`` images.

    None when ``n`` is unknown, or when ``accuracy`` is not 100 k / n for a whole number k of correct images
    (then ``n`` is not the number it was measured on, and an interval from it would be wrong).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return None
    if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        return None
    k = accuracy * n / 100.0
    correct = round(k)
    if abs(k - correct) > 1e-6 or not 0 <= correct <= n:
        return None
    low, high = wilson_interval(correct, n)
    return 100.0 * low, 100.0 * high


def count_test_images(summary: dict) -> Optional[int]:
    """How many test images a run's accuracies are over, as its summary records it: the total of a recorded
    test confusion matrix (``test_confusion``, runs of up to 100 classes), else the test split's size in
    ``provenance.data.images`` (image-folder runs); None when the summary says neither."""
    for matrix in (summary.get("test_confusion") or {}).values():
        try:
            total = sum(sum(int(v) for v in row) for row in matrix)
        except (TypeError, ValueError):
            continue
        if total > 0:
            return total
    images = ((summary.get("provenance") or {}).get("data") or {}).get("images") or {}
    n = images.get("test") if isinstance(images, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def interval_text(interval: Optional[tuple[float, float]], digits: int = 2, dash: str = "–") -> str:
    """``"96.42–98.64"`` (percent, ``digits`` decimals, ``dash`` between: ``-`` for a terminal), or ``""``
    for None."""
    if interval is None:
        return ""
    return f"{interval[0]:.{digits}f}{dash}{interval[1]:.{digits}f}"


__all__ = ["Z95", "wilson_interval", "accuracy_interval", "count_test_images", "interval_text"]
