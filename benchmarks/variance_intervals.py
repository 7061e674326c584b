"""Coverage of the bias–variance decomposition's variance interval, by simulation: predictions of R
replicates that vary along a few global directions (as initialisations move a model) plus
independent noise per point, with the true variance known. Prints, for R = 3, 5 and 10 and three
mixes of directions, how often the 95% interval holds the truth: the symmetric jackknife over
replicates (Student's t, R − 1 df) against Satterthwaite's χ² that decompose.variance_term uses.

    .venv/bin/python benchmarks/variance_intervals.py [--draws 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.report import decompose, stats  # noqa: E402

MIXES = {"falling": [0.3, 0.2, 0.1, 0.1, 0.05, 0.05], "one direction": [0.3, 0, 0, 0, 0, 0], "even": [0.1] * 6}


def jackknife(p: np.ndarray) -> tuple[float, float]:
    value = lambda q: float(q.var(axis=0, ddof=1).mean())  # noqa: E731
    r = len(p)
    loo = np.array([value(np.delete(p, i, axis=0)) for i in range(r)])
    half = stats.t_quantile(r - 1) * float(np.sqrt((r - 1) / r * ((loo - loo.mean()) ** 2).sum()))
    return value(p) - half, value(p) + half


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 500)
    basis = np.stack([x**k for k in range(6)])
    print(f"{'directions':14s} {'R':>3s} {'jackknife t':>12s} {'χ² (ours)':>10s}   ({args.draws} draws each; target 95%)")
    for name, scales in MIXES.items():
        scales = np.asarray(scales)
        truth = float((scales**2 @ basis**2).mean() + 0.05**2)
        for r in (3, 5, 10):
            jack = chi = 0
            for _ in range(args.draws):
                p = np.sin(3 * x) + (rng.normal(size=(r, 6)) * scales) @ basis + rng.normal(scale=0.05, size=(r, 500))
                low, high = jackknife(p)
                jack += low <= truth <= high
                term = decompose.variance_term(p)
                chi += term.low <= truth <= term.high
            print(f"{name:14s} {r:3d} {jack / args.draws:12.1%} {chi / args.draws:10.1%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
