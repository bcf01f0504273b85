"""Plots: integer axes get whole-number ticks only; TD-VAE's rollouts are drawn with labelled rows, time-step
columns and the boundary marked (frames), or a panel per dimension with a legend (vectors)."""

import numpy as np
import pytest
import torch
from PIL import Image

import aezoo
from aezoo import plots
from aezoo.registry import entry
from aezoo.visualise import _rollouts


@pytest.fixture
def figures(monkeypatch):
    """The axes of every figure saved, read before the figure is cleared."""
    seen = []
    real = plots._save_figure

    def capture(fig, path):
        fig.canvas.draw()
        seen.append([{"xticks": list(ax.get_xticks()), "yticks": list(ax.get_yticks()),
                      "xlabels": [t.get_text() for t in ax.get_xticklabels()],
                      "ylabels": [t.get_text() for t in ax.get_yticklabels()],
                      "lines": [(line.get_label(), list(line.get_xdata())) for line in ax.get_lines()],
                      "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
                      "title": ax.get_title(),
                      "image": np.asarray(ax.get_images()[0].get_array()) if ax.get_images() else None}
                     for ax in fig.axes])
        return real(fig, path)

    monkeypatch.setattr(plots, "_save_figure", capture)
    return seen


def whole(ticks):
    return all(float(t).is_integer() for t in ticks)


@pytest.mark.slow
def test_integer_axes_have_whole_number_ticks(tmp_path, figures):
    plots.save_loss_curves({"loss": {"train": [(1, 3.0), (2, 2.0), (3, 1.5)]}}, tmp_path / "a.png")
    plots.save_bar_plot([5.0, 3.0, 1.0], tmp_path / "b.png", "usage", "code", "share")
    plots.save_line_plot([1, 2, 3], {"mse": [1.0, 2.0, 3.0]}, tmp_path / "c.png", "t", "jump", "mse")
    plots.save_histogram(np.array([0.1, 0.2, 0.2, 0.3]), tmp_path / "d.png", "h", "value", bins=3)
    loss, bars, line, hist = (f[0] for f in figures)
    assert whole(loss["xticks"]) and whole(bars["xticks"]) and whole(line["xticks"]) and whole(hist["yticks"])
    plots.save_line_plot([0.5, 1.5], {"y": [1.0, 2.0]}, tmp_path / "e.png", "t", "x", "y")
    assert not whole(figures[-1][0]["xticks"])  # a real-valued axis keeps its fractional ticks


def test_frame_rollouts_label_rows_and_time_steps_and_mark_the_boundary(tmp_path, figures):
    observed = torch.zeros(3, 12, 1, 8, 8)
    predicted = torch.ones(3, 4, 1, 8, 8) * 0.5
    path = plots.save_frame_rollouts(observed, predicted, 6, tmp_path / "r.png")
    (ax,) = figures[0]
    assert ax["ylabels"] == ["observed", "rollout"] * 3
    assert ax["xlabels"] == [str(t) for t in range(1, 11)]  # 6 observed + 4 predicted time steps
    column = lambda t: ax["xticks"][t - 1]
    boundary = [x[0] for label, x in ax["lines"] if x[0] == x[1] and column(6) < x[0] < column(7)]
    assert len(boundary) == 1
    image = np.asarray(Image.open(path))
    assert image.shape[0] >= 200 and image.shape[1] >= 500


def test_frame_rollouts_place_each_frame_in_its_row_and_column(tmp_path, figures):
    observed = torch.arange(1, 6).float().div(10).view(1, 5, 1, 1, 1).expand(1, 5, 1, 2, 2)  # frame t: t / 10
    predicted = torch.tensor([0.7, 0.8]).view(1, 2, 1, 1, 1).expand(1, 2, 1, 2, 2)
    plots.save_frame_rollouts(observed, predicted, 3, tmp_path / "r.png")
    grid = figures[0][0]["image"]
    cell = lambda row, t: grid[2 + row * 4: 4 + row * 4, 2 + (t - 1) * 4: 4 + (t - 1) * 4]  # 2 px cells, 2 px pad
    assert [float(cell(0, t).mean()) for t in range(1, 6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert [float(cell(1, t).mean()) for t in range(1, 6)] == pytest.approx([1.0, 1.0, 1.0, 0.7, 0.8])  # blank, then


@pytest.mark.slow
def test_vector_rollouts_have_a_panel_per_dimension_with_a_legend(tmp_path, figures):
    observed = torch.randn(2, 10, 3)
    predicted = torch.randn(2, 4, 3)
    plots.save_vector_rollouts(observed, predicted, 6, tmp_path / "v.png")
    axes = figures[0]
    assert len(axes) == 2 * 3
    assert [a["title"] for a in axes[:3]] == ["dimension 1", "dimension 2", "dimension 3"]
    assert axes[0]["legend"] == ["observed", "rollout"]
    for a in axes:
        lines = {label: x for label, x in a["lines"] if not label.startswith("_")}
        assert list(lines["observed"]) == list(range(1, 11)) and list(lines["rollout"]) == [7, 8, 9, 10]
        assert whole(a["xticks"])


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(8, 1, 28, 28), (9, 3)])
def test_tdvae_rollouts_plot_frames_and_vectors(tmp_path, figures, shape):
    torch.manual_seed(0)
    model = aezoo.build("tdvae", **{**entry("tdvae").tiny, "data_shape": shape}).eval()
    x = torch.rand(5, *shape)
    with torch.no_grad():
        _rollouts(model, x, tmp_path / "rollouts.png")
    axes = figures[0]
    if len(shape) == 4:
        assert axes[0]["ylabels"][:2] == ["observed", "rollout"] and len(axes[0]["ylabels"]) == 8  # 4 sequences
    else:
        assert len(axes) == 3 * 3 and axes[0]["legend"] == ["observed", "rollout"]  # 3 sequences x 3 dimensions
    assert (tmp_path / "rollouts.png").stat().st_size > 0
