"""The GPU check (run by ``benchmarks/gpu_check.sh``): CUDA tests, the host time per step (``asge bench
--overhead``), ``asge bench`` on CUDA in fp32 and bf16 at widths 0.5 and 1, eager and with the whole step as
a CUDA graph (``--cuda-graphs on``), with peak memory, and full-width VGG8 Fashion-MNIST runs of both
methods (3 epochs, graphed), then, with the time left, images/s at equal memory (``asge bench
--equal-memory``, width 1), all written to one JSON.

    python benchmarks/gpu_check.py --out DIR [--data DIR] [--tiny] [--budget SECONDS]

Every section runs as its own subprocess with its own time limit; its result (or its failure, its time-out,
the reason it was skipped) is written to ``DIR/gpu_check.json`` as soon as it ends, so a run cut short
keeps what it measured. A section that fails does not stop the others. Sections start only while the
overall budget (default 540 s: 9 minutes on one H200) leaves room for them.
``--tiny``: the same sections with a small model and a few steps on whatever device there is (CPU here):
seconds on an idle machine, for the test suite (its limits are generous: a shared machine is slow); the
graphed sections are recorded as skipped where there is no CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Check:
    def __init__(self, out: Path, budget: float, args: argparse.Namespace):
        self.out, self.budget, self.t0 = out, budget, time.monotonic()
        self.report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tiny": args.tiny,
                       "data": args.data, "budget_seconds": budget, "sections": {}, "finished": None}
        self.write()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def write(self) -> None:
        path = self.out / "gpu_check.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.report, indent=2) + "\n")
        os.replace(tmp, path)

    def record(self, name: str, result: dict) -> dict:
        self.report["sections"][name] = result
        self.write()
        status = result.get("status")
        print(f"[gpu_check {self.elapsed():6.1f}s] {name}: {status}"
              + (f" ({result.get('error') or result.get('reason')})" if status != "ok" else ""), flush=True)
        return result

    def run(self, name: str, cmd: list[str], limit: float, parse=None, needs: float = 0.0) -> dict:
        """Run ``cmd`` (cwd: the repository) for at most ``limit`` seconds (less if the budget is short);
        ``parse(stdout) -> dict`` adds results. ``needs``: seconds the section must have to be worth starting."""
        left = self.budget - self.elapsed()
        if left < max(needs, 5.0):
            return self.record(name, {"status": "skipped", "reason": f"budget: {left:.0f} s left"})
        limit = min(limit, left)
        t = time.monotonic()
        res = {"command": " ".join(cmd), "limit_seconds": round(limit, 1)}
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
            res.update(status="ok" if p.returncode == 0 else "failed", returncode=p.returncode)
            out = p.stdout
            if p.returncode != 0:
                res["error"] = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["?"])[-1][:500]
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            res.update(status="timeout", error=f"killed after {limit:.0f} s")
        res["seconds"] = round(time.monotonic() - t, 2)
        res["output_tail"] = out[-3000:]
        if parse is not None:
            try:
                res.update(parse(out))
            except Exception as e:  # a section's numbers that cannot be read are a failure of that section
                res.setdefault("parse_error", f"{type(e).__name__}: {e}")
                if res["status"] == "ok":
                    res["status"] = "failed"
        return self.record(name, res)


def bench_results(path: Path):
    def parse(_stdout: str) -> dict:
        report = json.loads((path / "bench.json").read_text())
        rows = []
        for r in report["results"]:
            rows.append({k: r.get(k) for k in ("model", "width", "batch_size", "batch_sizes", "equal_memory",
                                               "device", "amp", "cuda_graphs",
                                               "cuda_graph_pool_bytes", "images_per_second",
                                               "speed_ratio", "chunk_speed_ratio_median", "cuda_peak_bytes",
                                               "saved_activation_bytes", "memory_ratio", "achieved_gflops")})
            if r.get("cuda_peak_bytes"):
                rows[-1]["cuda_peak_ratio"] = r["cuda_peak_bytes"]["asge"] / max(r["cuda_peak_bytes"]["bp"], 1)
        return {"results": rows, "matmul_peak_gflops": report.get("matmul_peak_gflops"),
                "machine": report.get("machine")}
    return parse


def train_results(path: Path):
    def parse(_stdout: str) -> dict:
        s = json.loads((path / "summary.json").read_text())
        return {k: s.get(k) for k in ("method", "model", "width", "epochs", "device", "train_seconds",
                                      "images_per_second", "test_accuracy", "best_block")}
    return parse


def check_arguments(data, out: Path):
    """What is wrong with ``--data`` / ``--out`` (one line), or None: ``--data`` must hold the four
    Fashion-MNIST files; ``--out`` must not hold an earlier check's results."""
    if (out / "gpu_check.json").exists():
        return f"--out {out} already holds a GPU check (gpu_check.json); choose another --out"
    if data is None:
        return None
    from asge.data.in_memory import idx_folder_problem
    problem = idx_folder_problem(data)
    return f"--data {problem}" if problem else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", help="folder with the four Fashion-MNIST .gz files (default: asge's own search)")
    ap.add_argument("--tiny", action="store_true", help="small model, few steps, any device: seconds")
    ap.add_argument("--budget", type=float, help="seconds for the whole check (default 540; --tiny 900)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    problem = check_arguments(args.data, out)
    if problem:                          # before anything runs: minutes of GPU time are not spent on it
        print(f"gpu_check: error: {problem}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    c = Check(out, args.budget or (900.0 if args.tiny else 540.0), args)
    py = sys.executable
    cli = [py, "-m", "asge"]

    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import torch
        env.update(torch=torch.__version__, cuda_available=torch.cuda.is_available(),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        if torch.cuda.is_available():
            env.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                       gpu_memory_bytes=torch.cuda.get_device_properties(0).total_memory)
        import asge
        env["asge"] = asge.__version__
        c.record("environment", {"status": "ok", **env})
    except Exception as e:
        c.record("environment", {"status": "failed", "error": f"{type(e).__name__}: {e}", **env})
    device = "auto" if args.tiny else "cuda"

    # 1. The tests that need CUDA (they skip without it), then the fast-path tests on this device's CPU side.
    c.run("tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
          + ([] if args.tiny else ["tests/test_fast_paths.py", "tests/test_capture.py", "tests/test_lean_step.py"]),
          120 if args.tiny else 150,
          parse=lambda s: {"summary": (s.strip().splitlines() or [""])[-1]})

    cuda = env.get("cuda_available", False)

    # 2. Host time per step (VGG8 width 1/32, batch 1, 1 thread, steps alternating): the per-call work.
    c.run("overhead", cli + ["bench", "--overhead", "--device", device, "--overhead-steps", "5" if args.tiny else "100",
                             "--out", str(out / "overhead")], 60,
          parse=lambda s: {k: json.loads((out / "overhead" / "overhead.json").read_text())[k]
                           for k in ("median_ms", "ratio", "device", "threads")})

    # 3. asge bench on CUDA: images/s and peak memory of both methods, fp32 then bf16, eager then graphed.
    if args.tiny:
        widths, bench_args = ["0.25"], ["--model", "digits", "--batch-size", "8", "--steps", "1", "--warmup", "2",
                                        "--chunk", "1", "--no-matmul-peak"]
    else:
        widths, bench_args = ["0.5", "1"], ["--model", "vgg8", "--steps", "24", "--warmup", "5", "--chunk", "4"]
    for amp in ("none", "bf16"):
        for graphs in ("off", "on"):
            name = ("bench_fp32" if amp == "none" else "bench_bf16") + ("_graphs" if graphs == "on" else "")
            if graphs == "on" and not cuda:
                c.record(name, {"status": "skipped", "reason": "no CUDA device: CUDA graphs do not apply"})
                continue
            path = out / name
            c.run(name, cli + ["bench", "--device", device, "--amp", amp, "--cuda-graphs", graphs, "--width",
                               *widths, *bench_args, "--out", str(path)], 120 if args.tiny else 75,
                  parse=bench_results(path), needs=10 if args.tiny else 30)
    graphed = {}
    for amp in ("fp32", "bf16"):
        eager_rows = c.report["sections"].get(f"bench_{amp}", {}).get("results") or []
        graph_rows = c.report["sections"].get(f"bench_{amp}_graphs", {}).get("results") or []
        for e, g in zip(eager_rows, graph_rows):
            ips_e, ips_g = e["images_per_second"], g["images_per_second"]
            graphed[f"{amp}_w{e['width']:g}"] = {
                "graphed_asge_over_bp": ips_g["asge"] / ips_g["bp"], "eager_asge_over_bp": ips_e["asge"] / ips_e["bp"],
                "asge_graphed_over_eager": ips_g["asge"] / ips_e["asge"],
                "bp_graphed_over_eager": ips_g["bp"] / ips_e["bp"],
                "eager_cuda_peak_ratio": e.get("cuda_peak_ratio"),
                "graph_pool_bytes": g.get("cuda_graph_pool_bytes")}
    if graphed:
        c.report["graphs_vs_eager"] = graphed
        c.write()

    # 4. Whole runs, one method after the other: full-width VGG8 on Fashion-MNIST (digits when tiny), graphed.
    if args.tiny:
        run_args = ["--dataset", "fashion-mnist" if args.data else "digits", "--model", "digits", "--width", "0.25",
                    "--epochs", "1", "--subset", "256", "--batch-size", "32"]
    else:
        run_args = ["--dataset", "fashion-mnist", "--model", "vgg8", "--width", "1", "--epochs", "3", "--lr", "2e-3",
                    "--seed", "0"]
    if args.data:
        run_args += ["--data-root", args.data]
    runs = {}
    for method in ("asge", "bp"):
        path = out / f"train_{method}"
        t = time.monotonic()
        res = c.run(f"train_{method}", cli + ["train", *run_args, "--device", device, "--method", method,
                                               "--cuda-graphs", "on" if cuda else "off",
                                               "--progress", "lines", "--out", str(path)],
                    150 if args.tiny else 130, parse=train_results(path), needs=10 if args.tiny else 60)
        if res["status"] == "ok":
            res["wall_seconds"] = round(time.monotonic() - t, 2)
            runs[method] = res
            c.write()
    if len(runs) == 2:
        c.report["whole_run"] = {
            "train_seconds_ratio_bp_over_asge": runs["bp"]["train_seconds"] / runs["asge"]["train_seconds"],
            "wall_seconds_ratio_bp_over_asge": runs["bp"]["wall_seconds"] / runs["asge"]["wall_seconds"]}
    # 5. With what time is left: images/s at equal memory (ASGE at the largest batch whose step needs no more
    #    CUDA memory than BP's at 128), width 1, fp32, both graphed: a larger batch, so its own section.
    path = out / "bench_equal_memory"
    c.run("bench_equal_memory", cli + ["bench", "--device", device, "--cuda-graphs", "on" if cuda else "off",
                                       "--width", widths[-1], *bench_args, "--equal-memory", "--out", str(path)],
          120 if args.tiny else 90, parse=bench_results(path), needs=10 if args.tiny else 45)
    c.report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    c.report["seconds"] = round(c.elapsed(), 1)
    c.write()
    failed = [k for k, v in c.report["sections"].items() if v.get("status") != "ok"]
    print(f"gpu_check: {len(c.report['sections']) - len(failed)} sections ok"
          + (f", not ok: {', '.join(failed)}" if failed else "") + f"; wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
