"""Draw the report's charts from the tables (tables.py): each function takes a table and returns a
matplotlib Figure. Nothing here reads runs or computes results."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
REGIME_COLOURS = {"underfit": "#4c72b0", "good fit": "#55a868", "overfit": "#c44e52",
                  "underfit and overfit": "#8172b3", "inconclusive": "#bbbbbb"}
SPLIT_COLOURS = {"train": "#4c72b0", "held-out (test)": "#dd8452"}
WIDE, TALL = (9, 4.2), (9, 5.2)


def _finish(fig, ax, title: str):
    ax.set_title(title, fontsize=12, loc="left")
    fig.tight_layout()
    return fig


def _limits(values: np.ndarray, log_x: bool) -> tuple[float, float]:
    """x-limits a little beyond the data: a share of the range, never past zero for positive knobs."""
    lo, hi = float(values.min()), float(values.max())
    if log_x:
        return lo / 1.25, hi * 1.25
    pad = 0.08 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def _regime_bands(ax, values: np.ndarray, labels: list[str], log_x: bool, limits: tuple[float, float]) -> None:
    """Each knob value's regime as a band reaching halfway to its neighbours."""
    if len(values) < 2:
        return
    edges = np.sqrt(values[:-1] * values[1:]) if log_x else (values[:-1] + values[1:]) / 2
    left, right = np.concatenate([[limits[0]], edges]), np.concatenate([edges, [limits[1]]])
    for lo, hi, regime in zip(left, right, labels):
        ax.axvspan(lo, hi, color=REGIME_COLOURS.get(regime, "#dddddd"), alpha=0.10, lw=0)


def error_vs_knob(panels: list, knob: str, error_name: str, log_x: bool, ncols: int) -> plt.Figure:
    """Training and held-out error against one knob, one panel per series of settings (the other
    knobs held fixed): every trial a point with its 95% interval, the gap shaded, each value's
    regime as a band, the sweet spot (lowest held-out error), the interpolation threshold and a
    double-descent peak marked.

    panels: tables.Panel each (rows with value, *_error, *_low, *_high, regime).
    """
    ncols = max(1, min(ncols, len(panels)))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(9, 5.0 * ncols), 3.9 * nrows + 0.9), sharey=True, squeeze=False)
    values_all = np.concatenate([p.rows["value"].to_numpy(dtype=float) for p in panels])
    limits = _limits(values_all, log_x)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        rows = panel.rows
        x = rows["value"].to_numpy(dtype=float)
        _regime_bands(ax, x, list(rows["regime"]), log_x, limits)
        for split, prefix in (("train", "train"), ("held-out (test)", "test")):
            y = rows[f"{prefix}_error"].to_numpy(dtype=float)
            low, high = rows[f"{prefix}_low"].to_numpy(dtype=float), rows[f"{prefix}_high"].to_numpy(dtype=float)
            yerr = np.maximum(0, np.vstack([np.where(np.isfinite(low), y - low, 0), np.where(np.isfinite(high), high - y, 0)]))
            ax.errorbar(x, y, yerr=yerr, color=SPLIT_COLOURS[split], marker="o" if prefix == "train" else "s", ms=5,
                        capsize=3, lw=1.6, label=split)
        ax.fill_between(x, rows["train_error"], rows["test_error"], color="#999999", alpha=0.18, label="gap")
        if panel.sweet_spot is not None:
            ax.axvline(float(panel.sweet_spot), color="#55a868", ls="--", lw=1.4, label=f"lowest held-out error ({panel.sweet_spot:g})")
        descent = panel.descent
        if descent is not None and descent.threshold is not None:
            ax.axvline(descent.threshold, color="#8172b3", ls=":", lw=1.8, label=f"interpolation threshold ({descent.threshold:g})")
        if descent is not None and descent.peak is not None:
            peak = rows[rows["value"] == descent.peak]["test_error"].mean()
            ax.annotate("double-descent peak", (descent.peak, peak), xytext=(0, 14), textcoords="offset points",
                        ha="center", fontsize=8, arrowprops={"arrowstyle": "->", "color": "#444444"})
        if log_x:
            ax.set_xscale("log")
        ax.set_xlim(*limits)
        if len(np.unique(x)) <= 10:
            ax.set_xticks(np.unique(x))
            ax.set_xticklabels([f"{v:g}" for v in np.unique(x)])
            ax.minorticks_off()
        ax.set_xlabel(knob)
        ax.set_ylabel(error_name)
        ax.set_title(panel.title, fontsize=10, loc="left")
    handles: list = []
    labels: list[str] = []
    for ax in axes.flat[: len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            key = lab.split(" (")[0]
            if key not in [known.split(" (")[0] for known in labels]:
                handles.append(h)
                labels.append(key if "(" in lab and key != "held-out" else lab)
    seen = sorted({r for p in panels for r in p.rows["regime"]})
    handles += [plt.Rectangle((0, 0), 1, 1, color=REGIME_COLOURS.get(r, "#dddddd"), alpha=0.3) for r in seen]
    labels += [f"regime: {r}" for r in seen]
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"Training and held-out error against {knob}", x=0.01, ha="left", fontsize=12)
    rows_of_legend = int(np.ceil(len(labels) / 5))
    fig.tight_layout(rect=(0, 0.05 * rows_of_legend / nrows + 0.02, 1, 1))
    return fig


def error_scatter(errs: pd.DataFrame, knob: str, error_name: str, log_x: bool) -> plt.Figure:
    """Every trial's training and held-out error against one knob while other knobs vary too: points
    with their 95% intervals, no line and no averaging."""
    fig, ax = plt.subplots(figsize=WIDE)
    x = pd.to_numeric(errs[f"params.{knob}"], errors="coerce").to_numpy(dtype=float)
    for split, prefix in (("train", "train"), ("held-out (test)", "test")):
        y = errs[f"{prefix}_error"].to_numpy(dtype=float)
        low, high = errs[f"{prefix}_low"].to_numpy(dtype=float), errs[f"{prefix}_high"].to_numpy(dtype=float)
        yerr = np.maximum(0, np.vstack([np.where(np.isfinite(low), y - low, 0), np.where(np.isfinite(high), high - y, 0)]))
        ax.errorbar(x, y, yerr=yerr, fmt="o" if prefix == "train" else "s", color=SPLIT_COLOURS[split], ms=4,
                    capsize=2, alpha=0.8, label=split)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(knob)
    ax.set_ylabel(error_name)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _finish(fig, ax, f"Every trial against {knob} (other knobs vary)")


def effects(table: pd.DataFrame) -> plt.Figure:
    """Each remedy's main effect on training error, held-out error and the gap, with 95% intervals:
    rows remedy, quantity, effect, low, high."""
    remedies = list(dict.fromkeys(table["remedy"]))
    quantities = ["training error", "held-out error", "gap"]
    colours = {"training error": "#4c72b0", "held-out error": "#dd8452", "gap": "#777777"}
    fig, ax = plt.subplots(figsize=(9, 0.8 * len(remedies) + 1.6))
    for j, quantity in enumerate(quantities):
        rows = table[table["quantity"] == quantity].set_index("remedy").reindex(remedies)
        y = np.arange(len(remedies)) + (j - 1) * 0.22
        effect = rows["effect"].to_numpy(dtype=float)
        low, high = rows["low"].to_numpy(dtype=float), rows["high"].to_numpy(dtype=float)
        xerr = np.maximum(0, np.vstack([np.where(np.isfinite(low), effect - low, 0), np.where(np.isfinite(high), high - effect, 0)]))
        ax.errorbar(effect, y, xerr=xerr, fmt="o", color=colours[quantity], capsize=3, label=quantity)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(np.arange(len(remedies)))
    ax.set_yticklabels(remedies)
    ax.invert_yaxis()
    ax.set_xlabel("change from the knob's lowest to its highest setting (negative: lower error)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _finish(fig, ax, "Effects of the remedies, with 95% intervals over seeds")


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
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _finish(fig, ax, "Capacity: error against the number of parameters")


def error_vs_size(errs: pd.DataFrame, front: pd.Series, error_name: str, hue: str | None) -> plt.Figure:
    """Every finished trial's held-out error (with its interval) against its saved model's bytes,
    and the Pareto frontier: the trials no other beats on both."""
    fig, ax = plt.subplots(figsize=WIDE)
    size = "metrics.model/size_bytes"
    ax.errorbar(errs[size], errs["test_error"], yerr=[errs["test_error"] - errs["test_low"], errs["test_high"] - errs["test_error"]],
                fmt="none", ecolor="#999", elinewidth=1, capsize=2, zorder=1)
    sns.scatterplot(data=errs, x=size, y="test_error", hue=hue, style=hue, s=60, ax=ax, zorder=2)
    best = errs[front].sort_values(size)
    ax.step(best[size], best["test_error"], where="post", color="black", lw=1.2, label="Pareto frontier", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("saved model bytes (log scale)")
    ax.set_ylabel(f"held-out {error_name}")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _finish(fig, ax, "Accuracy against size: held-out error against the model's bytes")


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


def decomposition(panels: list[tuple[str, pd.DataFrame]], knob: str | None, kind: str, log_x: bool) -> plt.Figure:
    """The held-out error and its decomposition against a knob, one panel per series of settings,
    each term with its 95% interval; panels: (title, decomposition rows with a `value` column)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(max(9, 5.2 * len(panels)), 4.3), sharey=True, squeeze=False)
    squared = kind == "squared error"
    terms = (["bias²", "variance", "noise σ²", "measured held-out error"] if squared
             else ["bias", "net variance", "disagreement", "measured held-out error"])
    colours = ["#c44e52", "#4c72b0", "#999999", "#dd8452"]
    for ax, (title, rows) in zip(axes[0], panels):
        rows = rows.sort_values("value")
        x = rows["value"].to_numpy(dtype=float)
        for term, colour in zip(terms, colours):
            if term not in rows or not rows[term].notna().any():
                continue
            y = rows[term].to_numpy(dtype=float)
            half = rows[f"{term} ±"].to_numpy(dtype=float) if f"{term} ±" in rows else np.zeros_like(y)
            yerr = np.nan_to_num(half)
            if f"{term} low" in rows:  # an asymmetric interval (the variance's χ²)
                yerr = np.nan_to_num(np.vstack([y - rows[f"{term} low"].to_numpy(float), rows[f"{term} high"].to_numpy(float) - y]))
            ax.errorbar(x, y, yerr=yerr, marker="o", ms=4, capsize=3, color=colour, label=term,
                        ls="--" if term == "noise σ²" else "-")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(knob or "trial")
        ax.set_ylabel("mean squared error" if squared else "share of test examples")
        ax.set_title(title, fontsize=10, loc="left")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"Decomposition of the held-out error: {kind}", x=0.01, ha="left", fontsize=12)
    fig.tight_layout()
    return fig


def pareto(comp: pd.DataFrame, fronts: dict[str, pd.Series], sizes: dict[str, str], accuracy: str, base: dict) -> plt.Figure:
    """Accuracy of each compressed file against its bytes (raw and gzip), coloured by method, with
    each Pareto frontier drawn and the uncompressed base marked."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (which, column) in zip(axes, sizes.items()):
        hue = "label" if "label" in comp else "method"  # prune (channels) apart from unstructured pruning
        sns.scatterplot(data=comp, x=column, y=accuracy, hue=hue, style=hue, s=70, ax=ax, legend=which == "raw")
        front = comp[fronts[which]].sort_values(column)
        ax.step(front[column], front[accuracy], where="post", color="black", lw=1.2, label="Pareto frontier")
        if pd.notna(base.get(which)) and pd.notna(base.get("accuracy")):
            ax.scatter([base[which]], [base["accuracy"]], marker="*", s=420, facecolor="none", edgecolor="#b8860b",
                       linewidth=1.6, zorder=1, label="uncompressed base")  # hollow and behind: a file on it stays visible
        ax.set_xscale("log")
        ax.set_xlabel(f"{'file bytes' if which == 'raw' else 'gzip-compressed bytes'} (log scale)")
        ax.set_ylabel("test accuracy of the file")
        ax.set_title(f"Accuracy against {'file size' if which == 'raw' else 'compressed size'}", fontsize=11, loc="left")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def latency(timed: pd.DataFrame, accuracy: str, latency: str, spread: str | None) -> plt.Figure:
    """Accuracy of each file a runtime runs against its median single-example latency (in µs),
    with the interquartile range of the timed invokes as a horizontal bar, and the Pareto frontier."""
    fig, ax = plt.subplots(figsize=(11, 4.6))
    hue = "label" if "label" in timed else "method"
    timed = timed.assign(_us=pd.to_numeric(timed[latency], errors="coerce") * 1000)
    if spread is not None and spread in timed:
        half = pd.to_numeric(timed[spread], errors="coerce").fillna(0) * 1000 / 2
        ax.errorbar(timed["_us"], timed[accuracy], xerr=half, fmt="none", ecolor="#999", elinewidth=1, zorder=1)
    sns.scatterplot(data=timed, x="_us", y=accuracy, hue=hue, style=hue, s=70, ax=ax, zorder=2)
    front = timed[timed["front"]].sort_values("_us")
    ax.step(front["_us"], front[accuracy], where="post", color="black", lw=1.2, label="Pareto frontier")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.set_xlabel("median latency of one example, µs (LiteRT, one thread; log scale)")
    ax.set_ylabel("test accuracy of the file")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    return _finish(fig, ax, "Accuracy against latency")


def accuracy_against(comp: pd.DataFrame, x: str, xlabel: str, accuracy: str, hue: str | None, log_x=False,
                     reference: tuple[str, float] | None = None) -> plt.Figure:
    """Accuracy of each file against `x`, every point marked; `reference` (label, accuracy) draws
    a horizontal line, e.g. the float32 base's accuracy."""
    fig, ax = plt.subplots(figsize=(11, 4.4) if hue else WIDE)
    sns.lineplot(data=comp.sort_values(x), x=x, y=accuracy, hue=hue, style=hue, markers=True, dashes=False, ax=ax,
                 errorbar=None, marker=None if hue else "o", markersize=8)
    if reference is not None and pd.notna(reference[1]):
        ax.axhline(reference[1], color="#555", ls="--", lw=1, label=reference[0])
        values = [*comp[accuracy].dropna(), reference[1]]
        pad = 0.08 * (max(values) - min(values) or 0.05)
        ax.set_ylim(min(values) - pad, max(values) + pad)
    if hue or reference is not None:
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, title=hue)
    if log_x:
        ax.set_xscale("log", base=2)
        ticks = sorted(comp[x].dropna().unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy of the file")
    return _finish(fig, ax, f"Accuracy against {xlabel}")


def distillation(pairs: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(pairs) + 1.8))
    long = pairs.melt(id_vars=["student"], value_vars=["distilled", "hard labels only"], var_name="training", value_name="accuracy")
    sns.barplot(data=long, y="student", x="accuracy", hue="training", ax=ax, orient="h")
    ax.set_xlim(0.0, 1.0)  # bars start at zero: their lengths are the accuracies
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=8, padding=2)  # type: ignore[arg-type]  # seaborn's bars
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("")
    return _finish(fig, ax, "Distilled students against the same students on hard labels")


def history(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    """Each objective's value per finished trial and its best so far, a panel per objective."""
    fig, axes = plt.subplots(1, len(tables), figsize=(WIDE[0], WIDE[1]) if len(tables) == 1 else (12, 4.4), squeeze=False)
    for ax, (metric, table) in zip(axes[0], tables.items()):
        ax.scatter(table["trial"], table["value"], s=25, color="#4c72b0", label=metric)
        ax.step(table["trial"], table["best so far"], where="post", color="#c44e52", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
        ax.legend(fontsize=9)
        ax.set_title(f"Optimization history: {metric}", fontsize=11, loc="left")
    fig.tight_layout()
    return fig


def importances(by_objective: dict[str, dict[str, float]]) -> plt.Figure:
    """fANOVA importances of the searched parameters, a panel per objective."""
    longest = max(len(v) for v in by_objective.values())
    fig, axes = plt.subplots(1, len(by_objective), figsize=(9 if len(by_objective) == 1 else 12, 0.45 * longest + 1.6),
                             squeeze=False)
    for ax, (metric, values) in zip(axes[0], by_objective.items()):
        items = sorted(values.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
        ax.set_xlabel("share of the objective's variance (fANOVA)")
        ax.set_title(f"Parameter importances: {metric}", fontsize=11, loc="left")
    fig.tight_layout()
    return fig


def durations(table: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=WIDE)
    sns.barplot(data=table, x="trial", y="seconds", hue="state", dodge=False, ax=ax)
    if len(table) > 40:
        ax.set_xticks([])
    ax.set_ylabel("seconds")
    return _finish(fig, ax, "Trial durations")
