import base64
import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from aezoo.plots import image_grid, save_bar_plot, save_histogram, save_image_grid, save_line_plot, save_loss_curves
from aezoo.report import write_report
from aezoo.runfolder import curves, loss_terms, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --- image_grid ---------------------------------------------------------------------------------
def test_grid_shape_and_pixel_placement():
    n, h, w, pad, nrow = 10, 28, 28, 2, 4
    x = torch.rand(n, 1, h, w) * 0.9  # never equal to the padding value 1.0
    x[:, 0, 3, 5] = torch.arange(n) / 100  # a marker per image
    grid = image_grid(x, nrow=nrow, padding=pad)
    rows = -(-n // nrow)
    assert grid.shape == (rows * (h + pad) + pad, nrow * (w + pad) + pad) == (92, 122)
    for k in range(n):
        r, c = divmod(k, nrow)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        np.testing.assert_array_equal(grid[y0:y0 + h, x0:x0 + w], x[k, 0].numpy())
        assert grid[y0 + 3, x0 + 5] == pytest.approx(k / 100)
    # padding rows/columns and the two empty cells of the last row are pad_value
    assert (grid[:pad] == 1).all() and (grid[:, :pad] == 1).all() and (grid[-pad:] == 1).all()
    assert (grid[pad + 2 * (h + pad):, pad + 2 * (w + pad):] == 1).all()


def test_grid_default_nrow_numpy_clip_and_pad_value():
    x = np.full((5, 1, 4, 4), 2.0)  # clipped to 1
    x[0] = -1.0  # clipped to 0
    grid = image_grid(x, padding=1, pad_value=0.5)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1)  # ceil(sqrt(5)) = 3 columns
    assert grid.min() == 0.0 and grid.max() == 1.0
    assert grid[0, 0] == 0.5 and (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 1).all()


def test_grid_three_channels():
    x = torch.rand(5, 3, 8, 6)
    grid = image_grid(x)
    assert grid.shape == (2 * 10 + 2, 3 * 8 + 2, 3)
    # image 4 sits in row 1, column 1
    np.testing.assert_array_equal(grid[12:20, 10:16], x[4].permute(1, 2, 0).numpy())


def test_grid_rejects_bad_shapes():
    with pytest.raises(ValueError):
        image_grid(np.zeros((2, 2, 8, 8)))
    with pytest.raises(ValueError):
        image_grid(np.zeros((0, 1, 8, 8)))


def test_save_image_grid_png(tmp_path):
    x = torch.zeros(16, 1, 28, 28)
    x[0, 0, :14] = 1.0
    out = save_image_grid(x, tmp_path / "new" / "grid.png")  # the parent folder is created
    img = mpimg.imread(out)
    grid_w = 4 * 30 + 2
    scale = img.shape[1] // grid_w
    assert img.shape[1] == grid_w * scale and img.shape[1] >= 400 and img.shape[0] == img.shape[1]
    grey = img[..., 0]
    assert grey[0, 0] == pytest.approx(1.0)  # padding
    assert grey[2 * scale + 1, 2 * scale + 1] == pytest.approx(1.0)  # top half of image 0 is white
    assert grey[(2 + 20) * scale, (2 + 20) * scale] == pytest.approx(0.0)  # its bottom half is black
    assert _leftovers(out.parent) == []
    out2 = save_image_grid(x[:1], tmp_path / "one.png", scale=3)
    assert mpimg.imread(out2).shape[:2] == (32 * 3, 32 * 3)
    assert plt.get_fignums() == []


# --- loss curves and the small plots ----------------------------------------------------------------
def _write_metrics(path: Path) -> None:
    lines = []
    for step in range(10, 110, 10):
        lines.append(json.dumps({"step": step, "epoch": step / 50, "split": "train", "loss": 100 - step / 2,
                                 "recon": 90 - step / 2, "kl": 10.0, "lr": 1e-3, "samples_per_s": 5000.0,
                                 "time_s": step / 10}))
        if step % 50 == 0:
            lines.append(json.dumps({"step": step, "epoch": step / 50, "split": "val", "loss": 99 - step / 2,
                                     "recon": 88.0, "kl": 11.0}))
    lines.insert(3, "")  # a blank line
    lines.insert(5, json.dumps({"step": 35, "split": "train", "loss": "nan?", "note": "text"}))
    lines.append('{"step": 110, "split": "tra')  # cut short by a crash
    path.write_text("\n".join(lines))


def test_read_metrics_and_terms(tmp_path):
    _write_metrics(tmp_path / "metrics.jsonl")
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 10 + 2 + 1
    assert loss_terms(records) == ["loss", "recon", "kl"]  # no step/epoch/lr/samples_per_s/time_s/strings
    assert loss_terms([{"step": 1, "split": "train", "kl": 1.0, "loss": 2.0}]) == ["loss", "kl"]
    assert read_metrics(tmp_path / "absent.jsonl") == []


def _loss_curves(metrics: Path, out: Path) -> Path:
    records = read_metrics(metrics)
    return save_loss_curves(curves(records, loss_terms(records)), out)


def test_loss_curves_png(tmp_path):
    _write_metrics(tmp_path / "metrics.jsonl")
    records = read_metrics(tmp_path / "metrics.jsonl")
    by_term = curves(records, loss_terms(records))
    assert list(by_term) == ["loss", "recon", "kl"] and list(by_term["loss"]) == ["train", "val"]
    steps = [s for s, _ in by_term["loss"]["train"]]
    assert steps == sorted(steps) and len(steps) == 10
    out = _loss_curves(tmp_path / "metrics.jsonl", tmp_path / "plots" / "loss_curves.png")
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 100  # three panels side by side
    assert _leftovers(out.parent) == []
    # an empty log still gives a picture
    (tmp_path / "empty.jsonl").write_text("\n")
    assert mpimg.imread(_loss_curves(tmp_path / "empty.jsonl", tmp_path / "empty.png")).ndim == 3
    assert plt.get_fignums() == []


def test_bar_histogram_line(tmp_path):
    for out in (
        save_bar_plot([0.5, 2.0, 0.0, 1.0], tmp_path / "bar.png", "KL per unit", "unit", "nats"),
        save_bar_plot({"a": 1, "b": 3}, tmp_path / "bar2.png", "usage", "code", "count"),
        save_histogram(np.r_[np.random.default_rng(0).normal(size=500), np.nan], tmp_path / "h.png", "z", "value"),
        save_line_plot(
            [1, 2, 4], {"mse": [0.1, 0.2, 0.4], "kl": (1, 2, 3)}, tmp_path / "l.png", "rollout", "jump", "err"
        ),
    ):
        assert out.read_bytes().startswith(PNG_MAGIC)
        assert mpimg.imread(out).ndim == 3
    assert _leftovers(tmp_path) == []
    assert plt.get_fignums() == []


# --- report -----------------------------------------------------------------------------------
def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "vae_<demo>"
    (run / "plots").mkdir(parents=True)
    config = {
        "model_name": "vae",
        "model": {"latent_dim": 10, "hidden": [200, 200]},
        "data": {"name": "mnist", "note": "<script>alert(1)</script>"},
        "train": {"epochs": 3, "lr": 0.001},
        "eval": {"nll_k": 100},
    }
    (run / "config.json").write_text(json.dumps(config))
    results = {
        "neg_elbo": 91.234567,
        "nll_iwae": 86.123456,
        "active_units": 17,
        "kl_per_dim": [0.5 * i for i in range(20)],
        "nested": {"psnr": 21.98765},
        "odd": "nan",
    }
    (run / "eval.json").write_text(json.dumps(results))
    _write_metrics(run / "metrics.jsonl")
    save_image_grid(torch.rand(4, 1, 8, 8), run / "plots" / "a.png")
    _loss_curves(run / "metrics.jsonl", run / "plots" / "loss_curves.png")
    return run


@pytest.mark.slow
def test_report_full(tmp_path):
    run = _run_folder(tmp_path)
    out = write_report(run)
    assert out == run / "report.html"
    html = out.read_text()
    assert "vae" in html and "vae_&lt;demo&gt;" in html  # model and (escaped) run folder names
    for number in ("91.23", "86.12", "17", "21.99", "[0, 0.5, 1, 1.5, 2, 2.5, &hellip;]", "n = 20"):
        assert number in html, number
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # the last losses: train at step 100 and val at step 100
    assert "train <small>(step 100)</small>" in html and "val <small>(step 100)</small>" in html
    assert "<tr><th>loss</th><td class=num>50</td><td class=num>49</td></tr>" in html
    # every plot embedded, sorted, with a heading from its name, and decodable to the very file
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 2
    assert base64.b64decode(images[0]) == (run / "plots" / "a.png").read_bytes()
    assert html.index(">A</h3>") < html.index(">Loss curves</h3>")
    # self-contained: nothing fetched from elsewhere
    assert "http://" not in html and "https://" not in html and "<link" not in html and "<script" not in html
    assert "latent_dim" in html and "nll_k" in html
    assert _leftovers(run) == []


def test_report_config_only(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"model_name": "ae", "model": {}, "data": {"name": "mnist"}, "train": {}, "eval": {}})
    )
    html = write_report(run).read_text()
    assert "ae" in html and "fresh" in html
    assert "Not evaluated yet" in html and "No losses logged yet" in html and "No plots yet" in html
    assert "data:image/png" not in html


def test_report_broken_files_and_missing_folder(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "eval.json").write_text('{"nll": 1')
    (run / "metrics.jsonl").write_text('{"step": 1, "split": "tr')
    html = write_report(run).read_text()
    assert "unknown model" in html and "not valid JSON" in html and "missing" in html
    with pytest.raises(Exception, match="no such run folder"):
        write_report(tmp_path / "nowhere")


def test_report_list_with_non_finite_strings(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps({"kl_per_dim": [1.0] * 9 + ["nan", "inf"]}))
    html = write_report(run).read_text()
    assert "n = 11, min 1, mean 1, max 1" in html and "<svg" in html
