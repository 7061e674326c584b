"""How long a sweep takes to stop after Ctrl+C, once it has trained a while.

A long sweep of small models (a never-ending epoch budget, three replicates, the tiny MNIST-1D
set) spends much of its time writing per-epoch curves to MLflow, so a Ctrl+C often lands inside
a write. Each try starts `study run` on a fresh store, sends SIGINT after `--after` seconds (plus
a step per try, so the signal lands at different moments), and times the exit. Prints each try's
seconds and exit status, then the median and the slowest.

    python benchmarks/stop_latency.py --tries 6
    python benchmarks/stop_latency.py --tries 6 --baseline /tmp/old   # another checkout, same tries

`--baseline` names the root of another checkout of this project (`git worktree add /tmp/old
<commit>`): its tries alternate with this one's.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = textwrap.dedent("""
    description: a never-ending sweep of small models, to be stopped
    dataset: {name: mnist1d, num_samples: 400}
    model: {kind: mlp, width: 8, depth: 1}
    train: {epochs: 100000, batch_size: 64}
    search:
      model.width: [4, 8, 16]
    objective: {val/accuracy: maximize}
    sampler: grid
    replicates: 3
""")
LIMIT = 300  # seconds a try may take to stop before it is killed (and counted as such)


def stop_seconds(source: Path, folder: Path, after: float) -> tuple[float, str]:
    """Seconds from SIGINT to exit of one `study run` from `source`, and how it ended."""
    env = {**os.environ, "PYTHONPATH": str(source), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "study", "run", str(folder.parent / "long.yaml"), "--store", str(folder),
                             "--quiet"], cwd=folder.parent, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    try:
        proc.communicate(timeout=LIMIT)
        return time.monotonic() - start, f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return time.monotonic() - start, f"still running after {LIMIT} s, killed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=6)
    parser.add_argument("--after", type=float, default=30.0, help="seconds of training before the first Ctrl+C")
    parser.add_argument("--step", type=float, default=0.9, help="seconds added to --after at each try")
    parser.add_argument("--baseline", type=Path, help="root of another checkout, its tries alternating with this one's")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "study" / "__init__.py").is_file():
        print(f"error: --baseline {args.baseline} is not a checkout of this project (no study/__init__.py)", file=sys.stderr)
        return 2
    sources = {"this version": ROOT, **({f"baseline {args.baseline}": args.baseline} if args.baseline else {})}
    seconds: dict[str, list[float]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory(prefix="stop-latency-") as tmp:
        (Path(tmp) / "long.yaml").write_text(SWEEP)
        for i in range(args.tries):
            after = args.after + i * args.step
            for name, source in sources.items():
                took, how = stop_seconds(source, Path(tmp) / f"{len(seconds[name])}-{name.split()[0]}", after)
                seconds[name].append(took)
                print(f"{name}: Ctrl+C after {after:.1f} s, stopped in {took:.1f} s ({how})", flush=True)
    for name, values in seconds.items():
        print(f"{name}: median {statistics.median(values):.1f} s, slowest {max(values):.1f} s over {len(values)} tries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
