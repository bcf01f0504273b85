"""Plot helpers with no model knowledge: image grids, loss curves, bars, histograms, lines, rollouts of
sequences (frames or vectors). An axis that counts (steps, units, code indices, counts) gets integer ticks only.

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


def _integer_ticks(axis) -> None:
    """Ticks at whole numbers only (an axis of steps, units, code indices or counts)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _all_integers(values) -> bool:
    return all(float(v).is_integer() for v in values)


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
        _integer_ticks(ax.xaxis)
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
    _integer_ticks(ax.xaxis)
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
    _integer_ticks(ax.yaxis)
    ax.set(title=title, xlabel=xlabel, ylabel="count")
    ax.grid(axis="y", alpha=0.3)
    return _save_figure(fig, path)


def save_line_plot(xs, ys_by_name: dict, path: str | Path, title: str, xlabel: str, ylabel: str) -> Path:
    """One line per entry of `ys_by_name` (name -> values), all against the same `xs` (whole numbers: integer
    ticks)."""
    fig = _figure(5.5, 3.5)
    ax = fig.add_subplot()
    xs = list(xs)
    if _all_integers(xs):
        _integer_ticks(ax.xaxis)
    for name, ys in ys_by_name.items():
        ys = list(ys)
        ax.plot(xs, ys, label=str(name), marker="o" if len(ys) < 30 else None, markersize=3)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if ys_by_name:
        ax.legend(fontsize="small")
    return _save_figure(fig, path)


# --- rollouts of sequences ------------------------------------------------------------------------
def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().float().numpy()
    return np.asarray(a, dtype=np.float32)


def save_frame_rollouts(observed, predicted, context: int, path: str | Path, title: str = "") -> Path:
    """Sequences of frames: for each of the N sequences, a row "observed" (its frames (N, T, C, H, W) in
    [0, 1]) above a row "rollout" (`predicted` (N, P, C, H, W), the frames expected at times context + 1 ..
    context + P), columns labelled by time step (1-based), a line between the last frame seen and the
    first predicted."""
    observed, predicted = _numpy(observed), _numpy(predicted)
    n, p = len(observed), predicted.shape[1]
    length = context + p
    frame = observed.shape[2:]
    cells = np.ones((n, 2, length, *frame), np.float32)  # blank (white) where a row has no frame
    shown = min(length, observed.shape[1])
    cells[:, 0, :shown] = observed[:, :shown]
    cells[:, 1, context:] = predicted
    pad = 2
    grid = image_grid(cells.reshape(-1, *frame), nrow=length, padding=pad)
    h, w = frame[-2:]
    scale = max(1.0, 36 / max(h, w))  # frames of at least ~36 px on the page
    fig = _figure(max(6.0, grid.shape[1] * scale / 100 + 1.6), grid.shape[0] * scale / 100 + 1.0)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    centre = lambda i, size: pad + i * (size + pad) + (size - 1) / 2
    ax.set_xticks([centre(t, w) for t in range(length)], [str(t + 1) for t in range(length)],
                  fontsize="x-small" if length > 16 else "small")
    ax.set_yticks([centre(r, h) for r in range(2 * n)], ["observed", "rollout"] * n, fontsize="small")
    for r in range(1, n):  # a gap between sequences
        ax.axhline(pad / 2 + 2 * r * (h + pad) - 0.5, color="tab:blue", linewidth=1.5)
    ax.axvline(pad / 2 + context * (w + pad) - 0.5, color="tab:red", linewidth=2)
    ax.set_xlabel(f"time step (observed up to {context}, the red line; predicted after it)")
    ax.tick_params(length=0)
    ax.set_title(title or f"{n} sequences: observed frames above the rollout from the first {context}")
    return _save_figure(fig, path)


def save_vector_rollouts(observed, predicted, context: int, path: str | Path, title: str = "") -> Path:
    """Sequences of vectors: one small panel per sequence (rows, N) and dimension (columns, D) of `observed`
    (N, T, D), its observed values and `predicted` (N, P, D), the values expected at times context + 1 ..
    context + P, against the time step (1-based), a line after the last step seen."""
    observed, predicted = _numpy(observed), _numpy(predicted)
    n, t, d = observed.shape
    p = predicted.shape[1]
    fig = _figure(max(6.0, 2.6 * d), 2.0 * n + 0.8)
    axes = fig.subplots(n, d, squeeze=False, sharex=True)
    for i in range(n):
        for j in range(d):
            ax = axes[i][j]
            ax.plot(range(1, t + 1), observed[i, :, j], color="tab:gray", linewidth=1.2, label="observed")
            ax.plot(range(context + 1, context + p + 1), predicted[i, :, j], color="tab:red", linewidth=1.4,
                    linestyle="--", label="rollout")
            ax.axvline(context + 0.5, color="black", linewidth=0.8, linestyle=":")
            ax.grid(alpha=0.3)
            _integer_ticks(ax.xaxis)
            if i == 0:
                ax.set_title(f"dimension {j + 1}", fontsize="small")
            if j == 0:
                ax.set_ylabel(f"sequence {i + 1}", fontsize="small")
            if i == n - 1:
                ax.set_xlabel("time step")
    axes[0][0].legend(fontsize="x-small", loc="best")
    fig.suptitle(title or f"{n} sequences: observed, and the rollout after the first {context} steps (dotted line)",
                 fontsize="medium")
    return _save_figure(fig, path)
