"""What compression forgets (Hooker et al. 2019, "What do compressed deep neural networks forget?"):
per test example, whether a compressed file gets it wrong where its own base (the same seed's)
got it right. Pure NumPy and pandas, from the predictions every trial logs (predictions.npz: each
replicate's outputs on the test split, its seed, and the true labels).

A file's accuracy can hold while it trades examples: it loses some its base knew and learns
others. The counts say how many of each, per setting, with a 95% interval over the seeds (each
seed compressed its own base, so a count's spread holds the base's variance too); the examples
most often lost, across every file, are the ones compression finds hard (Hooker's
compression-identified exemplars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from study.report import stats

MOST_LOST = 10  # examples listed as the most often lost


@dataclass(frozen=True)
class Examples:
    """Per-example correctness of every file whose predictions were read."""

    correct: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # (trial run id, seed) -> bool (n,)
    y_test: np.ndarray | None = None
    classes: int = 0  # outputs per example (0: not a classification)
    read: int = 0  # trials whose predictions were read
    wanted: int = 0  # finished trials
    limit: int = 0  # the most trials read (load.MAX_PAIRED)

    def of(self, rows: pd.DataFrame) -> list[np.ndarray | None]:
        """Each file row's correctness (by trial_run_id and seed), None where unread."""
        run = rows["trial_run_id"] if "trial_run_id" in rows else rows["run_id"]
        return [self.correct.get((str(r), int(s))) if pd.notna(s) else None for r, s in zip(run, rows["seed"])]


def from_predictions(predictions: dict[str, dict], wanted: int = 0, limit: int = 0) -> Examples:
    """Examples from {trial run id: predictions.npz contents}; classification only."""
    correct: dict[tuple[str, int], np.ndarray] = {}
    y_test, classes = None, 0
    for run_id, saved in predictions.items():
        outputs = np.asarray(saved.get("outputs", []))
        if outputs.ndim != 3 or outputs.shape[-1] < 2 or "y_test" not in saved or "seeds" not in saved:
            continue
        truth = np.asarray(saved["y_test"]).reshape(-1)
        y_test, classes = truth, int(outputs.shape[-1])
        for seed, output in zip(np.asarray(saved["seeds"]), outputs):
            correct[(str(run_id), int(seed))] = output.argmax(axis=-1) == truth
    return Examples(correct, y_test, classes, len(predictions), wanted, limit)


def base_by_seed(files: pd.DataFrame, examples: Examples) -> dict[int, np.ndarray]:
    """Each seed's base correctness: its `method: none` file (the base as it is)."""
    base = files[files["method"] == "none"]
    found: dict[int, np.ndarray] = {}
    for row, correct in zip(base.itertuples(), examples.of(base)):
        if correct is not None:
            found.setdefault(int(row.seed), correct)
    return found


def _interval(values: list[float]) -> tuple[float, float, float]:
    diff = stats.paired_differences(values)
    low, high = diff.interval() if math.isfinite(diff.se) else (math.nan, math.nan)
    return diff.effect, max(low, 0.0) if math.isfinite(low) else low, high  # a count is never below zero


def forgotten(files: pd.DataFrame, examples: Examples, label_of=None) -> pd.DataFrame:
    """Per setting (trial): the examples its files got wrong that their own base got right
    ('forgotten') and the reverse ('learned'), each the mean count over the seeds with a 95%
    interval (Student's t over the seeds), and the net change in correct examples."""
    bases = base_by_seed(files, examples)
    rows = []
    compressed = files[files["method"] != "none"]
    for trial, group in compressed.groupby("trial", sort=True):
        lost, learned, seeds = [], [], []
        for row, correct in zip(group.itertuples(), examples.of(group)):
            base = bases.get(int(row.seed)) if pd.notna(row.seed) else None
            if correct is None or base is None or base.shape != correct.shape:
                continue
            lost.append(float(np.sum(base & ~correct)))
            learned.append(float(np.sum(~base & correct)))
            seeds.append(int(row.seed))
        if not seeds:
            continue
        first = group.iloc[0]
        mean_lost, low_lost, high_lost = _interval(lost)
        mean_learned, low_learned, high_learned = _interval(learned)
        rows.append({
            "trial": int(trial), "file": first["label"], "settings": label_of(first) if label_of else "",
            "seeds": len(seeds), "forgotten": mean_lost, "forgotten low": low_lost, "forgotten high": high_lost,
            "learned": mean_learned, "learned low": low_learned, "learned high": high_learned,
            "net": mean_learned - mean_lost, "of": int(len(bases[seeds[0]])),
            "run": first.get("trial_run_id", first["run_id"]),
        })
    table = pd.DataFrame(rows)
    return table.sort_values(["file", "settings", "trial"], kind="stable").reset_index(drop=True) if rows else table


def most_lost(files: pd.DataFrame, examples: Examples, top: int = MOST_LOST) -> pd.DataFrame:
    """The test examples lost most often: by how many compressed files (of those with a base to
    compare) got them wrong where their base got them right, with the true label, how many bases
    knew them, and the methods that lost them."""
    bases = base_by_seed(files, examples)
    if not bases or examples.y_test is None:
        return pd.DataFrame()
    n = len(examples.y_test)
    lost = np.zeros(n, dtype=int)
    by_label: dict[str, np.ndarray] = {}
    compared = 0
    compressed = files[files["method"] != "none"]
    for row, correct in zip(compressed.itertuples(), examples.of(compressed)):
        base = bases.get(int(row.seed)) if pd.notna(row.seed) else None
        if correct is None or base is None or correct.shape != (n,):
            continue
        hit = base & ~correct
        lost += hit
        by_label[row.label] = by_label.get(row.label, np.zeros(n, dtype=int)) + hit
        compared += 1
    if not compared or not lost.any():
        return pd.DataFrame()
    known = np.sum([b for b in bases.values()], axis=0)
    order = np.argsort(-lost, kind="stable")[:top]
    order = order[lost[order] > 0]
    return pd.DataFrame({
        "test example": order, "true label": examples.y_test[order], "lost by files": lost[order],
        "of files": compared, "bases right": known[order], "of bases": len(bases),
        "lost by": ["; ".join(f"{label} {int(counts[i])}" for label, counts in by_label.items() if counts[i])
                    for i in order],
    })
