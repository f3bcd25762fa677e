"""Accuracy sweep: many `asge train` runs (configurations x seeds), several at once, one table of mean +- sd.

    python benchmarks/accuracy_sweep.py --data DIR --out DIR [--suite budget,general,full] [--jobs 12]
                                        [--seeds 0,1,2] [--deadline SECONDS] [--tiny]

Each run is a plain `asge train` subprocess (one torch thread) in OUT/runs/<suite>/<name>-s<seed>; a run whose
summary.json exists is read back, one with a checkpoint is resumed, so a killed sweep continues where it
stopped. After every finished run OUT/sweep.json (every run's summary) and OUT/sweep.md (per configuration:
mean +- sd over seeds of the headline, Fusion, Last, Best-block test accuracy, per-block test accuracy, train
seconds) are rewritten, so a timed-out sweep still leaves its results. `--deadline`: no run starts after that
many seconds. Suites (the long `full` runs are started first):

- budget: Fashion-MNIST, VGG8 x0.25, 20k training images, 3 epochs, lr 2e-3 (issue 9's budget): the paper
  recipe, each factor added to it alone, candidate improved recipes, and backprop.
- general (= digits + quick): scikit-learn digits (its preset) and Fashion-MNIST with `quick` x0.5 (20k
  images, 3 epochs): the paper, plus and colour recipes, unchanged.
- full: all 50k Fashion-MNIST training images, VGG8 x0.25, 10 epochs, lr 2e-3: paper, candidates, backprop.
- colour: CIFAR-10 as a JPEG ImageFolder tree (`--colour-data DIR` holding train/), 5,000 class-balanced
  images of train/ held back as the test split (`--test-split 5000`), VGG8 x0.25, 20k training images,
  3 epochs, lr 2e-3: the paper recipe, plus, backprop, and the colour-specific factors for both methods.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

BUDGET = ["--dataset", "fashion-mnist", "--model", "vgg8", "--width", "0.25", "--subset", "20000",
          "--epochs", "3", "--lr", "2e-3"]
FULL = ["--dataset", "fashion-mnist", "--model", "vgg8", "--width", "0.25", "--epochs", "10", "--lr", "2e-3"]
QUICK = ["--dataset", "fashion-mnist", "--model", "quick", "--width", "0.5", "--subset", "20000", "--epochs", "3"]
DIGITS = ["--dataset", "digits"]
COLOUR = ["--dataset", "imagefolder", "--test-split", "5000", "--model", "vgg8", "--width", "0.25",
          "--subset", "20000", "--epochs", "3", "--lr", "2e-3"]
# The colour recipe before batch 32 and heads at 3e-3 (plus + learned projection + no augmentation).
COLOUR_BEFORE = ["--recipe", "colour", "--batch-size", "128", "--head-lr", "1e-2"]
# The colour recipe and its steps, on CIFAR-10 (colour suite) and Fashion-MNIST (budget suite) alike.
COLOUR_RECIPE_PATH = {
    "colour": ["--recipe", "colour"],
    "colour+batch-128": COLOUR_BEFORE,
    "colour+head-lr-1e-2": ["--recipe", "colour", "--head-lr", "1e-2"],
    "colour+batch-16": ["--recipe", "colour", "--batch-size", "16"],
}
# Colour-specific factors (docs/accuracy.md, CIFAR-10 section), for both methods where they apply.
COLOUR_CONFIGS = {
    "paper": [], "plus": ["--recipe", "plus"], "bp": ["--method", "bp"],
    **COLOUR_RECIPE_PATH,
    "paper+crop-flip": ["--augment", "crop-flip"], "plus+crop-flip": ["--recipe", "plus", "--augment", "crop-flip"],
    "bp+crop-flip": ["--method", "bp", "--augment", "crop-flip"],
    "plus+augment-none": ["--recipe", "plus", "--augment", "none"],
    "bp+augment-none": ["--method", "bp", "--augment", "none"],
    "plus+norm-rms": ["--recipe", "plus", "--norm", "rms"],
    "plus+lr-5e-3": ["--recipe", "plus", "--lr", "5e-3"],
    "plus+lr-1e-3": ["--recipe", "plus", "--lr", "1e-3"],
    "paper+ge": ["--context", "ge"],
    "plus+context-none": ["--recipe", "plus", "--context", "none"],
    "plus+batch-64": ["--recipe", "plus", "--batch-size", "64"],
    "plus+dropout-0": ["--recipe", "plus", "--dropout", "0"],
    "paper+augment-none": ["--augment", "none"],
    "plus+alpha-2": ["--recipe", "plus", "--alpha", "2"],
    "paper+alpha-2": ["--alpha", "2"],
    "plus+learned": ["--recipe", "plus", "--projection", "learned"],
    "paper+learned": ["--projection", "learned"],
    "plus+learned+lr-5e-3": ["--recipe", "plus", "--projection", "learned", "--lr", "5e-3"],
    "plus+learned+batch-64": ["--recipe", "plus", "--projection", "learned", "--batch-size", "64"],
    "bp+batch-64": ["--method", "bp", "--batch-size", "64"],
    "bp+batch-32": ["--method", "bp", "--batch-size", "32"],
    "bp+augment-none+batch-32": ["--method", "bp", "--augment", "none", "--batch-size", "32"],
    "bp+batch-16": ["--method", "bp", "--batch-size", "16"],
    # the colour recipe's own path (docs/accuracy.md): from batch 128 with plus's head lr to batch 32, heads 3e-3
    "colour+batch-128+dropout-0": COLOUR_BEFORE + ["--dropout", "0"],
    "colour+batch-64+head-lr-1e-2": ["--recipe", "colour", "--batch-size", "64", "--head-lr", "1e-2"],
}

# Factors added to the paper recipe one at a time, and candidate recipes (name: extra flags).
FACTORS = {
    "paper": [],
    "bp": ["--method", "bp"],
    "+ge": ["--context", "ge"],
    "+ge-minus": ["--context", "ge-minus"],
    "+head-goodness": ["--head-features", "goodness"],
    "+head-patch": ["--head-features", "patch"],
    "+fusion-from-1": ["--fusion-from", "1"],
    "+norm-rms": ["--norm", "rms"],
    "+label-smoothing": ["--label-smoothing", "0.1"],
    "+head-lr-1e-2": ["--head-lr", "1e-2"],
    "+batch-64": ["--batch-size", "64"],
}
CANDIDATES = {
    "plus": ["--recipe", "plus"],
    # the path from paper to plus, one factor at a time: +ge, then these two, then plus (its head lr)
    "+ge+head-goodness": ["--context", "ge", "--head-features", "goodness"],
    "+ge+head-goodness+fusion-from-1": ["--context", "ge", "--head-features", "goodness", "--fusion-from", "1"],
    "plus+norm-rms": ["--recipe", "plus", "--norm", "rms"],
    "plus+label-smoothing": ["--recipe", "plus", "--label-smoothing", "0.1"],
    "plus+head-lr-1e-2": ["--recipe", "plus", "--head-lr", "1e-2"],
    "plus+head-patch": ["--recipe", "plus", "--head-features", "patch"],
    "plus+fusion-from-2": ["--recipe", "plus", "--fusion-from", "2"],
    "plus+ge-minus": ["--recipe", "plus", "--context", "ge-minus"],
    **COLOUR_RECIPE_PATH,
}


def suite_runs(suite: str, seeds: list[int], tiny: bool) -> list[tuple[str, str, list[str]]]:
    """(suite, name, flags) of every run of ``suite``; names carry the seed."""
    if tiny:   # the whole machinery on digits in seconds (tests, and a dry run before a GPU session)
        base, configs = ["--dataset", "digits", "--epochs", "1"], {"paper": [], "bp": ["--method", "bp"],
                                                                     "plus": ["--recipe", "plus"]}
        return [(suite, f"{n}-s{s}", base + f + ["--seed", str(s)]) for n, f in configs.items() for s in seeds]
    if suite == "budget":
        configs = [(n, BUDGET + f) for n, f in {**FACTORS, **CANDIDATES}.items()]
    elif suite in ("general", "digits", "quick"):
        picks = {n: {**FACTORS, **CANDIDATES}[n] for n in ("paper", "plus", "colour")}
        configs = ([(f"digits/{n}", DIGITS + f) for n, f in picks.items()] if suite != "quick" else []) + \
                  ([(f"quick-w0.5/{n}", QUICK + f) for n, f in picks.items()] if suite != "digits" else [])
    elif suite == "colour":
        configs = [(n, COLOUR + f) for n, f in COLOUR_CONFIGS.items()]
    elif suite == "full":
        configs = [("paper", FULL), ("plus", FULL + CANDIDATES["plus"]), ("bp", FULL + FACTORS["bp"]),
                   ("plus+norm-rms", FULL + CANDIDATES["plus+norm-rms"]),
                   ("plus+label-smoothing", FULL + CANDIDATES["plus+label-smoothing"])]
    else:
        raise SystemExit(f"accuracy_sweep: unknown suite {suite!r}; valid: budget, general, digits, quick, full, "
                         f"colour")
    return [(suite, f"{n}-s{s}", f + ["--seed", str(s)]) for n, f in configs for s in seeds]


def run_one(root: Path, scratch: Path, suite: str, name: str, flags: list[str], data: str | None,
            time_left: float = float("inf")) -> dict:
    """Train one run (or read it back); copy its config, metrics and summary (no checkpoints) under ``root``.
    A run still going after ``time_left`` seconds is stopped; its finished epochs' metrics are kept."""
    keep = root / "runs" / suite / name
    if (keep / "summary.json").is_file():
        return json.loads((keep / "summary.json").read_text())
    work = scratch / suite / name
    cmd = [sys.executable, "-m", "asge", "train", *flags, "--out", str(work), "--progress", "none"]
    if data and "digits" not in flags:
        cmd += ["--data-root", data]
    if (work / "checkpoints" / "last.pt").is_file():
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(1.0, time_left) if time_left < float("inf") else None)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output = "\n".join(t.decode() if isinstance(t, bytes) else (t or "") for t in (e.stdout, e.stderr))
        code, proc = None, None
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "log.txt").write_text(" ".join(cmd) + "\n" + output)
    for f in ("config.yaml", "metrics.jsonl", "summary.json"):
        if (work / f).is_file():
            shutil.copy2(work / f, keep / f)
    if code is None:
        return {"error": "stopped at the sweep's time limit (metrics.jsonl keeps the finished epochs)",
                "wall_seconds": time.time() - t0}
    if code != 0 or not (keep / "summary.json").is_file():
        return {"error": (output.strip().splitlines() or ["no output"])[-1], "returncode": code,
                "wall_seconds": time.time() - t0}
    return json.loads((keep / "summary.json").read_text())


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(results: dict) -> str:
    """Markdown: one row per (suite, configuration), mean ± sd over its finished seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for (suite, name), s in sorted(results.items()):
        if "error" in s:
            continue
        groups.setdefault((suite, name.rsplit("-s", 1)[0]), []).append(s)
    lines = ["| suite | configuration | seeds | headline (test %) | fusion | last | best block (l*) | "
             "per-block test % (mean) | train s | parameters (blocks + heads) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (suite, name), runs in groups.items():
        acc = lambda k: [r["test_accuracy"][k] for r in runs if k in r["test_accuracy"]]  # noqa: E731
        head = [r["test_accuracy"][r.get("headline", "fusion" if r["method"] == "asge" else "last")] for r in runs]
        blocks = [r["block_test_accuracy"] for r in runs if r.get("block_test_accuracy")]
        per_block = " ".join(f"{statistics.mean(col):.1f}" for col in zip(*blocks)) if blocks else "–"
        lstar = ",".join(str(r["best_block"]) for r in runs if r.get("best_block"))
        p = runs[0].get("parameters", {})
        params = p.get("blocks", 0) + p.get("fusion", 0) + p.get("last", 0)
        lines.append(f"| {suite} | {name} | {len(runs)} | {mean_sd(head)} | {mean_sd(acc('fusion'))} | "
                     f"{mean_sd(acc('last'))} | {mean_sd(acc('best'))}{f' ({lstar})' if lstar else ''} | "
                     f"{per_block} | {mean_sd([r['train_seconds'] for r in runs])} | {params} |")
    failed = [f"{suite}/{name}: {s['error']}" for (suite, name), s in sorted(results.items())
              if "error" in s and not s["error"].startswith("not started")]
    return "\n".join(lines + ([""] + ["failed: " + f for f in failed] if failed else [])) + "\n"


def plot_blocks(results: dict, path: Path, suite: str = "budget") -> None:
    """Per-block test accuracy (mean +- sd over seeds) of each ASGE configuration of ``suite``, BP dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups: dict[str, list[dict]] = {}
    for (s, name), r in sorted(results.items()):
        if s == suite and "error" not in r:
            groups.setdefault(name.rsplit("-s", 1)[0], []).append(r)
    fig, ax = plt.subplots(figsize=(10, 5))
    colours = iter(plt.get_cmap("tab20").colors * 3)   # one colour per configuration, however many
    dashes = iter([(4, 2), (1, 1), (6, 2, 1, 2), (2, 3), (8, 2), (3, 1, 1, 1)] * 3)
    for name, runs in groups.items():
        if runs[0]["method"] == "bp":
            ax.axhline(statistics.mean(r["test_accuracy"]["last"] for r in runs), ls=(0, next(dashes)), c="k",
                       lw=1, label=f"{name} (last)")
            continue
        cols = list(zip(*[r["block_test_accuracy"] for r in runs]))
        mean = [statistics.mean(c) for c in cols]
        sd = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols]
        ax.errorbar(range(1, len(mean) + 1), mean, yerr=sd, marker="o", capsize=3, label=name, c=next(colours))
    ax.set_xlabel("block l")
    ax.set_ylabel("test accuracy of a_l (%)")
    ax.set_title(f"{suite}: per-block test accuracy, mean ± sd over seeds")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_results(paths: list[str]) -> dict:
    """Merge sweep.json files (later files win) into {(suite, name): summary}."""
    merged = {}
    for p in paths:
        for key, v in json.loads(Path(p).read_text()).items():
            suite, name = key.split("/", 1)
            if "error" not in v or (suite, name) not in merged:
                merged[(suite, name)] = v
    return merged


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="Fashion-MNIST folder (IDX .gz files); default: asge's own search")
    p.add_argument("--colour-data", help="the colour suite's ImageFolder tree (CIFAR-10 as JPEG: train/<class>/)")
    p.add_argument("--out", required=True)
    p.add_argument("--scratch", help="where the runs train (checkpoints); default OUT/scratch")
    p.add_argument("--suite", default="full,budget,general")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--deadline", type=float, default=float("inf"), help="start no run after this many seconds")
    p.add_argument("--stop-after", type=float, default=float("inf"),
                   help="stop the runs still going after this many seconds (their metrics are kept)")
    p.add_argument("--skip", help="comma-separated configurations not to run: NAME (every suite) or SUITE/NAME")
    p.add_argument("--only", help="comma-separated configurations to run (NAME or SUITE/NAME), in this order")
    p.add_argument("--tiny", action="store_true", help="digits, 1 epoch, 3 configurations: a dry run")
    p.add_argument("--report", nargs="+", metavar="SWEEP_JSON",
                   help="train nothing: merge these sweep.json files into OUT/sweep.md and OUT/blocks-<suite>.png")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        results = load_results(args.report)
        (out / "sweep.md").write_text(table(results))
        for suite in sorted({s for s, _ in results}):
            plot_blocks(results, out / f"blocks-{suite}.png", suite)
        print(table(results))
        return 0
    scratch = Path(args.scratch) if args.scratch else out / "scratch"
    seeds = [int(s) for s in args.seeds.split(",")]
    suites = ["tiny"] if args.tiny else args.suite.split(",")
    runs = [r for suite in suites for r in suite_runs(suite, seeds, args.tiny)]
    config = lambda r: r[1].rsplit("-s", 1)[0]  # noqa: E731
    if args.skip:
        skip = set(args.skip.split(","))
        runs = [r for r in runs if config(r) not in skip and f"{r[0]}/{config(r)}" not in skip]
    if args.only:
        order = args.only.split(",")
        rank = lambda r: next((i for i, o in enumerate(order) if o in (config(r), f"{r[0]}/{config(r)}")), None)  # noqa: E731
        runs = sorted((r for r in runs if rank(r) is not None), key=rank)
    start, results = time.time(), {}

    def launch(run):
        if time.time() - start > args.deadline:
            return run, {"error": "not started: past the deadline"}
        if run[0] == "colour" and not args.colour_data:
            return run, {"error": "not started: the colour suite needs --colour-data DIR"}
        data = args.colour_data if run[0] == "colour" else args.data
        return run, run_one(out, scratch, run[0], run[1], run[2], data,
                            time_left=args.stop_after - (time.time() - start))

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for fut in as_completed([pool.submit(launch, r) for r in runs]):
            (suite, name, _), summary = fut.result()
            results[(suite, name)] = summary
            print(f"[{time.time() - start:6.0f}s] {suite}/{name}: "
                  + (summary["error"] if "error" in summary else
                     " ".join(f"{k} {v:.2f}" for k, v in summary["test_accuracy"].items())), flush=True)
            (out / "sweep.json").write_text(json.dumps({f"{s}/{n}": v for (s, n), v in results.items()},
                                                       indent=1) + "\n")
            (out / "sweep.md").write_text(table(results))
    print(table(results))
    return 0 if all("error" not in s for s in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
