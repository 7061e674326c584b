"""The report's figures are legible in the page (issue 24): sized for its column, ticks that do
not collide, labels without the runs table's prefixes, legends off the data, each file its own
point with its interval, colours told apart under colour blindness, and dense layers drawn as an
image inside the SVG. Hand-made tables: no TensorFlow, no store."""

from __future__ import annotations

import io
import itertools
import re
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.category import StrCategoryLocator
from matplotlib.ticker import FixedLocator

from study.report import figures, stats

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store

RNG = np.random.default_rng(0)
ACCURACY, BITS = "metrics.artifact/test_accuracy", "metrics.artifact/bits"
SIZE = {"raw": "metrics.artifact/size_bytes", "gzip": "metrics.artifact/gzip_bytes"}


# --------------------------------------------------------------------------------- tables
def errs_frame(n: int, knob: str = "model.width", values=(4, 16, 64, 256), hue_values=("mlp", "cnn")) -> pd.DataFrame:
    """Finished trials as sections.BiasVariance.errs has them: errors, intervals, regimes, params."""
    x = RNG.choice(values, n).astype(float)
    train = RNG.uniform(0.0, 0.3, n)
    test = train + RNG.uniform(0.0, 0.2, n)
    return pd.DataFrame({
        f"params.{knob}": x, "params.model.kind": RNG.choice(hue_values, n), "trial": np.arange(n),
        "train_error": train, "train_low": train - 0.01, "train_high": train + 0.01,
        "test_error": test, "test_low": test - 0.02, "test_high": test + 0.02,
        "metrics.model/params": x * 40 + RNG.integers(0, 30, n),
        "metrics.model/size_bytes": 30_000 + 20_000 * RNG.random(n),  # 3 × 10⁴ to 5 × 10⁴: one decade's ticks collide
        "regime": RNG.choice(["underfit", "good fit", "overfit"], n),
    })


def panel(title: str, values, regime="good fit") -> SimpleNamespace:
    """A tables.Panel: a series along the knob with every other knob held."""
    values = np.asarray(values, dtype=float)
    train = np.linspace(0.3, 0.0, len(values))
    test = train + 0.1
    rows = pd.DataFrame({"value": values, "train_error": train, "train_low": train - 0.02, "train_high": train + 0.02,
                         "test_error": test, "test_low": test - 0.03, "test_high": test + 0.03,
                         "regime": [regime, "overfit", "underfit", "inconclusive", "underfit and overfit"][: len(values)]})
    return SimpleNamespace(title=title, rows=rows, sweet_spot=float(values[-1]), descent=None)


def decomposition_panels(count: int) -> list[tuple[str, pd.DataFrame]]:
    panels = []
    for k in range(count):
        value = np.array([4.0, 16.0, 64.0, 256.0])
        bias = np.array([0.4, 0.2, 0.1, 0.05])
        panels.append((f"params.model.kind = cnn, model.dropout = {k / 10}", pd.DataFrame({
            "value": value, "bias²": bias, "bias² ±": 0.01, "variance": bias / 2, "variance low": bias / 3,
            "variance high": bias, "noise σ²": 0.1, "measured held-out error": bias * 1.5 + 0.1})))
    return panels


def compression_frame() -> pd.DataFrame:
    """Compressed files: three 8-bit schemes share x = 8 (the bits chart must not average them)."""
    rows = [("quantize", "int8 weights", 8, 0.876, 30_000), ("quantize", "int8 full", 8, 0.874, 29_000),
            ("quantize", "float16", 16, 0.878, 60_000), ("quantize", "qpack 4-bit", 4, 0.873, 16_000),
            ("quantize", "qpack 2-bit", 2, 0.80, 9_000), ("prune", "pruned", 32, 0.87, 110_000),
            ("none", "float32", 32, 0.877, 120_000)]
    frame = pd.DataFrame(rows, columns=["method", "kind", BITS, ACCURACY, SIZE["raw"]])
    frame[SIZE["gzip"]] = frame[SIZE["raw"]] * 0.7
    frame["label"] = frame["method"]
    frame["metrics.data/test_size"] = 10_000.0
    frame["metrics.artifact/latency_ms"] = [0.041, 0.043, 0.048, np.nan, np.nan, 0.052, 0.055]  # one decade: one tick
    frame["metrics.artifact/latency_iqr_ms"] = 0.002
    return frame


def timed_frame() -> pd.DataFrame:
    timed = compression_frame().dropna(subset=["metrics.artifact/latency_ms"]).reset_index(drop=True)
    timed["front"] = [True, False, True, False, False]
    return timed


def quantized_frame() -> pd.DataFrame:
    comp = compression_frame()
    return comp[comp["method"] == "quantize"].reset_index(drop=True)


def builders() -> dict:
    """Every chart of the report, built from hand-made tables like the ones render.py passes."""
    errs = errs_frame(60)
    comp = compression_frame()
    fronts = {which: pd.Series([True, False, True, True, True, False, False]) for which in SIZE}
    history = pd.DataFrame({"trial": np.arange(30), "value": RNG.random(30)})
    history["best so far"] = history["value"].cummax()
    curves = {f"{which} (trial {k})": pd.DataFrame({"epoch": np.arange(1, 21), "epoch/train_loss": np.linspace(2, 0.2, 20),
                                                    "epoch/val_loss": np.linspace(2, 0.5, 20)})
              for k, which in enumerate(["most underfit", "best", "most overfit"])}
    return {
        "error-vs-knob": lambda: figures.error_vs_knob(
            [panel(f"model.kind = {kind}, model.dropout = {d}", [4, 16, 64, 256]) for kind in ("mlp", "cnn") for d in (0.0, 0.25, 0.5)],
            "model.width", "error rate", True, 2),
        "error-vs-l2": lambda: figures.error_vs_knob([panel("all trials", [0.0, 1e-4, 1e-3, 1e-2])], "params.train.l2",
                                                     "error rate", False, 1),
        "scatter": lambda: figures.error_scatter(errs, "model.width", "error rate", True),
        "effects": lambda: figures.effects(pd.DataFrame({
            "remedy": ["model.dropout"] * 3 + ["train.l2"] * 3, "quantity": ["training error", "held-out error", "gap"] * 2,
            "effect": [0.02, -0.01, -0.03, 0.01, 0.0, -0.01], "low": [0.0, -0.03, -0.05, 0.0, -0.02, -0.02],
            "high": [0.04, 0.01, -0.01, 0.02, 0.02, 0.0]})),
        "capacity": lambda: figures.error_vs_params(errs, "error rate", "params.model.kind"),
        "accuracy-size": lambda: figures.error_vs_size(errs, errs["test_error"] < 0.15, "error rate", "params.model.kind"),
        "learning-curves": lambda: figures.learning_curves(curves, {k: 10 for k in curves}, {k: 15 for k in curves}),
        "bias-variance": lambda: figures.decomposition(decomposition_panels(6), "params.model.width", "squared error", True),
        "pareto": lambda: figures.pareto(comp, fronts, SIZE, ACCURACY, {"raw": 120_000, "gzip": 84_000, "accuracy": 0.877}),
        "accuracy-vs-latency": lambda: figures.latency(timed_frame(), ACCURACY, "metrics.artifact/latency_ms",
                                                       "metrics.artifact/latency_iqr_ms"),
        "accuracy-vs-sparsity": lambda: figures.accuracy_against(
            comp.assign(**{"metrics.model/sparsity": np.linspace(0.5, 0.98, len(comp)),
                           "params.compress.schedule": ["cubic", "constant"] * 3 + ["cubic"]}),
            "metrics.model/sparsity", "measured sparsity", ACCURACY, "params.compress.schedule"),
        "accuracy-vs-bits": lambda: figures.accuracy_against(quantized_frame(), BITS, "bits per weight", ACCURACY, None,
                                                             log_x=True, reference=("float32 base", 0.877)),
        "distillation": lambda: figures.distillation(pd.DataFrame({
            "student": ["trial 1: width=4", "trial 2: width=8"], "distilled": [0.8, 0.85], "hard labels only": [0.78, 0.84]})),
        "history": lambda: figures.history({"val/accuracy": history, "artifact/size_bytes": history}),
        "importances": lambda: figures.importances({"val/accuracy": {"model.width": 0.7, "model.depth": 0.3},
                                                    "artifact/size_bytes": {"model.width": 0.9, "model.depth": 0.1}}),
        "durations": lambda: figures.durations(pd.DataFrame({"trial": np.arange(12), "state": ["finished"] * 10 + ["pruned"] * 2,
                                                             "seconds": np.repeat([30.0, 12.0, 8.0], 4)})),
    }


def svg(fig) -> str:
    """The figure as page.py writes it: SVG with text as text."""
    buffer = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "study"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    return buffer.getvalue().decode()


@pytest.fixture(scope="module", params=sorted(builders()))
def drawn(request):
    """(name, figure, renderer): a figure drawn, so layout, ticks and legends are final (built once
    for every test that reads it)."""
    fig = builders()[request.param]()
    fig.canvas.draw()
    yield request.param, fig, fig.canvas.get_renderer()
    plt.close(fig)


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def texts(fig) -> list[str]:
    """Every axis label, tick label, legend title and legend entry of the figure."""
    found = []
    for ax in visible_axes(fig):
        found += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), ax.get_title(loc="left")]
        found += [t.get_text() for t in [*ax.get_xticklabels(), *ax.get_yticklabels()]]
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is not None:
            found += [legend.get_title().get_text(), *(t.get_text() for t in legend.get_texts())]
    return [t for t in found if t]


# ---------------------------------------------------------------------------------- sizes
def test_every_figure_fits_the_page_column_so_the_browser_never_shrinks_it(drawn):
    name, fig, _ = drawn
    width = fig.get_size_inches()[0]
    assert width <= figures.MAX_WIDTH, f"{name} is {width} in wide"
    points = float(re.search(r'<svg[^>]* width="([0-9.]+)pt"', svg(fig)).group(1))
    # the column of a 1,300 px window is 1,068 CSS px (body at most 1,100 px less 2 rem); a CSS px is 3/4 pt
    assert points * 4 / 3 <= 1068, f"{name}: {points} pt, scaled to {1068 / (points * 4 / 3):.0%} in the page"


def test_many_panels_wrap_into_rows_instead_of_an_ever_wider_row():
    fig = figures.decomposition(decomposition_panels(6), "model.width", "squared error", True)
    rows = {round(ax.get_position().y0, 3) for ax in visible_axes(fig)}
    assert len(rows) == 2 and fig.get_size_inches()[0] <= figures.MAX_WIDTH, "six panels: two rows of three"
    plt.close(fig)


# ---------------------------------------------------------------------------------- ticks
def major_ticks(axis) -> list[float]:
    low, high = sorted(axis.get_view_interval())
    return [t for t in axis.get_majorticklocs() if low <= t <= high]


def test_every_axis_has_at_least_three_ticks_whose_labels_do_not_touch(drawn):
    name, fig, renderer = drawn
    for ax in visible_axes(fig):
        for axis, which in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            if axis.get_scale() == "linear" and isinstance(axis.get_major_locator(), (FixedLocator, StrCategoryLocator)):
                continue  # categories (bar charts' trials, remedies, students): as many as there are
            ticks = major_ticks(axis)
            assert len(ticks) >= 3, f"{name}: {which} axis ({axis.get_scale()}) has ticks {ticks}"
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            assert len({t.get_text() for t in labels}) == len(labels), f"{name}: repeated {which} tick labels"
            boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0 if which == "x" else b.y0)
            for a, b in itertools.pairwise(boxes):
                apart = b.x0 - a.x1 if which == "x" else b.y0 - a.y1
                assert apart > 1, f"{name}: {which} tick labels touch: {[t.get_text() for t in labels]}"


def test_log_axes_are_labelled_with_plain_numbers_not_powers_of_ten():
    fig = builders()["accuracy-size"]()
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert len(shown) >= 3 and all(re.fullmatch(r"[0-9.]+[kMG]?", t) for t in shown), shown
    plt.close(fig)


def test_a_knob_with_zero_and_decades_gets_a_symlog_axis_that_keeps_0_and_its_smallest_value_apart():
    fig = builders()["error-vs-l2"]()
    fig.canvas.draw()
    ax = visible_axes(fig)[0]
    assert ax.get_xscale() == "symlog"
    zero, smallest, largest = ax.transData.transform([(0.0, 0.0), (1e-4, 0.0), (1e-2, 0.0)])[:, 0]
    assert smallest - zero > 0.15 * (largest - zero), "0 and 0.0001 stand apart"
    plt.close(fig)


# --------------------------------------------------------------------------------- labels
def test_no_label_or_legend_shows_a_params_metrics_or_tags_prefix(drawn):
    name, fig, _ = drawn
    prefixed = [t for t in texts(fig) if re.search(r"(^|\s|\()(params|metrics|tags)\.", t)]
    assert not prefixed, f"{name}: {prefixed}"


def test_legends_sit_outside_the_axes(drawn):
    name, fig, renderer = drawn
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in visible_axes(fig):
            area = ax.get_window_extent(renderer)
            overlap = max(0, min(box.x1, area.x1) - max(box.x0, area.x0)) * max(0, min(box.y1, area.y1) - max(box.y0, area.y0))
            assert overlap < 1, f"{name}: a legend covers an axes"


def test_the_bits_chart_gives_every_file_its_own_point_and_its_95_percent_interval():
    quantized = quantized_frame()
    fig = figures.accuracy_against(quantized, BITS, "bits per weight", ACCURACY, None, log_x=True,
                                   reference=("float32 base", 0.877))
    ax = fig.axes[0]
    points = np.vstack([line.get_xydata() for line in ax.lines if line.get_marker() in figures.MARKERS])
    assert len(points) == len(quantized), "every file a marker of its own"
    eights = points[np.isclose(points[:, 1], quantized.loc[quantized[BITS] == 8, ACCURACY].to_numpy()[:, None]).any(axis=0)]
    assert len(eights) == 2 and len(np.unique(eights[:, 0].round(6))) == 2, "files at the same bits spread sideways"
    spans = [np.ptp(seg[:, 1]) for c in ax.collections for seg in c.get_segments()] if ax.collections else []
    low, high = stats.wilson(0.876, 10_000)
    assert any(np.isclose(s, high - low, rtol=1e-3) for s in spans), "Wilson's 95% interval over the test set"
    assert "float32 base" in svg(fig)


# -------------------------------------------------------------------------------- colours
MACHADO = {  # Machado, Oliveira and Fernandes (2009), severity 1, on linear RGB
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def lab(colour: str, alpha: float, vision: str | None) -> np.ndarray:
    """CIELAB of `colour` drawn at `alpha` over white, as seen with `vision` (None: typical)."""
    rgb = alpha * np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]) + (1 - alpha)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    if vision:
        linear = np.clip(np.array(MACHADO[vision]) @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), 0.008856))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


@pytest.mark.parametrize("vision", [None, *MACHADO])
def test_regime_bands_stay_apart_under_colour_blindness(vision):
    colours = figures.REGIME_COLOURS
    for a, b in itertools.combinations(colours, 2):
        distance = np.linalg.norm(lab(colours[a], figures.BAND_ALPHA, vision) - lab(colours[b], figures.BAND_ALPHA, vision))
        assert distance > 5, f"{a} and {b} bands are {distance:.1f} ΔE apart under {vision or 'typical vision'}"


# ---------------------------------------------------------------------------------- scale
def test_a_dense_scatter_is_an_image_inside_the_svg_and_a_sparse_one_stays_vector():
    dense = figures.error_scatter(errs_frame(5000), "model.width", "error rate", True)
    assert any(a.get_rasterized() for ax in dense.axes for a in [*ax.collections, *ax.lines])
    text = svg(dense)
    assert text.count("<image") >= 1 and len(text) < 1_500_000, f"{len(text) / 1e6:.1f} MB"
    assert "<text" in text, "labels stay text"
    sparse = svg(figures.error_scatter(errs_frame(50), "model.width", "error rate", True))
    assert "<image" not in sparse


@pytest.mark.parametrize("build", [
    lambda e: figures.error_vs_params(e, "error rate", "params.model.kind"),
    lambda e: figures.error_vs_size(e, e["test_error"] < 0.05, "error rate", "params.model.kind"),
    lambda e: figures.history({"val/accuracy": pd.DataFrame({"trial": e["trial"], "value": e["test_error"],
                                                             "best so far": e["test_error"].cummin()})}),
    lambda e: figures.durations(pd.DataFrame({"trial": e["trial"], "state": "finished", "seconds": e["test_error"]})),
], ids=["capacity", "accuracy-size", "history", "durations"])
def test_every_chart_of_ten_thousand_trials_stays_small(build):
    text = svg(build(errs_frame(10_000)))
    assert "<image" in text and len(text) < 1_500_000, f"{len(text) / 1e6:.1f} MB"


def test_durations_say_they_are_each_runs_time_and_that_a_pack_shares_one():
    table = pd.DataFrame({"trial": [0, 1, 2], "state": ["finished"] * 3, "seconds": [10.0, 10.0, 4.0]})
    assert "pack" in figures.durations(table).axes[0].get_ylabel()
    assert "a pack of up to 4 models" in figures.durations(table, pack=4).axes[0].get_ylabel()
    assert "pack" not in figures.durations(table, pack=1).axes[0].get_ylabel()
    plt.close("all")
