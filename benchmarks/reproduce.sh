#!/usr/bin/env bash
# The paper's VGG8 rows at the paper's own scale, one command per dataset (issue 14):
#
#   benchmarks/reproduce.sh fashion-mnist --data DIR --out DIR [--tiny] [--cuda-graphs on]
#   benchmarks/reproduce.sh cifar10 --data TREE --out DIR [--tiny] [--cuda-graphs on]
#
# Full-width VGG8, the paper's recipe exactly (configs/vgg8-fashion-mnist.yaml, configs/vgg8-cifar10.yaml:
# AdamW lr 2e-4, weight decay 1e-3, cosine to 1e-5, batch 128, dropout 0.1, 100 epochs, the best-validation
# checkpoint tested). fashion-mnist: DIR holds the four .gz files. cifar10: a JPEG ImageFolder tree with
# train/ and, when given, test/ (without it 10k images of train/ are held back as the test split, said so),
# or a .zip of that tree (unpacked once into DIR/data).
# Writes DIR/summary.json (test accuracy next to the paper's 93.41 / 90.62), DIR/metrics.jsonl,
# DIR/block_curve.json, DIR/report/ (val_blocks.png: the per-block curve) and DIR/run (resumed if cut short).
# --tiny: a 1/16-width VGG8 for 2 epochs on any device (seconds; the test suite runs it). Installs asge with
# `pip install --no-deps -e .` when it is not importable (a bare GPU machine has torch but not asge).
exec "$(dirname "$0")/run_python.sh" reproduce "$@"
