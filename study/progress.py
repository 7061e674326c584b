"""The progress bar of `study run`: trials done of the budget, by state, the best value, an ETA."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from optuna.trial import TrialState
from tqdm import tqdm

from study.measure import pareto_mask


class _Bar(tqdm):
    """tqdm with a `status` field for the bar format (its own postfix starts with a comma)."""

    status = ""

    @property
    def format_dict(self):
        return {**super().format_dict, "status": self.status}


class Progress:
    """A tqdm bar over done trials (finished + pruned + failed), on stderr."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.sweep: Any = None  # the Sweep, once started

    def start(self, sweep, target: int | None, counts) -> None:
        self.sweep = sweep
        self.bar = _Bar(
            total=target, initial=counts.done, desc=sweep.name, unit="trial", file=self.stream,
            dynamic_ncols=True, mininterval=0.5,
            bar_format="{desc}: {n_fmt}/{total_fmt} trials |{bar:20}| {status} [{elapsed}<{remaining}]"
            if target else "{desc}: {n_fmt} trials · {status} [{elapsed}]",
        )

    def update(self, study, final: bool = False) -> None:
        if self.bar is None:
            return
        from study.ledger import count_trials

        trials = study.get_trials(deepcopy=False)
        counts = count_trials(trials)
        parts = [f"finished {counts.finished}", f"pruned {counts.pruned}", f"failed {counts.failed}"]
        if counts.running:
            parts.append(f"running {counts.running}")
        parts.append(self._best(trials))
        self.bar.status = " · ".join(p for p in parts if p)
        if counts.done > self.bar.n:
            self.bar.update(counts.done - self.bar.n)
        else:
            self.bar.refresh()
        if final:
            self.bar.close()
            self.bar = None

    def _best(self, trials) -> str:
        assert self.sweep is not None
        metrics, directions = self.sweep.metrics, self.sweep.directions
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            return ""
        if len(metrics) > 1:
            front = pareto_mask(np.array([t.values for t in complete], dtype=float), directions)
            return f"Pareto set {int(front.sum())}"
        pick = max if directions[0] == "maximize" else min
        best = pick(complete, key=lambda t: t.values[0])
        return f"best {metrics[0]} {best.values[0]:.4g} (#{best.number})"
