"""RUN/report.html: one self-contained page with a run's numbers, losses, plots and config.

Pure file reading (config.json, eval.json, metrics.jsonl, plots/*.png), no model, so it works
on any run folder, finished or not. Images are embedded as base64 data URIs and the CSS is inline, so the
file can be mailed or archived alone. Every string from the run folder is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import math
from html import escape
from pathlib import Path

from .errors import AezooError
from .files import atomic_write_bytes, is_number
from .runfolder import SPLIT_ORDER, loss_terms, read_metrics

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h1 small { color: #666; font-weight: normal; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.4em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { font-variant-numeric: tabular-nums; }
table table { margin: 0; } table table td, table table th { border-color: #eee; }
.muted { color: #777; font-style: italic; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
svg.spark { vertical-align: middle; margin-left: 0.5em; }
"""


def _fmt(v) -> str:
    """A scalar as escaped text; floats to 4 significant digits."""
    if v is None:
        return "&mdash;"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def _sparkline(values: list[float], width: int = 160, height: int = 24) -> str:
    """A tiny inline SVG bar chart of `values` (non-finite ones drawn as zero)."""
    vals = [v if math.isfinite(v) else 0.0 for v in values]
    lo, hi = min(0.0, *vals), max(0.0, *vals)
    span = (hi - lo) or 1.0
    bw = width / len(vals)
    zero = height * hi / span
    bars = "".join(
        f'<rect x="{i * bw:.2f}" y="{min(zero, height * (hi - v) / span):.2f}" width="{max(bw - 0.5, 0.5):.2f}" '
        f'height="{abs(v) * height / span:.2f}"/>'
        for i, v in enumerate(vals)
    )
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'fill="#4878a8" role="img">{bars}</svg>')


def _list_html(values: list) -> str:
    # aezoo.files writes non-finite floats as the strings "nan", "inf", "-inf"
    values = [float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v for v in values]
    if values and all(is_number(v) for v in values):
        if len(values) <= 8:
            return "[" + ", ".join(_fmt(v) for v in values) + "]"
        finite = [v for v in values if math.isfinite(v)]
        stats = (f"n = {len(values)}, min {_fmt(float(min(finite)))}, mean {_fmt(sum(finite) / len(finite))}, "
                 f"max {_fmt(float(max(finite)))}" if finite else f"n = {len(values)}")
        head = "[" + ", ".join(_fmt(v) for v in values[:6]) + ", &hellip;]"
        return f"{head} <span class='muted'>({stats})</span>{_sparkline([float(v) for v in values])}"
    if all(not isinstance(v, (dict, list)) for v in values) and len(values) <= 16:
        return "[" + ", ".join(_fmt(v) for v in values) + "]"
    return f"<code>{escape(json.dumps(values))}</code>"


def _value_html(v) -> str:
    """Any JSON value: dicts become nested tables, lists a compact line, scalars formatted text."""
    if isinstance(v, dict):
        return _table(v)
    if isinstance(v, list):
        return _list_html(v)
    return _fmt(v)


def _table(d: dict) -> str:
    if not d:
        return "<span class='muted'>(empty)</span>"
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td{' class=num' if is_number(v) else ''}>{_value_html(v)}</td></tr>"
        for k, v in d.items()
    )
    return f"<table>{rows}</table>"


def _read_json(path: Path) -> tuple[object, str | None]:
    """(contents, None), or (None, why not)."""
    if not path.is_file():
        return None, "missing"
    try:
        return json.loads(path.read_text(errors="replace")), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e})"


def _losses_html(metrics: Path) -> str:
    records = read_metrics(metrics)
    terms = loss_terms(records)
    if not terms:
        return "<p class='muted'>No losses logged yet.</p>"
    last = {}
    for rec in records:  # the last line of each split, which is its latest step
        last[rec["split"]] = rec
    splits = sorted(last, key=lambda s: (SPLIT_ORDER.get(s, 2), s))
    head = "".join(f"<th>{escape(s)} <small>(step {_fmt(last[s]['step'])})</small></th>" for s in splits)
    rows = "".join(
        f"<tr><th>{escape(t)}</th>"
        + "".join(f"<td class=num>{_fmt(last[s].get(t)) if is_number(last[s].get(t)) else '&mdash;'}</td>"
                  for s in splits)
        + "</tr>"
        for t in terms
    )
    return f"<table><tr><th>term</th>{head}</tr>{rows}</table>"


def _title_from_name(stem: str) -> str:
    """`loss_curves` -> "Loss curves"."""
    words = stem.replace("_", " ").replace("-", " ").split()
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _figures_html(run: Path) -> str:
    pngs = sorted((run / "plots").glob("*.png"))
    if not pngs:
        return "<p class='muted'>No plots yet (run <code>aezoo report</code> to draw them).</p>"
    parts = []
    for png in pngs:
        title = escape(_title_from_name(png.stem))
        try:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
        except OSError as e:
            parts.append(f"<h3>{title}</h3><p class='muted'>unreadable: {escape(str(e))}</p>")
            continue
        parts.append(f"<figure><h3>{title}</h3><img alt='{title}' src='data:image/png;base64,{data}'></figure>")
    return "\n".join(parts)


def render_report(run_dir: str | Path) -> str:
    """The HTML text of the report for `run_dir`."""
    run = Path(run_dir)
    if not run.is_dir():
        raise AezooError(f"{run}: no such run folder")
    name = run.resolve().name
    config, config_err = _read_json(run / "config.json")
    model_name = config.get("model_name") if isinstance(config, dict) else None
    model_name = str(model_name) if model_name else "unknown model"

    results, eval_err = _read_json(run / "eval.json")
    if eval_err == "missing":
        eval_html = "<p class='muted'>Not evaluated yet (run <code>aezoo eval</code>).</p>"
    elif eval_err:
        eval_html = f"<p class='muted'>eval.json: {escape(eval_err)}</p>"
    else:
        eval_html = _table(results) if isinstance(results, dict) else _value_html(results)

    if config_err:
        config_html = f"<p class='muted'>config.json: {escape(config_err)}</p>"
    else:
        config_html = _table(config) if isinstance(config, dict) else _value_html(config)

    title = f"{escape(model_name)} <small>&mdash; {escape(name)}</small>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(model_name)} &mdash; {escape(name)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<h2>Evaluation</h2>
{eval_html}
<h2>Last losses</h2>
{_losses_html(run / "metrics.jsonl")}
<h2>Plots</h2>
{_figures_html(run)}
<h2>Configuration</h2>
{config_html}
</body></html>
"""


def write_report(run_dir: str | Path) -> Path:
    """Writes RUN/report.html (atomically) and returns its path."""
    out = Path(run_dir) / "report.html"
    atomic_write_bytes(out, render_report(run_dir).encode("utf-8"))
    return out
