"""A linear classifier on the raw pixels: how far a data set is from linearly separable, at a budget.

    python benchmarks/pixel_probe.py --dataset imagefolder --data-root DIR --test-split 5000 --subset 20000
    python benchmarks/pixel_probe.py --dataset fashion-mnist --subset 20000

Reads the same splits and the same preprocessing (pixels in [0, 1], each image divided by its RMS) that
`asge train` reads with those options, fits scikit-learn's multinomial LogisticRegression (L2, C=0.01,
lbfgs, 200 iterations) on the training images (no augmentation) and prints its test and train accuracy.
docs/accuracy.md compares ASGE's per-block accuracies with it.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root")
    p.add_argument("--test-split", type=int)
    p.add_argument("--subset", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--c", type=float, default=0.01, help="inverse L2 strength")
    args = p.parse_args(argv)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from asge.data import load_data
    torch.set_num_threads(1)
    data = load_data(args.dataset, args.data_root, subset=args.subset, seed=args.seed, test_split=args.test_split)

    def flat(split):
        x, y = next(split.batches(len(split), shuffle=False, augment=False, seed=0, device="cpu"))
        return x.flatten(1).numpy(), y.numpy()

    (xtr, ytr), (xte, yte) = flat(data.train), flat(data.test)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # 200 iterations is the budget, said above
        clf = LogisticRegression(C=args.c, max_iter=200).fit(xtr, ytr)
    print(json.dumps({"dataset": args.dataset, "train_images": len(ytr), "test_images": len(yte),
                      "test_accuracy": round(100 * clf.score(xte, yte), 2),
                      "train_accuracy": round(100 * clf.score(xtr, ytr), 2),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
