"""Analysis figures: both formats written and non-blank, axes scales, bands, error bars, and the
seed-band interpolation checked against hand-computed numbers."""

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.image import imread

from ablab.errors import UserError
from ablab.report import figures
from ablab.report.figures import Series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_written(paths, stem):
    """Both files exist at `<stem>.png` / `<stem>.svg`; the PNG has drawn content; the SVG is XML."""
    assert [p.name for p in paths] == [stem.name + ".png", stem.name + ".svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and float(pixels.var()) > 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


# -- loss_bands -----------------------------------------------------------------------------------------
def test_seed_band_interpolates_onto_shared_grid_by_hand():
    # A logs at 0 and 10, B at 10, 0, 5 (unsorted); grid is the union {0, 5, 10}; A at 5 is 3.
    a = Series([0, 10], [4, 2])
    b = Series([10, 0, 5], [1, 3, 3])
    grid, mean, low, high = figures.seed_band([a, b])
    assert grid.tolist() == [0, 5, 10]
    assert mean.tolist() == pytest.approx([3.5, 3.0, 1.5])
    assert low.tolist() == pytest.approx([3, 3, 1])
    assert high.tolist() == pytest.approx([4, 3, 2])


def test_seed_band_keeps_only_the_shared_range():
    # Shared range is [2, 10]: A (y = x) is read at B's points, B (flat after 4) at A's end.
    a = Series([0, 10], [0, 10])
    b = Series([2, 4, 12], [0, 4, 4])
    grid, mean, _, _ = figures.seed_band([a, b])
    assert grid.tolist() == [2, 4, 10]
    assert mean.tolist() == pytest.approx([1, 4, 7])


def test_seed_band_std_uses_sample_std():
    grid, mean, low, high = figures.seed_band([Series([0, 1], [1, 1]), Series([0, 1], [3, 3])], band="std")
    assert mean.tolist() == pytest.approx([2, 2])
    assert low.tolist() == pytest.approx([2 - math.sqrt(2)] * 2)
    assert high.tolist() == pytest.approx([2 + math.sqrt(2)] * 2)


def test_seed_band_rejects_runs_without_overlap_and_unknown_band():
    with pytest.raises(UserError, match="share no x range"):
        figures.seed_band([Series([0, 1], [1, 1]), Series([5, 6], [1, 1])])
    with pytest.raises(UserError, match="minmax"):
        figures.seed_band([Series([0, 1], [1, 1])], band="iqr")


def test_series_from_rows_skips_rows_lacking_the_metric():
    rows = [{"step": 1, "tokens": 100, "elapsed": 0.5, "train_loss": 5.0},
            {"step": 2, "tokens": 200, "elapsed": 1.0, "val_loss": 4.0},
            {"step": 3, "tokens": 300, "elapsed": 1.5, "val_loss": None},
            {"step": 4, "tokens": 400, "elapsed": 2.0, "val_loss": float("nan")},
            {"step": 5, "tokens": 500, "elapsed": 2.5, "val_loss": 3.0}]
    by_tokens = figures.series_from_rows(rows)
    assert (by_tokens.x, by_tokens.values) == ([200, 500], [4.0, 3.0])
    by_steps = figures.series_from_rows(rows, x="steps", metric="train_loss")
    assert (by_steps.x, by_steps.values) == ([1], [5.0])
    with pytest.raises(UserError, match="x axis"):
        figures.series_from_rows(rows, x="epochs")


def test_loss_bands_writes_mean_lines_and_bands(tmp_path):
    groups = {"baseline": [Series([0, 100, 200], [5, 4, 3.5]), Series([0, 100, 200], [5.2, 4.1, 3.4])],
              "arm muon": [Series([0, 50, 200], [5, 3.9, 3.2]), Series([0, 200], [5.1, 3.3])]}
    stem = tmp_path / "bands" / "val"
    assert_written(figures.loss_bands(groups, stem), stem)
    ax = figures._build_loss_bands(groups).axes[0]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    assert len(ax.lines) == 2
    assert "baseline min–max over seeds" in legend_texts(ax)
    assert ax.get_xlabel() == "tokens seen" and ax.get_ylabel() == "val_loss (nats/token)"
    std_ax = figures._build_loss_bands(groups, x="steps", band="std").axes[0]
    assert "arm muon mean ± std over seeds" in legend_texts(std_ax)
    assert std_ax.get_xlabel() == "optimizer steps"


def test_given_png_name_still_writes_both_formats_and_svg_is_reproducible(tmp_path):
    groups = {"baseline": [Series([0, 1, 2], [3, 2, 1])]}
    first = figures.loss_bands(groups, tmp_path / "curve.png")
    assert_written(first, tmp_path / "curve")
    svg = first[1].read_bytes()
    figures.loss_bands(groups, tmp_path / "curve")
    assert first[1].read_bytes() == svg


# -- metric_vs_variable ---------------------------------------------------------------------------------
def test_metric_vs_variable_lr_is_log_with_std_error_bars(tmp_path):
    values = {1e-3: [3.2, 3.4], 3e-3: [3.0, 3.0, 3.0], 1e-2: [3.5]}
    assert_written(figures.metric_vs_variable(values, tmp_path / "lr"), tmp_path / "lr")
    ax = figures._build_metric_vs_variable(values).axes[0]
    assert ax.get_xscale() == "log"
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    line, _, (ycol,) = bars
    assert line.get_xdata().tolist() == [1e-3, 3e-3, 1e-2]
    assert line.get_ydata().tolist() == pytest.approx([3.3, 3.0, 3.5])
    low, high = ycol.get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((3.3 - np.std([3.2, 3.4], ddof=1), 3.3 + np.std([3.2, 3.4], ddof=1)))


@pytest.mark.parametrize("variable, values, log_x, scale", [
    ("model.d_model", {64: [3.0], 128: [2.9], 256: [2.8]}, None, "linear"),
    ("optim.warmup_steps", {1: [3.0], 10: [2.9], 1000: [2.8]}, None, "log"),
    ("optim.lr", {1e-3: [3.0], 1e-2: [2.9]}, False, "linear"),
    ("model.d_model", {64: [3.0], 128: [2.9]}, True, "log"),
    ("optim.lr", {0.0: [3.0], 1e-2: [2.9]}, None, "linear"),
])
def test_metric_vs_variable_picks_the_x_scale(variable, values, log_x, scale):
    fig = figures._build_metric_vs_variable(values, variable=variable, log_x=log_x)
    assert fig.axes[0].get_xscale() == scale


def test_metric_vs_variable_log_needs_positive_values():
    with pytest.raises(UserError, match="positive"):
        figures._build_metric_vs_variable({0.0: [3.0], 1.0: [2.0]}, log_x=True)


# -- benchmark_bars -------------------------------------------------------------------------------------
def test_benchmark_bars_groups_arms_with_stderr_and_chance_lines(tmp_path):
    scores = {"hellaswag": {"baseline": (0.30, 0.01), "muon": (0.32, 0.012)},
              "arc_easy": {"baseline": (0.45, 0.02), "muon": (0.47, 0.02)},
              "piqa": {"baseline": (0.60, 0.015)}}
    chance = {"hellaswag": 0.25, "arc_easy": 0.25}
    assert_written(figures.benchmark_bars(scores, tmp_path / "bench", chance), tmp_path / "bench")
    ax = figures._build_benchmark_bars(scores, chance).axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [len(b) for b in bars] == [3, 2]  # muon has no piqa score, so no bar there
    assert all(b.errorbar is not None for b in bars)
    heights = sorted(round(p.get_height(), 3) for b in bars for p in b)
    assert heights == [0.3, 0.32, 0.45, 0.47, 0.6]
    chance_lines = [c for c in ax.collections if c.get_gid() == "chance"]
    assert sorted(seg[0][1] for c in chance_lines for seg in c.get_segments()) == [0.25, 0.25]
    assert legend_texts(ax).count("chance") == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hellaswag", "arc_easy", "piqa"]
    no_chance = figures._build_benchmark_bars(scores).axes[0]
    assert not [c for c in no_chance.collections if c.get_gid() == "chance"]


# -- scaling_curve --------------------------------------------------------------------------------------
def test_scaling_curve_is_log_log_with_fit_band_and_groups(tmp_path):
    compute = [1e15, 3e15, 1e16, 3e16, 1e17]
    loss = [4.0, 3.7, 3.4, 3.2, 3.0]

    def fit(c):
        return 1.7 + 2000 * c ** -0.2

    def band(c):
        return fit(c) * 0.97, fit(c) * 1.03

    sizes = ["1M", "1M", "4M", "4M", "16M"]
    assert_written(figures.scaling_curve(compute, loss, tmp_path / "law", fit, band, groups=sizes), tmp_path / "law")
    ax = figures._build_scaling_curve(compute, loss, fit, band, groups=sizes).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1
    (fit_line,) = [ln for ln in ax.lines if ln.get_label() == "fit"]
    xs, ys = fit_line.get_xdata(), fit_line.get_ydata()
    assert len(xs) == 200 and xs[0] < 1e15 < 1e17 < xs[-1]
    assert ys[50] == pytest.approx(fit(xs[50]))
    assert legend_texts(ax)[:3] == ["1M", "4M", "16M"]
    bare = figures._build_scaling_curve(compute, loss).axes[0]
    assert not bare.lines and len(bare.collections) == 1  # the points only


def test_scaling_curve_rejects_non_positive_and_mismatched_groups():
    with pytest.raises(UserError, match="positive"):
        figures._build_scaling_curve([0.0, 1.0], [3.0, 2.0])
    with pytest.raises(UserError, match="one per point"):
        figures._build_scaling_curve([1.0, 2.0], [3.0, 2.0], groups=["a"])


# -- isoflop_curves -------------------------------------------------------------------------------------
def test_isoflop_curves_one_colour_per_budget_and_minimum_markers(tmp_path):
    budgets = {1e17: ([1e6, 1e7, 1e8], [3.6, 3.3, 3.5]), 1e18: ([1e7, 1e6, 1e8], [3.0, 3.3, 3.1])}
    minima = {1e17: 1e7, 1e18: (2e7, 2.95)}
    assert_written(figures.isoflop_curves(budgets, tmp_path / "iso", minima), tmp_path / "iso")
    ax = figures._build_isoflop_curves(budgets, minima).axes[0]
    assert ax.get_xscale() == "log"
    curves = [ln for ln in ax.lines if ln.get_label().endswith("FLOPs")]
    assert [ln.get_label() for ln in curves] == ["1.0e+17 FLOPs", "1.0e+18 FLOPs"]
    assert tuple(curves[0].get_color()) != tuple(curves[1].get_color())
    assert curves[1].get_xdata().tolist() == [1e6, 1e7, 1e8]  # sorted by N
    stars = [ln for ln in ax.lines if ln.get_marker() == "*" and len(ln.get_xdata()) == 1]
    assert [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in stars] == [(1e7, pytest.approx(3.3)), (2e7, 2.95)]
    assert "fitted minimum" in legend_texts(ax)
    assert not [ln for ln in figures._build_isoflop_curves(budgets).axes[0].lines if ln.get_marker() == "*"]


# -- correlation_heatmap --------------------------------------------------------------------------------
def test_correlation_heatmap_scale_annotations_and_blank_nan(tmp_path):
    labels = ["hellaswag", "arc_easy", "piqa"]
    matrix = [[1.0, 0.5, float("nan")], [0.5, 1.0, -0.8], [float("nan"), -0.8, 1.0]]
    assert_written(figures.correlation_heatmap(matrix, labels, tmp_path / "corr"), tmp_path / "corr")
    fig = figures._build_correlation_heatmap(matrix, labels)
    ax = fig.axes[0]
    (image,) = ax.images
    assert image.get_clim() == (-1, 1)
    assert image.get_cmap().name.startswith("RdBu_r")
    assert tuple(image.get_cmap().get_bad()) == (1.0, 1.0, 1.0, 1.0)
    cells = sorted(t.get_text() for t in ax.texts)
    assert cells == sorted(["1.00", "0.50", "0.50", "1.00", "-0.80", "-0.80", "1.00"])  # no text in NaN cells
    assert ax.get_title() == "task correlation (Spearman)"
    assert len(fig.axes) == 2  # the colorbar
    with pytest.raises(UserError, match="one label per row"):
        figures._build_correlation_heatmap(matrix, labels[:2])


# -- gain_vs_size ---------------------------------------------------------------------------------------
def test_gain_vs_size_log_log_with_ci_bars_and_unit_line(tmp_path):
    sizes, gains, cis = [1e6, 4e6, 1.6e7], [1.3, 1.5, 1.2], [(1.1, 1.6), None, (0.9, 1.4)]
    assert_written(figures.gain_vs_size(sizes, gains, tmp_path / "gain", cis), tmp_path / "gain")
    ax = figures._build_gain_vs_size(sizes, gains, cis).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = bars[2][0].get_segments()
    assert segments[0][:, 1].tolist() == pytest.approx([1.1, 1.6])
    assert segments[1][:, 1].tolist() == pytest.approx([1.5, 1.5])  # no CI: a zero-length bar
    (unit,) = [ln for ln in ax.lines if ln.get_label().startswith("no gain")]
    assert list(unit.get_ydata()) == [1.0, 1.0]
    assert ax.yaxis.get_major_formatter()(1.5, 0) == "1.5"  # under a decade: plain tick labels
    with pytest.raises(UserError, match="contain the gain"):
        figures._build_gain_vs_size(sizes, gains, [(1.4, 1.6), None, None])


# -- empty input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("draw", [
    lambda out: figures.loss_bands({}, out),
    lambda out: figures.loss_bands({"baseline": [Series([], [])]}, out),
    lambda out: figures.metric_vs_variable({1e-3: []}, out),
    lambda out: figures.benchmark_bars({"piqa": {}}, out),
    lambda out: figures.scaling_curve([], [], out),
    lambda out: figures.isoflop_curves({}, out),
    lambda out: figures.correlation_heatmap([], [], out),
    lambda out: figures.gain_vs_size([], [], out),
])
def test_empty_input_raises_user_error_and_writes_nothing(tmp_path, draw):
    with pytest.raises(UserError, match="has no points to plot"):
        draw(tmp_path / "empty")
    assert not list(tmp_path.iterdir())


# -- seeds at equal steps against time, train loss, the per-seed panel ----------------------------------
def test_seed_band_by_step_averages_time_at_equal_steps():
    # Seed A reaches steps 0, 10, 20 at 0, 1, 2 s; seed B, slower, at 0, 2, 4 s. Cut at A's end (2 s), the
    # time grid would read B at its step 10 (loss 3), not its final 2; by step, the last point is the
    # final mean (1.5) at the mean end time (3 s).
    a = Series([0, 1, 2], [5, 3, 1], steps=[0, 10, 20])
    b = Series([0, 2, 4], [5, 3, 2], steps=[0, 10, 20])
    grid, mean, low, high = figures.seed_band([a, b], by_step=True)
    assert grid.tolist() == pytest.approx([0, 1.5, 3]) and mean.tolist() == pytest.approx([5, 3, 1.5])
    assert (low[-1], high[-1]) == (1, 2)
    _, by_time, _, _ = figures.seed_band([a, b])
    assert by_time[-1] == pytest.approx(2.0)  # what the time grid gave: above the final mean
    rows = [{"step": 0, "elapsed": 0.0, "val_loss": 5.0}, {"step": 10, "elapsed": 1.0, "train_loss": 4.0}]
    assert figures.series_from_rows(rows, x="time").steps == [0.0]


def test_loss_bands_with_train_draws_it_dashed_in_the_arm_colour():
    val = {"baseline": [Series([0, 2, 4], [5, 3, 2], steps=[0, 10, 20])]}
    train = {"baseline": [Series([1, 4], [4.5, 2.5], steps=[5, 20])]}
    ax = figures._build_loss_bands(val, x="time", train=train).axes[0]
    solid, dashed = ax.lines
    assert (solid.get_linestyle(), dashed.get_linestyle()) == ("-", "--") and solid.get_color() == dashed.get_color()
    assert legend_texts(ax) == ["baseline val_loss (mean of 1 seed)", "baseline val_loss min–max over seeds",
                                "baseline train_loss (mean of 1 seed)"]
    assert ax.get_ylabel() == "loss (nats/token)"


def test_final_values_joins_each_seed_across_arms_and_spans_only_them(tmp_path):
    values = {"baseline": {0: 3.70, 1: 3.69, 2: float("nan")}, "arm": {0: 3.62, 1: 3.63, 2: 3.61}}
    assert_written(figures.final_values(values, tmp_path / "final"), tmp_path / "final")
    ax = figures._build_final_values(values).axes[0]
    seeds = {tuple(line.get_ydata()) for line in ax.lines}
    assert seeds == {(3.70, 3.62), (3.69, 3.63), (3.61,)}  # a NaN seed is left out, not drawn
    low, high = ax.get_ylim()
    assert 3.59 < low <= 3.61 and 3.70 <= high < 3.72
    with pytest.raises(UserError, match="has no points to plot"):
        figures.final_values({"baseline": {0: float("nan")}}, tmp_path / "none")
