"""Run every shipped sweep one after another in one fresh store, then build their reports, and
print each sweep's wall time (the README's sweep table comes from this).

    .venv/bin/python benchmarks/shipped_sweeps.py [--store NEW_FOLDER] [--out reports] [SWEEP ...]
        [--baseline DIR] [--workers N]

Each run needs stores of its own: by default a new temporary folder (and, with `--baseline`, the
same path with `-baseline` appended); a `--store` that is not empty is refused, since its sweeps
would resume rather than run.

Sweeps run in the order below, so compression sweeps find the base that an earlier one trained.

`--baseline DIR` compares with another version checked out in DIR (`git worktree add DIR REV`):
each sweep runs on this version, then right after on that one (its own code and sweep file, in a
store of its own), so drift of a shared machine falls on both alike; it prints both times, their
ratio and the totals, and builds reports for this version only.

`--workers N` runs each sweep with `study run --workers N` (both versions alike).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["demo", "capacity", "regularization", "epochs", "data_size", "features", "double_descent", "double_descent_notebook",
         "demo_compression", "pruning", "structured_pruning", "quantization", "distillation", "architecture", "compression"]


def cpu_model() -> str:
    """The processor: its name, family and model, and its widest vector instructions (speed ratios,
    and float32's last bits, differ between processors; a virtual machine's name can hide which)."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    detail = []
    if "cpu family" in fields and "model" in fields:
        detail.append(f"family {fields['cpu family']} model {fields['model']}")
    flags = set(fields.get("flags", "").split())
    widest = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags), None)
    if widest:
        detail.append(widest)
    name = fields.get("model name") or platform.processor()
    return f"{name} ({', '.join(detail)})" if detail else name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="*", default=ORDER)
    parser.add_argument("--store", type=Path, help="a folder for the store, new or empty (default: a new temporary folder, kept)")
    parser.add_argument("--out", default=str(ROOT / "reports"))
    parser.add_argument("--baseline", type=Path, help="a checkout of another version to time right after each sweep")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for each sweep (study run --workers)")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "study" / "__init__.py").is_file():
        print(f"error: --baseline {args.baseline} is not a checkout of this project (no study/__init__.py); "
              "make one with `git worktree add DIR REV`", file=sys.stderr)
        return 2
    if args.store is None:
        args.store = Path(tempfile.mkdtemp(prefix="study-shipped-"))
    versions = {"this version": (ROOT, str(args.store))}
    if args.baseline is not None:
        versions["baseline"] = (args.baseline.resolve(), f"{args.store}-baseline")
    for _, store in versions.values():  # a store that holds the sweeps already would time their resumption
        if Path(store).exists() and (not Path(store).is_dir() or any(Path(store).iterdir())):
            print(f"error: {store} is not empty: the sweeps would resume, not run; give --store a new folder",
                  file=sys.stderr)
            return 2
    if args.workers < 1:
        print(f"error: --workers {args.workers}: give 1 or more", file=sys.stderr)
        return 2
    workers = f"; {args.workers} workers" if args.workers > 1 else ""
    print(f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores; store {args.store}{workers}")
    totals = dict.fromkeys(versions, 0.0)
    for name in args.sweeps:
        line, seconds = [], {}
        for version, (root, store) in versions.items():
            seconds[version], status = run_sweep(root, name, store, args.workers)
            totals[version] += seconds[version]
            line.append(f"{version}: {minutes(seconds[version])}  {status}")
        if args.baseline is not None:
            line.append(f"ratio {seconds['this version'] / seconds['baseline']:.2f}")
        print(f"{name:18s} " + "   ".join(line), flush=True)
    if args.baseline is not None:
        print(f"total: this version {minutes(totals['this version'])}, baseline {minutes(totals['baseline'])}, "
              f"ratio {totals['this version'] / totals['baseline']:.2f}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "study", "report", *args.sweeps, "--store", args.store, "--out", args.out],
                   cwd=ROOT, check=False)
    print(f"reports: {time.perf_counter() - start:.0f}s for {len(args.sweeps)} sweeps, in {args.out}")
    return 0


def run_sweep(root: Path, name: str, store: str, workers: int = 1) -> tuple[float, str]:
    """Seconds to run one sweep with the code and sweep file in `root`, and how it ended."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "study", "run", str(root / "sweeps" / f"{name}.yaml"), "--store", store]
    if workers > 1:
        command += ["--workers", str(workers)]
    done = subprocess.run(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"
    return seconds, status


def minutes(seconds: float) -> str:
    whole = round(seconds)  # 59.6 s is 1m00s, not 0m60s
    return f"{whole // 60}m{whole % 60:02d}s"


if __name__ == "__main__":
    raise SystemExit(main())
