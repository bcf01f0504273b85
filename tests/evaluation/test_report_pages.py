"""The report and the comparison page: they explain themselves, and they load in a real browser."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aezoo.compare import write_comparison
from aezoo.evaluation import evaluate
from aezoo.report import write_report
from aezoo.visualise import write_plots
from conftest import run_cli

SMALL = ["--set", "data.limit=120", "--set", "train.batch_size=20", "--set", "eval.nll_k=2",
         "--set", "train.progress=false", "--set", "train.log_every=1"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for model, extra in (("vae", ["--set", "model.hidden=16", "--set", "model.latent_dim=4"]),
                         ("ae", ["--set", "model.hidden=16", "--set", "model.latent_dim=4"])):
        run = root / model
        code, _, err = run_cli("train", model, "--out", str(run), "--steps", "4", *SMALL, *extra)
        assert code == 0, err
        evaluate(run)
        write_plots(run)
        write_report(run)
        runs.append(run)
    return runs


def test_report_gives_units_directions_meanings_and_captions(two_runs):
    html = (two_runs[0] / "report.html").read_text()
    row = re.search(r"<tr><th>nll_iwae</th>.*?</tr>", html).group(0)
    assert "nats/example" in row and "lower is better" in row and "importance-weighted" in row
    assert "steps done</th><td>4 of 4 planned" in html
    assert "<figcaption>Test images (odd rows) above their reconstructions" in html
    assert "has not finished training" not in html


def test_report_says_when_a_run_stopped_early(two_runs, tmp_path):
    run = tmp_path / "partial"
    shutil.copytree(two_runs[1], run)
    config = json.loads((run / "config.json").read_text())
    config["train"]["steps"] = 40
    (run / "config.json").write_text(json.dumps(config))
    html = write_report(run).read_text()
    assert "stopped at step 4 of 40 (10%)" in html and "has not finished training" in html
    notes = evaluate(run)["notes"]
    assert any("stopped at step 4 of 40 (10%)" in note for note in notes)
    assert "notes" not in evaluate(two_runs[1])  # a finished run has nothing to say


def test_comparison_puts_numbers_curves_and_pictures_side_by_side(two_runs, tmp_path):
    out = write_comparison(two_runs, tmp_path / "compare.html")
    html = out.read_text()
    recon = re.search(r"<tr><th>recon_mse</th>(.*?)</tr>", html).group(1)
    values = [float(v) for v in re.findall(r"<td class='num[^']*'>([-\d.e+]+)</td>", recon)]
    best = re.search(r"<td class='num best'>([-\d.e+]+)</td>", recon)
    assert len(values) == 2 and best and float(best.group(1)) == min(values)  # lower is better
    assert "Loss curves, overlaid" in html and html.count("<h3>Reconstructions</h3>") == 1
    assert html.count("data:image/png;base64,") >= 3  # the curves and both runs' reconstructions
    code, _, err = run_cli("compare", str(two_runs[0]), "--out", str(tmp_path / "one.html"))
    assert code == 2 and err.count("\n") == 1


# --- in a real headless browser ---------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A page-load probe appended to a copy of the page: every image decoded, no script error.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const bad = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.setAttribute('data-probe', JSON.stringify({images: document.images.length, bad: bad,
                                                            errors: window.__errors}));
});
</script>"""


def _load_in_chromium(page: Path, tmp_path: Path) -> dict:
    probe = tmp_path / f"probe_{page.name}"
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    done = subprocess.run([CHROMIUM, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                          timeout=120)
    found = re.search(r"data-probe=\"([^\"]*)\"", done.stdout)
    assert found, f"the page did not finish loading: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("AEZOO_REQUIRE_BROWSER"),
                    reason="no Chromium here (make browser installs it; CI requires it)")
def test_report_and_comparison_load_in_chromium_with_every_image_decoded(two_runs, tmp_path):
    assert CHROMIUM, "Chromium is required (AEZOO_REQUIRE_BROWSER is set): run make browser"
    pages = [two_runs[0] / "report.html", two_runs[1] / "report.html",
             write_comparison(two_runs, tmp_path / "compare.html")]
    for page in pages:
        result = _load_in_chromium(page, tmp_path)
        assert result["images"] >= 2 and result["bad"] == 0 and result["errors"] == [], (page, result)
