"""Run every shipped sweep one after another in one fresh store, then build their reports, and
print each sweep's wall time (the README's sweep table comes from this).

    .venv/bin/python benchmarks/shipped_sweeps.py [--store /tmp/shipped] [--out reports] [SWEEP ...]

Sweeps run in the order below, so compression sweeps find the base that an earlier one trained.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["demo", "capacity", "regularization", "epochs", "data_size", "features", "double_descent", "double_descent_notebook",
         "demo_compression", "pruning", "structured_pruning", "quantization", "distillation", "architecture", "compression"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="*", default=ORDER)
    parser.add_argument("--store", default="/tmp/study-shipped")
    parser.add_argument("--out", default=str(ROOT / "reports"))
    args = parser.parse_args()
    study = [sys.executable, "-m", "study"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; store {args.store}")
    times = {}
    for name in args.sweeps:
        start = time.perf_counter()
        done = subprocess.run([*study, "run", str(ROOT / "sweeps" / f"{name}.yaml"), "--store", args.store],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times[name] = time.perf_counter() - start
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"
        print(f"{name:18s} {int(times[name] // 60):3d}m{times[name] % 60:02.0f}s  {status}", flush=True)
    start = time.perf_counter()
    subprocess.run([*study, "report", *args.sweeps, "--store", args.store, "--out", args.out], check=False)
    print(f"reports: {time.perf_counter() - start:.0f}s for {len(args.sweeps)} sweeps, in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
