"""Plot helpers with no model knowledge: image grids, loss curves, bars, histograms, lines.

Figures are made with the object-oriented `matplotlib.figure.Figure` and drawn by the Agg canvas, never
through pyplot, so nothing needs a screen, no global backend is switched and no figure is left open.
matplotlib is imported on first use. Every PNG is written atomically (`files.atomic_write_bytes`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .files import atomic_write_bytes


# --- image grids ---------------------------------------------------------------------------------
def image_grid(images, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tiles (N, C, H, W) images in [0, 1] (C = 1 or 3) into one picture, `nrow` images per row
    (default ceil(sqrt(N))), with `padding` pixels of `pad_value` around and between them.

    Returns an (H', W') array for one channel, (H', W', 3) for three, where
    H' = rows * (H + padding) + padding and W' = nrow * (W + padding) + padding.
    """
    if hasattr(images, "detach"):  # a torch tensor, without importing torch
        images = images.detach().cpu().float().numpy()
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:  # (N, H, W): one channel
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W) with N > 0, got {tuple(x.shape)}")
    n, c, h, w = x.shape
    cols = max(1, min(int(nrow) if nrow else math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / cols)
    x = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)
    # Empty cells to fill the last row, then padding on the top and left of every cell.
    x = np.concatenate([x, np.full((rows * cols - n, c, h, w), pad_value, np.float32)])
    x = np.pad(x, ((0, 0), (0, 0), (padding, 0), (padding, 0)), constant_values=pad_value)
    hp, wp = h + padding, w + padding
    grid = x.reshape(rows, cols, c, hp, wp).transpose(2, 0, 3, 1, 4).reshape(c, rows * hp, cols * wp)
    grid = np.pad(grid, ((0, 0), (0, padding), (0, padding)), constant_values=pad_value)  # bottom, right
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_image_grid(images, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Writes the grid of `images` as a PNG; small grids are enlarged by an integer factor `scale`
    (default: enough for about 400 pixels of width, at most 16) with nearest-neighbour pixels."""
    from matplotlib.image import imsave

    grid = image_grid(images, nrow)
    if scale is None:
        scale = min(16, max(1, math.ceil(400 / grid.shape[1])))
    scale = max(1, int(scale))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    imsave(buf, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# --- figures -------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path: str | Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    fig.clear()
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_loss_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], path: str | Path) -> Path:
    """One subplot per term of `curves` ({term: {split: [(step, value), ...]}}, in order), a line per split."""
    if not curves:
        fig = _figure(5, 2)
        fig.text(0.5, 0.5, "no losses logged yet", ha="center", va="center")
        return _save_figure(fig, path)
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = _figure(4.5 * cols, 3.2 * rows)
    for i, (term, by_split) in enumerate(curves.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for split, pts in by_split.items():
            if pts:
                steps, values = zip(*pts)
                ax.plot(steps, values, label=split, marker="o" if len(pts) < 30 else None, markersize=3)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save_figure(fig, path)


def save_bar_plot(values, path: str | Path, title: str, xlabel: str, ylabel: str) -> Path:
    """Bars for a sequence of numbers (x = index) or a {label: number} dict."""
    if isinstance(values, dict):
        labels, heights = [str(k) for k in values], [float(v) for v in values.values()]
    else:
        heights = np.asarray(values, dtype=float).ravel().tolist()
        labels = None
    fig = _figure(max(5.0, min(14.0, 0.25 * len(heights) + 2)), 3.5)
    ax = fig.add_subplot()
    ax.bar(range(len(heights)), heights, color="tab:blue")
    if labels is not None:
        ax.set_xticks(range(len(heights)), labels, rotation=45 if len(labels) > 6 else 0, ha="right")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save_figure(fig, path)


def save_histogram(values, path: str | Path, title: str, xlabel: str, bins: int = 50) -> Path:
    """A histogram of the finite entries of `values` (any shape)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    fig = _figure(5, 3.5)
    ax = fig.add_subplot()
    ax.hist(v, bins=bins, color="tab:blue")
    ax.set(title=title, xlabel=xlabel, ylabel="count")
    ax.grid(axis="y", alpha=0.3)
    return _save_figure(fig, path)


def save_line_plot(xs, ys_by_name: dict, path: str | Path, title: str, xlabel: str, ylabel: str) -> Path:
    """One line per entry of `ys_by_name` (name -> values), all against the same `xs`."""
    fig = _figure(5.5, 3.5)
    ax = fig.add_subplot()
    xs = list(xs)
    for name, ys in ys_by_name.items():
        ys = list(ys)
        ax.plot(xs, ys, label=str(name), marker="o" if len(ys) < 30 else None, markersize=3)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if ys_by_name:
        ax.legend(fontsize="small")
    return _save_figure(fig, path)
