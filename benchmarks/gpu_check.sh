#!/usr/bin/env bash
# The GPU check: CUDA tests (CUDA graphs included), the host time per step, `asge bench` on CUDA at widths 0.5
# and 1 (fp32 and bf16, eager and --cuda-graphs on: images/s and peak memory of both methods), and 3-epoch
# full-width VGG8 Fashion-MNIST runs of ASGE and backprop (graphed) with whole-run timing, then with the time
# left images/s at equal memory (`asge bench --equal-memory`, width 1), in one JSON.
#
#   benchmarks/gpu_check.sh [--tiny] [--data DIR] [--budget SECONDS] --out DIR     -> DIR/gpu_check.json
#
# --data: the folder holding the four Fashion-MNIST .gz files (nothing is downloaded). --tiny: a small model
# and a few steps on whatever device there is (seconds on a CPU; the test suite runs it). Each section writes
# its results (or its failure) to the JSON as soon as it ends, so a run cut short keeps what it measured; the
# whole check stays within --budget (default 540 s, for 9 minutes on one H200). Installs this package with
# `pip install --no-deps -e .` first when it is not importable (the GPU machine has torch and the other
# dependencies but not asge). Run from anywhere; it works in the repository root.
exec "$(dirname "$0")/run_python.sh" gpu_check "$@"
