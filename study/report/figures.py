"""Draw the report's charts from the tables (tables.py): each function takes a table and returns a
matplotlib Figure. Nothing here reads runs or computes results."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
REGIME_COLOURS = {"underfit": "#4c72b0", "good fit": "#55a868", "overfit": "#c44e52"}
WIDE, TALL = (9, 4.2), (9, 5.2)


def _finish(fig, ax, title: str):
    ax.set_title(title, fontsize=12, loc="left")
    fig.tight_layout()
    return fig


def _regime_bands(ax, table: pd.DataFrame, log_x: bool) -> None:
    """Each knob value's most common regime as a coloured band reaching halfway to its neighbours."""
    values = table["value"].to_numpy(dtype=float)
    if len(values) < 2:
        return
    edges = np.sqrt(values[:-1] * values[1:]) if log_x else (values[:-1] + values[1:]) / 2
    first = values[0] ** 2 / edges[0] if log_x else 2 * values[0] - edges[0]
    last = values[-1] ** 2 / edges[-1] if log_x else 2 * values[-1] - edges[-1]
    left, right = np.concatenate([[first], edges]), np.concatenate([edges, [last]])
    for lo, hi, regime in zip(left, right, table["regime"]):
        ax.axvspan(lo, hi, color=REGIME_COLOURS[regime], alpha=0.10, lw=0)
    ax.set_xlim(left[0], right[-1])


def error_vs_knob(panels: list[tuple[str, pd.DataFrame, pd.DataFrame, object]], knob: str, error_name: str, log_x: bool) -> plt.Figure:
    """Training and held-out error against one knob, one panel per value of a categorical knob:
    mean and 95% interval over the runs at each value, the gap shaded, each value's regime as a
    coloured band, the sweet spot (lowest held-out error) marked.

    panels: (title, long table, knob table, sweet spot) each, from tables.knob_long/knob_table.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(max(9, 5.2 * len(panels)), 4.4), sharey=True, squeeze=False)
    for ax, (title, long, table, sweet) in zip(axes[0], panels):
        _regime_bands(ax, table, log_x)
        sns.lineplot(data=long, x="value", y="error", hue="split", style="split", markers=True, dashes=False, ax=ax,
                     palette={"train": "#4c72b0", "held-out (test)": "#dd8452"}, errorbar=("ci", 95))
        ax.fill_between(table["value"].to_numpy(dtype=float), table["train_error"], table["test_error"],
                        color="#999999", alpha=0.18, label="gap")
        if sweet is not None:
            ax.axvline(float(sweet), color="#55a868", ls="--", lw=1.5, label=f"sweet spot ({sweet:g})")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(knob)
        ax.set_ylabel(error_name)
        ax.set_title(title, fontsize=11, loc="left")
        ax.legend(fontsize=8, loc="upper right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in REGIME_COLOURS.values()]
    fig.legend(handles, [f"regime: {r}" for r in REGIME_COLOURS], loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Training and held-out error against {knob}", x=0.01, ha="left", fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def error_vs_params(errs: pd.DataFrame, error_name: str, hue: str | None) -> plt.Figure:
    """Every finished trial's training and held-out error against its parameter count."""
    fig, ax = plt.subplots(figsize=WIDE)
    data = pd.concat([
        errs.assign(split="train", error=errs["train_error"]),
        errs.assign(split="held-out (test)", error=errs["test_error"]),
    ])
    sns.scatterplot(data=data, x="metrics.model/params", y="error", hue=hue, style="split", s=60, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(error_name)
    return _finish(fig, ax, "Capacity: error against the number of parameters")


def learning_curves(curves: dict[str, pd.DataFrame], best: dict[str, int], stopped: dict[str, int]) -> plt.Figure:
    """Per-epoch training and validation loss of the picked runs; the best epoch marked (the one
    early stopping restores when it is on), and the epoch where early stopping stopped, if it did."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves) + 1, 3.8), sharey=False, squeeze=False)
    for ax, (label, frame) in zip(axes[0], curves.items()):
        for key, name, colour in (("epoch/train_loss", "train", "#4c72b0"), ("epoch/val_loss", "validation", "#dd8452")):
            if key in frame:
                ax.plot(frame["epoch"], frame[key], label=name, color=colour)
        if best.get(label):
            ax.axvline(best[label], color="#55a868", ls="--", lw=1.2, label=f"best epoch {best[label]}")
        if stopped.get(label):
            ax.axvline(stopped[label], color="#c44e52", ls=":", lw=1.5, label=f"early stopping, epoch {stopped[label]}")
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    fig.suptitle("Learning curves", x=0.02, ha="left", fontsize=12)
    fig.tight_layout()
    return fig


def decomposition(table: pd.DataFrame, knob: str | None, kind: str) -> plt.Figure:
    """Bias², variance (and noise) of the held-out error against a knob, or per trial."""
    fig, ax = plt.subplots(figsize=WIDE)
    x = f"params.{knob}" if knob and f"params.{knob}" in table else "trial"
    parts = [c for c in ("bias²", "variance", "noise", "bias", "net variance", "disagreement") if c in table and table[c].notna().any()]
    long = table.melt(id_vars=[x], value_vars=[*parts, "error"], var_name="term", value_name="value")
    sns.lineplot(data=long, x=x, y="value", hue="term", style="term", markers=True, dashes=False, ax=ax, errorbar=None)
    if kind.startswith("0-1"):
        ax.set_ylabel("share of test examples")
    ax.set_xlabel(knob or "trial")
    return _finish(fig, ax, f"Decomposition of the held-out error: {kind}")


def pareto(comp: pd.DataFrame, fronts: dict[str, pd.Series], sizes: dict[str, str], accuracy: str, base: dict) -> plt.Figure:
    """Accuracy of each compressed file against its bytes (raw and gzip), coloured by method, with
    each Pareto frontier drawn and the uncompressed base marked."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (which, column) in zip(axes, sizes.items()):
        sns.scatterplot(data=comp, x=column, y=accuracy, hue="method", style="method", s=70, ax=ax,
                        legend=which == "raw")
        front = comp[fronts[which]].sort_values(column)
        ax.step(front[column], front[accuracy], where="post", color="black", lw=1.2, label="Pareto frontier")
        if pd.notna(base.get(which)) and pd.notna(base.get("accuracy")):
            ax.scatter([base[which]], [base["accuracy"]], marker="*", s=300, color="gold", edgecolor="black", zorder=5,
                       label="uncompressed base")
        ax.set_xscale("log")
        ax.set_xlabel(f"{'file bytes' if which == 'raw' else 'gzip-compressed bytes'} (log scale)")
        ax.set_ylabel("test accuracy of the file")
        ax.set_title(f"Accuracy against {'file size' if which == 'raw' else 'compressed size'}", fontsize=11, loc="left")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def accuracy_against(comp: pd.DataFrame, x: str, xlabel: str, accuracy: str, hue: str | None, log_x=False) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11, 4.4) if hue else WIDE)
    sns.lineplot(data=comp.sort_values(x), x=x, y=accuracy, hue=hue, style=hue, markers=True, dashes=False, ax=ax, errorbar=None)
    if hue:
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, title=hue)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy of the file")
    return _finish(fig, ax, f"Accuracy against {xlabel}")


def distillation(pairs: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(pairs) + 1.8))
    long = pairs.melt(id_vars=["student"], value_vars=["distilled", "hard labels only"], var_name="training", value_name="accuracy")
    sns.barplot(data=long, y="student", x="accuracy", hue="training", ax=ax, orient="h")
    low = max(0.0, long["accuracy"].min() - 0.05)
    ax.set_xlim(low, min(1.0, long["accuracy"].max() + 0.02))
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("")
    return _finish(fig, ax, "Distilled students against the same students on hard labels")


def history(table: pd.DataFrame, metric: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=WIDE)
    ax.scatter(table["trial"], table["value"], s=25, color="#4c72b0", label=metric)
    ax.step(table["trial"], table["best so far"], where="post", color="#c44e52", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.legend(fontsize=9)
    return _finish(fig, ax, "Optimization history")


def importances(values: dict[str, float]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(values) + 1.6))
    items = sorted(values.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set_xlabel("importance (fANOVA, share of the objective's variance)")
    return _finish(fig, ax, "Parameter importances")


def durations(table: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=WIDE)
    sns.barplot(data=table, x="trial", y="seconds", hue="state", dodge=False, ax=ax)
    if len(table) > 40:
        ax.set_xticks([])
    ax.set_ylabel("seconds")
    return _finish(fig, ax, "Trial durations")
