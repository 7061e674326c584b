"""Draw the report's charts from the tables (tables.py): each function takes a table and returns a
matplotlib Figure. Nothing here reads runs or computes results.

Every figure is sized for the page's column (at most MAX_WIDTH inches: the SVG is 72 pt an inch
and a CSS pixel is 3/4 pt, so 11 in is 1,056 px, within the 1,068 px column of templates/_style.html),
so the browser never shrinks it: panels wrap into rows rather than widen the figure. `_done` gives every figure the same
finish: at least three ticks on every axis (log axes labelled 30k, 100k, 1M, never "3 × 10⁴"),
labels without the runs table's `params.`/`metrics.`/`tags.` prefixes, and any layer of more than
RASTER_ABOVE points drawn as an image inside the SVG (a 10,000-trial scatter as vector paths is
megabytes of page).
"""

from __future__ import annotations

import re
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.collections import Collection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from study import names  # noqa: E402
from study.report import stats  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
PALETTE = sns.color_palette("colorblind").as_hex()  # Okabe–Ito-like: told apart under colour blindness
# The regime bands: the five colours of that palette that stay furthest apart under deuteranopia,
# protanopia and tritanopia alike, as faint bands (BAND_ALPHA over white) too (tests/test_figures.py).
REGIME_COLOURS = {"underfit": PALETTE[0], "good fit": PALETTE[8], "overfit": PALETTE[3],
                  "underfit and overfit": PALETTE[5], "inconclusive": PALETTE[7]}
SPLIT_COLOURS = {"train": PALETTE[0], "held-out (test)": PALETTE[1]}
STATE_COLOURS = {"finished": PALETTE[2], "pruned": PALETTE[1], "diverged": PALETTE[5], "failed": PALETTE[3],
                 "interrupted": PALETTE[4], "running": PALETTE[0]}
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "<", ">", "h"]
BAND_ALPHA = 0.22

MAX_WIDTH = 11.0  # inches: the page's column (templates/_style.html: body at most 1,100 px)
PANEL_WIDTH = 3.6  # the narrowest panel, in inches: its tick labels stay apart
MAX_COLUMNS = int(MAX_WIDTH // PANEL_WIDTH)  # panels side by side; more wrap into rows
WIDE = (9.0, 4.2)
LEGEND_SIZE = 9
RASTER_ABOVE = 2000  # a layer (a scatter, a line, error bars) of more points than this is an image in the SVG
RASTER_DPI = 200  # that image's resolution: sharp on a high-density screen
PREFIXED = re.compile(r"(?<![\w.])(?:params|metrics|tags)\.")  # the runs table's column prefixes
TEST_SIZE = names.column("data/test_size")


# ----------------------------------------------------------------------------------- helpers
def label(column: str | None) -> str:
    """A column's name for people: without the runs table's params./metrics./tags. prefix (anywhere
    a name starts, so a panel's 'params.model.kind = cnn' reads 'model.kind = cnn')."""
    return PREFIXED.sub("", "" if column is None else str(column))


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    """A figure no wider than the page's column, laid out by matplotlib's constrained layout (which
    makes room for legends outside the axes); axes always a 2-D array."""
    return plt.subplots(nrows, ncols, figsize=(min(width, MAX_WIDTH), height), squeeze=False, layout="constrained",
                        **kwargs)


def _grid(panels: int, wanted: int | None = None) -> tuple[int, int]:
    """(rows, columns) for `panels` panels: at most MAX_COLUMNS side by side (four make two by two)."""
    ncols = max(1, min(wanted or panels, panels, MAX_COLUMNS))
    if panels == 4 and ncols > 2:
        ncols = 2
    return int(np.ceil(panels / ncols)), ncols


def _panel_width(ncols: int) -> float:
    return WIDE[0] if ncols == 1 else MAX_WIDTH


def _wrap(text: str, inches: float, fontsize: float = 10) -> str:
    """`text` (unprefixed) broken into lines that fit `inches` at `fontsize` (about half an em a character)."""
    kept = label(text).replace(" = ", "\u00a0=\u00a0")  # a setting stays on one line with its value
    return textwrap.fill(kept, width=max(20, int(inches * 72 / (fontsize * 0.55))))


def _finish(fig, ax, title: str):
    ax.set_title(_wrap(title, fig.get_size_inches()[0] - 2.5, 12), fontsize=12, loc="left")
    return _done(fig)


def _legend_right(ax, **kwargs) -> None:
    """The axes' legend outside it, on the right (never over the data); none where nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=LEGEND_SIZE, frameon=False,
                  **kwargs)


def _seaborn_legend_right(ax, title: str | None = None) -> None:
    """Move the legend seaborn drew inside the axes to its right, with its title unprefixed."""
    if ax.get_legend() is not None:
        named = {"title": label(title)} if title else {}
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=LEGEND_SIZE, frameon=False, **named)


def _compact(value: float) -> str:
    """A tick's number, short: 0.001, 5, 300, 30k, 1.5M, 2G."""
    if value == 0:
        return "0"
    size = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _log_ticks(low: float, high: float, least: int = 3, most: int = 7) -> list[float]:
    """Ticks for a log axis from `low` to `high` (both positive): decades, or 1-3, 1-2-5 steps where
    the range is short, or plain round numbers where it is shorter still; at least `least` of them
    when the range allows, thinned to at most `most`."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 or high <= low:
        return []
    first, last = int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1
    for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0)):
        ticks = [m * 10.0**e for e in range(first, last + 1) for m in subs if low <= m * 10.0**e <= high * (1 + 1e-9)]
        if len(ticks) >= least:
            step = int(np.ceil(len(ticks) / most))
            return ticks[::step]
    locator = matplotlib.ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10], min_n_ticks=least)
    return [float(t) for t in locator.tick_values(low, high) if low <= t <= high and t > 0]


def _symlog_ticks(low: float, high: float, linthresh: float) -> list[float]:
    """0 and round numbers from the linear threshold up, for a symlog axis over non-negative knobs."""
    ticks = [0.0] if low <= 0 <= high else []
    return ticks + _log_ticks(max(low, linthresh), high, least=2)


def _ticks(axis) -> None:
    """At least three readable ticks on `axis`, unless the chart chose them (a fixed locator)."""
    locator = axis.get_major_locator()
    if isinstance(locator, matplotlib.ticker.FixedLocator):
        if axis.get_scale() != "linear":
            axis.set_minor_locator(matplotlib.ticker.NullLocator())
        return
    low, high = sorted(axis.get_view_interval())
    scale = axis.get_scale()
    if scale == "log":
        ticks = _log_ticks(low, high)
    elif scale == "symlog":
        ticks = _symlog_ticks(low, high, float(axis.get_transform().linthresh))
    else:
        if type(locator) is matplotlib.ticker.AutoLocator:
            axis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], min_n_ticks=3))
        return
    if ticks:
        axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        axis.set_major_formatter(matplotlib.ticker.FixedFormatter([_compact(t) for t in ticks]))
        axis.set_minor_locator(matplotlib.ticker.NullLocator())


def _points(artist) -> int:
    """How many points (markers, vertices, segments) an artist draws."""
    if isinstance(artist, Line2D):
        return int(np.size(artist.get_xdata(orig=False)))
    if isinstance(artist, Collection):
        return max(int(np.shape(artist.get_offsets())[0]), len(artist.get_paths()))
    return 0


def _strip_legend(legend) -> None:
    if legend is None:
        return
    legend.get_title().set_text(label(legend.get_title().get_text()))
    for text in legend.get_texts():
        text.set_text(label(text.get_text()))


def _done(fig):
    """The finish every figure gets: readable ticks, unprefixed labels and legends, dense layers as
    an image inside the SVG (RASTER_DPI), nothing wider than the page's column."""
    dense = False
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        ax.set_xlabel(label(ax.get_xlabel()))
        ax.set_ylabel(label(ax.get_ylabel()))
        _ticks(ax.xaxis)
        _ticks(ax.yaxis)
        _strip_legend(ax.get_legend())
        artists = [*ax.collections, *ax.lines]
        for artist in artists:
            if _points(artist) > RASTER_ABOVE:
                artist.set_rasterized(True)
                dense = True
        if len(ax.patches) > RASTER_ABOVE:  # bars, one trial each
            for patch in ax.patches:
                patch.set_rasterized(True)  # consecutive rasterized artists share one image
            dense = True
    for legend in fig.legends:
        _strip_legend(legend)
    width, height = fig.get_size_inches()
    if width > MAX_WIDTH:
        fig.set_size_inches(MAX_WIDTH, height)
    if dense:
        fig.set_dpi(RASTER_DPI)
    return fig


# ------------------------------------------------------------------------------- knob axes
def _knob_scale(values: np.ndarray, log_x: bool) -> tuple[str, float]:
    """How to draw a knob's axis: ('log', 0) when the tables chose log; ('symlog', the smallest
    positive value) when it takes 0 and positive values a decade or more apart (an L2 penalty of
    0, 1e-4, 1e-3: on a linear axis 0 and 1e-4 coincide); else ('linear', 0)."""
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if log_x and len(positive) == len(finite) and len(positive):
        return "log", 0.0
    if len(positive) >= 2 and (finite >= 0).all() and (finite == 0).any() and positive.max() / positive.min() >= 10:
        return "symlog", float(positive.min())
    return "linear", 0.0


def _set_knob_scale(ax, scale: tuple[str, float]) -> None:
    kind, linthresh = scale
    if kind == "log":
        ax.set_xscale("log")
    elif kind == "symlog":
        ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)


def _limits(ax, values: np.ndarray) -> tuple[float, float]:
    """x-limits a little beyond the data, measured along the axis as drawn (log, symlog or linear)."""
    transform = ax.xaxis.get_transform()
    finite = values[np.isfinite(values)]
    ends = transform.transform(np.array([finite.min(), finite.max()], dtype=float))
    pad = 0.06 * (ends[1] - ends[0]) if ends[1] > ends[0] else 0.5
    low, high = transform.inverted().transform(np.array([ends[0] - pad, ends[1] + pad]))
    return float(low), float(high)


def _regime_bands(ax, values: np.ndarray, labels: list[str], limits: tuple[float, float]) -> None:
    """Each knob value's regime as a band reaching halfway (along the axis as drawn) to its neighbours."""
    if len(values) < 2:
        return
    transform = ax.xaxis.get_transform()
    drawn = transform.transform(values.astype(float))
    edges = transform.inverted().transform((drawn[:-1] + drawn[1:]) / 2)
    left, right = np.concatenate([[limits[0]], edges]), np.concatenate([edges, [limits[1]]])
    for lo, hi, regime in zip(left, right, labels):
        ax.axvspan(lo, hi, color=REGIME_COLOURS.get(regime, "#dddddd"), alpha=BAND_ALPHA, lw=0)


def _value_ticks(ax, values: np.ndarray) -> None:
    """Ticks at the knob's own values where there are few and they lie apart on the axis as drawn."""
    unique = np.unique(values[np.isfinite(values)])
    if not 2 <= len(unique) <= 8:
        return
    drawn = ax.xaxis.get_transform().transform(unique)
    low, high = ax.xaxis.get_transform().transform(np.array(sorted(ax.get_xlim())))
    if np.diff(drawn).min() < 0.08 * (high - low):
        return  # crowded: _done's locator instead
    ax.set_xticks(unique, [_compact(v) for v in unique])
    ax.minorticks_off()


def _yerr(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.maximum(0, np.vstack([np.where(np.isfinite(low), y - low, 0), np.where(np.isfinite(high), high - y, 0)]))


# ---------------------------------------------------------------------------- bias–variance
def error_vs_knob(panels: list, knob: str, error_name: str, log_x: bool, ncols: int) -> plt.Figure:
    """Training and held-out error against one knob, one panel per series of settings (the other
    knobs held fixed): every trial a point with its 95% interval, the gap shaded, each value's
    regime as a band, the sweet spot (lowest held-out error), the interpolation threshold and a
    double-descent peak marked. Panels wrap into rows of at most MAX_COLUMNS.

    panels: tables.Panel each (rows with value, *_error, *_low, *_high, regime).
    """
    knob = label(knob)
    nrows, ncols = _grid(len(panels), ncols)
    width = _panel_width(ncols)
    fig, axes = _figure(width, 3.3 * nrows + 1.3, nrows, ncols, sharey=True)
    values_all = np.concatenate([p.rows["value"].to_numpy(dtype=float) for p in panels])
    scale = _knob_scale(values_all, log_x)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        rows = panel.rows
        x = rows["value"].to_numpy(dtype=float)
        _set_knob_scale(ax, scale)
        limits = _limits(ax, values_all)
        _regime_bands(ax, x, list(rows["regime"]), limits)
        for split, prefix in (("train", "train"), ("held-out (test)", "test")):
            y = rows[f"{prefix}_error"].to_numpy(dtype=float)
            low, high = rows[f"{prefix}_low"].to_numpy(dtype=float), rows[f"{prefix}_high"].to_numpy(dtype=float)
            ax.errorbar(x, y, yerr=_yerr(y, low, high), color=SPLIT_COLOURS[split], marker="o" if prefix == "train" else "s",
                        ms=5, capsize=3, lw=1.6, label=split)
        ax.fill_between(x, rows["train_error"], rows["test_error"], color="#999999", alpha=0.18, label="gap")
        if panel.sweet_spot is not None:
            ax.axvline(float(panel.sweet_spot), color=PALETTE[2], ls="--", lw=1.4, label=f"lowest held-out error ({panel.sweet_spot:g})")
        descent = panel.descent
        if descent is not None and descent.threshold is not None:
            ax.axvline(descent.threshold, color=PALETTE[4], ls=":", lw=1.8, label=f"interpolation threshold ({descent.threshold:g})")
        if descent is not None and descent.peak is not None:
            peak = rows[rows["value"] == descent.peak]["test_error"].mean()
            ax.annotate("double-descent peak", (descent.peak, peak), xytext=(0, 14), textcoords="offset points",
                        ha="center", fontsize=8, arrowprops={"arrowstyle": "->", "color": "#444444"})
        ax.set_xlim(*limits)
        _value_ticks(ax, x)
        ax.set_xlabel(knob)
        ax.set_ylabel(error_name)
        ax.set_title(_wrap(panel.title, width / ncols - 0.4), fontsize=10, loc="left")
    handles: list = []
    labels: list[str] = []
    for ax in axes.flat[: len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            key = lab.split(" (")[0]
            if key not in [known.split(" (")[0] for known in labels]:
                handles.append(h)
                labels.append(key if "(" in lab and key != "held-out" else lab)
    seen = sorted({r for p in panels for r in p.rows["regime"]})
    handles += [plt.Rectangle((0, 0), 1, 1, color=REGIME_COLOURS.get(r, "#dddddd"), alpha=2 * BAND_ALPHA) for r in seen]
    labels += [f"regime: {r}" for r in seen]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=LEGEND_SIZE, frameon=False)
    fig.suptitle(f"Training and held-out error against {knob}", x=0.01, ha="left", fontsize=12)
    return _done(fig)


def error_scatter(errs: pd.DataFrame, knob: str, error_name: str, log_x: bool) -> plt.Figure:
    """Every trial's training and held-out error against one knob while other knobs vary too: points
    with their 95% intervals, no line and no averaging."""
    fig, axes = _figure(*WIDE)
    ax = axes[0][0]
    x = pd.to_numeric(errs[f"params.{knob}"], errors="coerce").to_numpy(dtype=float)
    _set_knob_scale(ax, _knob_scale(x, log_x))
    dense = len(errs) > RASTER_ABOVE
    for split, prefix in (("train", "train"), ("held-out (test)", "test")):
        y = errs[f"{prefix}_error"].to_numpy(dtype=float)
        low, high = errs[f"{prefix}_low"].to_numpy(dtype=float), errs[f"{prefix}_high"].to_numpy(dtype=float)
        ax.errorbar(x, y, yerr=_yerr(y, low, high), fmt="o" if prefix == "train" else "s", color=SPLIT_COLOURS[split],
                    ms=3 if dense else 4, capsize=0 if dense else 2, elinewidth=0.6 if dense else 1.0,
                    alpha=0.5 if dense else 0.8, label=split)
    if np.isfinite(x).any():
        ax.set_xlim(*_limits(ax, x))
        _value_ticks(ax, x)
    ax.set_xlabel(label(knob))
    ax.set_ylabel(error_name)
    _legend_right(ax)
    return _finish(fig, ax, f"Every trial against {label(knob)} (other knobs vary)")


def effects(table: pd.DataFrame) -> plt.Figure:
    """Each remedy's main effect on training error, held-out error and the gap, with 95% intervals:
    rows remedy, quantity, effect, low, high."""
    remedies = list(dict.fromkeys(table["remedy"]))
    quantities = ["training error", "held-out error", "gap"]
    colours = {"training error": SPLIT_COLOURS["train"], "held-out error": SPLIT_COLOURS["held-out (test)"], "gap": "#555555"}
    fig, axes = _figure(9, 0.8 * len(remedies) + 1.8)
    ax = axes[0][0]
    for j, quantity in enumerate(quantities):
        rows = table[table["quantity"] == quantity].set_index("remedy").reindex(remedies)
        y = np.arange(len(remedies)) + (j - 1) * 0.22
        effect = rows["effect"].to_numpy(dtype=float)
        low, high = rows["low"].to_numpy(dtype=float), rows["high"].to_numpy(dtype=float)
        ax.errorbar(effect, y, xerr=_yerr(effect, low, high), fmt="o", color=colours[quantity], capsize=3, label=quantity)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(np.arange(len(remedies)), [label(r) for r in remedies])
    ax.invert_yaxis()
    ax.set_xlabel("change from the knob's lowest to its highest setting (negative: lower error)")
    _legend_right(ax)
    return _finish(fig, ax, "Effects of the remedies, with 95% intervals over seeds")


def _unprefixed(frame: pd.DataFrame, hue: str | None) -> tuple[pd.DataFrame, str | None]:
    """`frame` with the hue column named for people (seaborn writes the column's name in the legend)."""
    if hue is None or hue not in frame or label(hue) == hue:
        return frame, hue
    return frame.rename(columns={hue: label(hue)}), label(hue)


def error_vs_params(errs: pd.DataFrame, error_name: str, hue: str | None) -> plt.Figure:
    """Every finished trial's training and held-out error against its parameter count."""
    fig, axes = _figure(*WIDE)
    ax = axes[0][0]
    data = pd.concat([
        errs.assign(split="train", error=errs["train_error"]),
        errs.assign(split="held-out (test)", error=errs["test_error"]),
    ])
    data, hue = _unprefixed(data, hue)
    dense = len(data) > RASTER_ABOVE
    sns.scatterplot(data=data, x=names.column("model/params"), y="error", hue=hue, style="split", s=20 if dense else 60,
                    alpha=0.6 if dense else 1.0, palette="colorblind" if hue else None, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(error_name)
    _seaborn_legend_right(ax)
    return _finish(fig, ax, "Capacity: error against the number of parameters")


def error_vs_size(errs: pd.DataFrame, front: pd.Series, error_name: str, hue: str | None) -> plt.Figure:
    """Every finished trial's held-out error (with its interval) against its saved model's bytes,
    and the Pareto frontier: the trials no other beats on both."""
    fig, axes = _figure(*WIDE)
    ax = axes[0][0]
    size = names.column("model/size_bytes")
    ax.errorbar(errs[size], errs["test_error"], yerr=[errs["test_error"] - errs["test_low"], errs["test_high"] - errs["test_error"]],
                fmt="none", ecolor="#999", elinewidth=1, capsize=2, zorder=1)
    data, hue = _unprefixed(errs, hue)
    dense = len(data) > RASTER_ABOVE
    sns.scatterplot(data=data, x=size, y="test_error", hue=hue, style=hue, s=20 if dense else 60,
                    palette="colorblind" if hue else None, ax=ax, zorder=2)
    best = errs[front].sort_values(size)
    ax.step(best[size], best["test_error"], where="post", color="black", lw=1.2, label="Pareto frontier", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("saved model bytes (log scale)")
    ax.set_ylabel(f"held-out {error_name}")
    _legend_right(ax, title=hue)
    return _finish(fig, ax, "Accuracy against size: held-out error against the model's bytes")


def learning_curves(curves: dict[str, pd.DataFrame], best: dict[str, int], stopped: dict[str, int]) -> plt.Figure:
    """Per-epoch training and validation loss of the picked runs; the best epoch marked (the one
    early stopping restores when it is on), and the epoch where early stopping stopped, if it did."""
    nrows, ncols = _grid(len(curves))
    width = min(MAX_WIDTH, max(6.0, PANEL_WIDTH * ncols + 0.4))
    fig, axes = _figure(width, 3.5 * nrows + 0.6, nrows, ncols)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    for ax, (title, frame) in zip(axes.flat, curves.items()):
        for key, name, colour in (("epoch/train_loss", "train", SPLIT_COLOURS["train"]),
                                  ("epoch/val_loss", "validation", SPLIT_COLOURS["held-out (test)"])):
            if key in frame:
                ax.plot(frame["epoch"], frame[key], label=name, color=colour)
        if best.get(title):
            ax.axvline(best[title], color=PALETTE[2], ls="--", lw=1.2, label=f"best epoch {best[title]}")
        if stopped.get(title):
            ax.axvline(stopped[title], color=PALETTE[3], ls=":", lw=1.5, label=f"early stopping, epoch {stopped[title]}")
        ax.set_title(_wrap(title, width / ncols - 0.4, 11), fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2, fontsize=LEGEND_SIZE - 1,
                      frameon=False)
    fig.suptitle("Learning curves", x=0.01, ha="left", fontsize=12)
    return _done(fig)


def decomposition(panels: list[tuple[str, pd.DataFrame]], knob: str | None, kind: str, log_x: bool) -> plt.Figure:
    """The held-out error and its decomposition against a knob, one panel per series of settings
    (wrapped into rows of at most MAX_COLUMNS), each term with its 95% interval; panels: (title,
    decomposition rows with a `value` column)."""
    nrows, ncols = _grid(len(panels))
    width = _panel_width(ncols)
    fig, axes = _figure(width, 3.3 * nrows + 1.2, nrows, ncols, sharey=True)
    squared = kind == "squared error"
    terms = (["bias²", "variance", "noise σ²", "measured held-out error"] if squared
             else ["bias", "net variance", "disagreement", "measured held-out error"])
    colours = [PALETTE[3], PALETTE[0], "#777777", PALETTE[1]]
    values_all = np.concatenate([rows["value"].to_numpy(dtype=float) for _, rows in panels])
    scale = _knob_scale(values_all, log_x)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, rows) in zip(axes.flat, panels):
        rows = rows.sort_values("value")
        x = rows["value"].to_numpy(dtype=float)
        _set_knob_scale(ax, scale)
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
        if np.isfinite(values_all).any():
            ax.set_xlim(*_limits(ax, values_all))
        _value_ticks(ax, x)
        ax.set_xlabel(label(knob) or "trial")
        ax.set_ylabel("mean squared error" if squared else "share of test examples")
        ax.set_title(_wrap(title, width / ncols - 0.4), fontsize=10, loc="left")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=LEGEND_SIZE, frameon=False)
    fig.suptitle(f"Decomposition of the held-out error: {kind}", x=0.01, ha="left", fontsize=12)
    return _done(fig)


# ------------------------------------------------------------------------------ compression
def pareto(comp: pd.DataFrame, fronts: dict[str, pd.Series], sizes: dict[str, str], accuracy: str, base: dict) -> plt.Figure:
    """Accuracy of each compressed file against its bytes (raw and gzip), coloured by method, with
    each Pareto frontier drawn and the uncompressed base marked; one legend, right of both."""
    fig, axes = _figure(MAX_WIDTH, 4.6, 1, 2, sharey=True)
    hue = "label" if "label" in comp else "method"  # prune (channels) apart from unstructured pruning
    for ax, (which, column) in zip(axes[0], sizes.items()):
        sns.scatterplot(data=comp, x=column, y=accuracy, hue=hue, style=hue, s=70, palette="colorblind", ax=ax,
                        legend=which == "raw")
        front = comp[fronts[which]].sort_values(column)
        ax.step(front[column], front[accuracy], where="post", color="black", lw=1.2, label="Pareto frontier")
        if pd.notna(base.get(which)) and pd.notna(base.get("accuracy")):
            ax.scatter([base[which]], [base["accuracy"]], marker="*", s=420, facecolor="none", edgecolor="#b8860b",
                       linewidth=1.6, zorder=1, label="uncompressed base")  # hollow and behind: a file on it stays visible
        ax.set_xscale("log")
        ax.set_xlabel(f"{'file bytes' if which == 'raw' else 'gzip-compressed bytes'} (log scale)")
        ax.set_ylabel("test accuracy of the file")
        ax.set_title(f"Accuracy against {'file size' if which == 'raw' else 'compressed size'}", fontsize=11, loc="left")
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend = axes[0][0].get_legend()
    if legend is not None:
        legend.remove()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=LEGEND_SIZE, frameon=False, title="method")
    return _done(fig)


def latency(timed: pd.DataFrame, accuracy: str, latency: str, spread: str | None) -> plt.Figure:
    """Accuracy of each file a runtime runs against its median single-example latency (in µs),
    with the interquartile range of the timed invokes as a horizontal bar, and the Pareto frontier."""
    fig, axes = _figure(MAX_WIDTH, 4.6)
    ax = axes[0][0]
    hue = "label" if "label" in timed else "method"
    timed = timed.assign(_us=pd.to_numeric(timed[latency], errors="coerce") * 1000)
    if spread is not None and spread in timed:
        half = pd.to_numeric(timed[spread], errors="coerce").fillna(0) * 1000 / 2
        ax.errorbar(timed["_us"], timed[accuracy], xerr=half, fmt="none", ecolor="#999", elinewidth=1, zorder=1)
    sns.scatterplot(data=timed, x="_us", y=accuracy, hue=hue, style=hue, s=70, palette="colorblind", ax=ax, zorder=2)
    front = timed[timed["front"]].sort_values("_us")
    ax.step(front["_us"], front[accuracy], where="post", color="black", lw=1.2, label="Pareto frontier")
    ax.set_xscale("log")
    ax.set_xlabel("median latency of one example, µs (LiteRT, one thread; log scale)")
    ax.set_ylabel("test accuracy of the file")
    _legend_right(ax, title="method")
    return _finish(fig, ax, "Accuracy against latency")


def attainment(fronts: list) -> plt.Figure:
    """Each method's front per base (thin steps) and its attainment band over the bases (shaded
    from what every base attained to what at least one did, the median as a line), a panel per
    cost (compressed.Fronts: gzip bytes, latency); dashed: the reference point of the hypervolumes."""
    ncols = min(len(fronts), MAX_COLUMNS)
    fig, axes = _figure(MAX_WIDTH, 4.6, 1, ncols, sharey=True)
    labels = sorted({m for f in fronts for m in f.by_method})
    for ax, f in zip(axes[0], fronts):
        scale = 1000.0 if f.name == "latency" else 1.0  # latency in µs
        for m in f.by_method:
            colour = PALETTE[labels.index(m) % len(PALETTE)]
            band = f.bands[m]
            costs = band.costs * scale
            for row in band.attained:
                ax.step(costs, row, where="post", color=colour, lw=0.7, alpha=0.45)
            ax.fill_between(costs, band.worst, band.best, step="post", color=colour, alpha=BAND_ALPHA, lw=0)
            ax.step(costs, band.median, where="post", color=colour, lw=2, label=f"{m} ({len(band.attained)} bases)")
        ax.axvline(f.reference[1] * scale, color="#555", ls="--", lw=1)
        ax.axhline(f.reference[0], color="#555", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("median latency of one example, µs (log scale)" if f.name == "latency" else f"{f.name} (log scale)")
        ax.set_ylabel("test accuracy of the file")
        ax.set_title(f"Fronts over bases: {f.name}", fontsize=11, loc="left")
    handles, names_ = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names_, loc="outside right upper", fontsize=LEGEND_SIZE, frameon=False, title="method")
    return _done(fig)


def _jittered(x: np.ndarray, order: np.ndarray, ax) -> np.ndarray:
    """x spread a little (along the axis as drawn) where several files share a value, so that each
    file keeps its own marker; `order` ranks the files within a value."""
    transform = ax.xaxis.get_transform()
    drawn = transform.transform(x)
    finite = drawn[np.isfinite(drawn)]
    span = float(finite.max() - finite.min()) if len(finite) else 0.0
    step = 0.025 * (span or 1.0)
    out = drawn.copy()
    for value in np.unique(x[np.isfinite(x)]):
        at = np.flatnonzero(x == value)
        if len(at) > 1:
            ranks = np.argsort(np.argsort(order[at]))
            out[at] = drawn[at] + (ranks - (len(at) - 1) / 2) * step
    return transform.inverted().transform(out)


def accuracy_against(comp: pd.DataFrame, x: str, xlabel: str, accuracy: str, hue: str | None, log_x=False,
                     reference: tuple[str, float] | None = None) -> plt.Figure:
    """Accuracy of each file against `x`, every file its own marker (never averaged with others at
    the same x: those are spread a little sideways), with its 95% interval where the frame has the
    test set's size (Wilson's, over `metrics.data/test_size` examples); a line joins a series only
    where no two of its files share an x. Without `hue`, files are told apart by their `kind` (the
    file's format) where the frame has one. `reference` (label, accuracy) draws a horizontal line,
    e.g. the float32 base's accuracy."""
    comp = comp[pd.to_numeric(comp[x], errors="coerce").notna() & pd.to_numeric(comp[accuracy], errors="coerce").notna()]
    if hue is None and "kind" in comp and comp["kind"].nunique() > 1:
        hue = "kind"
    fig, axes = _figure(MAX_WIDTH if hue else WIDE[0], 4.4)
    ax = axes[0][0]
    if log_x:
        ax.set_xscale("log", base=2)
    xs = pd.to_numeric(comp[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(comp[accuracy], errors="coerce").to_numpy(dtype=float)
    groups = comp[hue].fillna("?").astype(str).to_numpy() if hue else np.full(len(comp), "")
    series = list(dict.fromkeys(sorted(groups)))
    order = np.array([series.index(g) for g in groups], dtype=float) + ys / 10  # by series, then by accuracy
    jittered = _jittered(xs, order, ax) if len(xs) else xs
    sizes = pd.to_numeric(comp[TEST_SIZE], errors="coerce").to_numpy(dtype=float) if TEST_SIZE in comp else None
    lows, highs = np.full(len(ys), np.nan), np.full(len(ys), np.nan)
    if sizes is not None:
        for i, (rate, n) in enumerate(zip(ys, sizes)):
            lows[i], highs[i] = stats.wilson(float(rate), float(n))
    for k, name in enumerate(series):
        at = np.flatnonzero(groups == name)
        colour = PALETTE[k % len(PALETTE)]
        ax.errorbar(jittered[at], ys[at], yerr=_yerr(ys[at], lows[at], highs[at]), fmt=MARKERS[k % len(MARKERS)], ms=7,
                    color=colour, capsize=3, elinewidth=1.2, ls="none", label=name or None)
        if len(at) > 1 and len(np.unique(xs[at])) == len(at):  # a series along x: joined, nothing averaged
            line = at[np.argsort(xs[at])]
            ax.plot(jittered[line], ys[line], color=colour, lw=1.2, alpha=0.7)
    values = [*ys, *lows[np.isfinite(lows)], *highs[np.isfinite(highs)]]
    if reference is not None and pd.notna(reference[1]):
        ax.axhline(reference[1], color="#555", ls="--", lw=1, label=reference[0])
        values.append(reference[1])
    if values:
        pad = 0.08 * (max(values) - min(values) or 0.05)
        ax.set_ylim(min(values) - pad, max(values) + pad)
    if log_x and len(xs):
        ticks = sorted(set(xs[np.isfinite(xs)]))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy of the file" + ("\n(bars: 95% interval, test set)" if np.isfinite(lows).any() else ""))
    _legend_right(ax, title=("method" if hue == "label" else label(hue)) if hue else None)
    return _finish(fig, ax, f"Accuracy against {xlabel}")


def controls(table: pd.DataFrame) -> plt.Figure:
    """Each setting's files against each of their controls: one marker per file (its test accuracy
    minus its own seed's control's), the mean difference with its 95% interval over the seeds as a
    bar, and zero (no better than the control) as a line. A row per (setting, control)."""
    fig, axes = _figure(MAX_WIDTH, 0.42 * len(table) + 1.6)
    ax = axes[0][0]
    kinds = list(dict.fromkeys(table["control"]))
    for row_index, (_, row) in enumerate(table.iterrows()):
        y = len(table) - 1 - row_index
        k = kinds.index(row["control"])
        colour = PALETTE[k % len(PALETTE)]
        if np.isfinite(row["low"]):
            ax.plot([row["low"], row["high"]], [y, y], color=colour, lw=2.2, alpha=0.55, solid_capstyle="butt")
        ax.plot([row["file − control"]], [y], marker="|", ms=14, color=colour)
        values = np.asarray(row["differences"], dtype=float)
        ax.scatter(values, np.full(len(values), y), marker=MARKERS[k % len(MARKERS)], s=28, color=colour, zorder=3,
                   label=row["control"] if row["control"] not in ax.get_legend_handles_labels()[1] else None)
    ax.axvline(0.0, color="#555", ls="--", lw=1)
    labels = [f"trial {r['trial']}: {r['file']}" + (f" ({r['settings']})" if r["settings"] else "")
              for _, r in table.iterrows()]
    ax.set_yticks(range(len(table) - 1, -1, -1), [_wrap(text, 3.6, 8) for text in labels], fontsize=8)
    ax.set_xlabel("test accuracy of the file − its control's (same seed, same base)")
    _legend_right(ax, title="compared with")
    return _finish(fig, ax, "Each file against its controls")


def distillation(pairs: pd.DataFrame) -> plt.Figure:
    fig, axes = _figure(9, 0.5 * len(pairs) + 1.9)
    ax = axes[0][0]
    long = pairs.melt(id_vars=["student"], value_vars=["distilled", "hard labels only"], var_name="training", value_name="accuracy")
    sns.barplot(data=long, y="student", x="accuracy", hue="training", ax=ax, orient="h", palette="colorblind")
    ax.set_xlim(0.0, 1.0)  # bars start at zero: their lengths are the accuracies
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("")
    _seaborn_legend_right(ax, "training")
    return _finish(fig, ax, "Distilled students against the same students on hard labels")


# ------------------------------------------------------------------------------------ study
def history(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    """Each objective's value per finished trial and its best so far, a panel per objective."""
    nrows, ncols = _grid(len(tables))
    width = _panel_width(ncols)
    fig, axes = _figure(width, 3.6 * nrows + 0.8, nrows, ncols)
    for ax in axes.flat[len(tables):]:
        ax.set_visible(False)
    for ax, (metric, table) in zip(axes.flat, tables.items()):
        dense = len(table) > RASTER_ABOVE
        ax.scatter(table["trial"], table["value"], s=6 if dense else 25, alpha=0.5 if dense else 1.0,
                   color=PALETTE[0], label="finished trial", lw=0)
        ax.step(table["trial"], table["best so far"], where="post", color=PALETTE[3], label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(_wrap(metric, 3.0, 12))
        ax.set_title(f"Optimization history: {metric}", fontsize=11 if ncols < 3 else 10, loc="left")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=LEGEND_SIZE, frameon=False)
    return _done(fig)


def importances(by_objective: dict[str, dict[str, float]]) -> plt.Figure:
    """fANOVA importances of the searched parameters, a panel per objective."""
    longest = max(len(v) for v in by_objective.values())
    nrows, ncols = _grid(len(by_objective))
    width = _panel_width(ncols)
    fig, axes = _figure(width, (0.45 * longest + 1.4) * nrows, nrows, ncols)
    for ax in axes.flat[len(by_objective):]:
        ax.set_visible(False)
    for ax, (metric, values) in zip(axes.flat, by_objective.items()):
        items = sorted(values.items(), key=lambda kv: kv[1])
        ax.barh([label(k) for k, _ in items], [v for _, v in items], color=PALETTE[0])
        ax.set_xlabel("share of the objective's variance (fANOVA)")
        ax.set_title(_wrap(f"Parameter importances: {metric}", width / ncols - 0.4, 11), fontsize=11, loc="left")
    return _done(fig)


def durations(table: pd.DataFrame, pack: int | None = None) -> plt.Figure:
    """Each trial's run, start to end, a bar per trial coloured by its state. Trials trained
    together in a pack open and close their runs with the pack, so each shows the whole pack's
    time; `pack` (the sweep's models per pack; None: not known) says so on the axis."""
    fig, axes = _figure(*WIDE)
    ax = axes[0][0]
    table = table.dropna(subset=["trial", "seconds"])
    for k, (state, rows) in enumerate(table.groupby("state", sort=True)):
        x, seconds = rows["trial"].to_numpy(dtype=float), rows["seconds"].to_numpy(dtype=float)
        colour = STATE_COLOURS.get(str(state), PALETTE[(k + 5) % len(PALETTE)])
        if len(table) > RASTER_ABOVE:  # thousands of bars: one collection of lines, drawn as an image
            ax.vlines(x, 0, seconds, colors=colour, lw=0.6, label=str(state))
        else:
            ax.bar(x, seconds, width=0.9, color=colour, label=str(state), lw=0)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins="auto", integer=True, min_n_ticks=3))
    ax.set_xlabel("trial")
    said = "seconds, run start to end"
    if pack != 1:
        packs = f"a pack of up to {pack} models" if pack else "one pack"
        said += f"\n(trials trained in {packs}\nall show the pack's time)"
    ax.set_ylabel(said, fontsize=11)
    _legend_right(ax, title="state")
    return _finish(fig, ax, "Trial durations")
