"""RUN/report.html: one self-contained page with a run's numbers, losses, plots and config.

Pure file reading (config.json, eval.json, metrics.jsonl, plots/*.png, and the same of RUN/prior for a
two-stage model), no model, so it works on any run folder, finished or not. Every number comes with
its unit, which direction is better and a one-line definition (`glossary`), every picture with a
caption, and the run with how far it got: steps done of planned, wall time, throughput, and the software
and machine of each piece of its training (environment.json). The config shows the keys the run uses
(`config_reference.run_keys`), those set away from their defaults marked. Images are
embedded as base64 data URIs and the CSS is inline, so the file can be mailed or archived alone. Every
string from the run folder is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import math
from html import escape
from pathlib import Path

from .config_reference import run_keys
from .errors import AezooError
from .files import atomic_write_bytes, is_number, read_json
from .glossary import KEYS
from .runfolder import SPLIT_ORDER, loss_terms, read_metrics, steps_done_and_planned

# What each picture shows, by file stem (plots/<stem>.png); the title is the stem's words otherwise.
CAPTIONS = {
    "reconstructions": "Test images (odd rows) above their reconstructions (the row below).",
    "reconstructions_top_only": "VQ-VAE-2: test images above reconstructions from the top codes alone, the bottom "
                                "map filled with the expected bottom code (so it carries no detail of the image): "
                                "what the coarse level holds. Blank or dark rows mean the decoder relies on the "
                                "bottom level for everything.",
    "reconstructions_top_prior": "VQ-VAE-2: test images above reconstructions from their top codes with bottom codes "
                                 "drawn from the bottom prior.",
    "samples": "Samples: z drawn from the prior N(0, I), decoded (the mean of p(x|z)).",
    "prior_samples": "Samples: code maps drawn from the trained prior, decoded.",
    "interpolations": "Each row: decodings along the straight line between the posterior means of two test images "
                      "(left: the first image's, right: the second's).",
    "traversals": "Latent traversals: one row per latent unit, most informative (largest KL) first; along a row "
                  "that unit sweeps the range of its posterior means on the test batch, the others held at one "
                  "image's code.",
    "encoder_filters": "First encoder layer's filters (rows of W1) as images, each stretched to [0, 1].",
    "decoder_filters": "Last decoder layer's filters (columns of its weight) as images.",
    "rollouts": "TD-VAE on test sequences. Frames: for each sequence the observed frames (row 'observed') and, "
                "right of the red line that follows the last frame seen, the jumpy predictions of 1, 2, ... steps "
                "from the belief there (row 'rollout'); columns are time steps. Vectors: one panel per sequence "
                "and dimension, the observed values and the rollout after the dotted line.",
    "jumpy_rollouts": "TD-VAE: two frames seen, then chained jumps of max_jump steps (top: truth where the sequence "
                      "has it).",
    "prior_rollouts": "TD-VAE: rollouts from the belief before any frame (the model's prior over states).",
    "loss_curves": "Training (per logged interval) and validation losses against the training step.",
    "kl_per_dim": "KL of each latent unit on the test split: units near 0 are inactive.",
    "kl_per_unit_training": "KL of each latent unit on the validation split as training went on.",
    "codebook_usage": "How often each code is chosen on the evaluated split, most used first.",
    "codebook_usage_top": "Top level: how often each code is chosen, most used first.",
    "codebook_usage_bottom": "Bottom level: how often each code is chosen, most used first.",
    "rollout_mse": "Squared error of the prediction d steps ahead, against copying the last frame seen.",
    "activations": "Histogram of the penalised units' activations on the evaluated split.",
    "unit_means": "Histogram of each penalised unit's mean activation (the sparsity penalty pulls it to rho).",
}

CSS = """
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
figcaption { color: #555; font-size: 0.9em; max-width: 60em; }
td.meaning { color: #555; font-size: 0.9em; max-width: 40em; } td.better { white-space: nowrap; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; }
tr.changed th, tr.changed td { background: #eef4fb; font-weight: bold; } .default { color: #777; font-weight: normal; }
tr.differs th, tr.differs td { background: #fff4d6; }
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


def value_html(v) -> str:
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
        f"<tr><th>{escape(str(k))}</th><td{' class=num' if is_number(v) else ''}>{value_html(v)}</td></tr>"
        for k, v in d.items()
    )
    return f"<table>{rows}</table>"


def _eval_html(results: dict) -> str:
    """The eval.json numbers with their unit, better direction and meaning; its notes above them."""
    notes = results.get("notes") if isinstance(results.get("notes"), list) else []
    warn = "".join(f"<p class=warn>{escape(str(note))}</p>" for note in notes)
    rows = []
    for k, v in results.items():
        if k == "notes":
            continue
        key = KEYS.get(k)
        unit, better, meaning = (key.unit, key.better, key.meaning) if key else ("", "", "")
        arrow = {"lower": "&darr; lower is better", "higher": "&uarr; higher is better"}.get(better, "")
        rows.append(f"<tr><th>{escape(str(k))}</th><td{' class=num' if is_number(v) else ''}>{value_html(v)}</td>"
                    f"<td>{escape(unit)}</td><td class=better>{arrow}</td>"
                    f"<td class=meaning>{escape(meaning)}</td></tr>")
    head = "<tr><th>key</th><th>value</th><th>unit</th><th></th><th>meaning</th></tr>"
    return f"{warn}<table>{head}{''.join(rows)}</table>"


def _progress_html(config: dict, records: list[dict]) -> str:
    """Steps done of planned, epochs, wall time and throughput, from config.json and metrics.jsonl."""
    train = [r for r in records if r["split"] == "train"]
    if not train:
        return "<p class='muted'>No training step logged yet.</p>"
    done, planned = steps_done_and_planned(config.get("train") if isinstance(config.get("train"), dict) else {},
                                           records)
    # time_s restarts at 0 when a run is resumed: add up the segments
    wall, last = 0.0, 0.0
    for r in train:
        now = r.get("time_s", 0.0) if is_number(r.get("time_s")) else 0.0
        wall += now - last if now >= last else now
        last = now
    rates = sorted(r["samples_per_s"] for r in train if is_number(r.get("samples_per_s")))
    facts = {"steps done": f"{done:,}" + (f" of {planned:,} planned" if planned else "")}
    if is_number(train[-1].get("epoch")):
        facts["epochs"] = f"{train[-1]['epoch']:.3g}"
    facts["training wall time"] = f"{wall:,.0f} s"
    if rates:
        facts["training samples/s (median)"] = f"{rates[len(rates) // 2]:,.0f}"
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    facts["data"] = ", ".join(f"{k} {v}" for k, v in data.items() if v not in ("", 0, None))
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts.items())
    warn = ""
    if planned and done < planned:
        warn = (f"<p class=warn>This run stopped at step {done:,} of {planned:,} ({done / planned:.0%}): the numbers "
                "below describe a model that has not finished training (<code>aezoo resume</code> continues it).</p>")
    return warn + f"<table>{rows}</table>"


def read_json_or_why(path: Path) -> tuple[object, str | None]:
    """(contents, None), or (None, why not)."""
    if not path.is_file():
        return None, "missing"
    try:
        return read_json(path), None
    except AezooError as e:
        return None, str(e)


def config_html(config: dict) -> str:
    """A run's config.json, section by section: the keys the run uses, those set away from their default
    marked (with the default beside them); the keys its settings leave unused named below."""
    keys = run_keys(config)
    if not keys:
        return _table(config)
    rows, unused = [], []
    for k in keys:
        if not k.used:
            unused.append(k.key)
            continue
        default = f" <span class=default>(default {value_html(k.default)})</span>" if k.changed else ""
        rows.append(f"<tr{' class=changed' if k.changed else ''}><th>{escape(k.key)}</th>"
                    f"<td{' class=num' if is_number(k.value) else ''}>{value_html(k.value)}{default}</td></tr>")
    changed = sum(k.changed and k.used for k in keys)
    head = (f"<p>{changed} key{'s' if changed != 1 else ''} set away from {'their' if changed != 1 else 'its'} "
            "default, in bold.</p>" if changed else "<p>Every key at its default.</p>")
    tail = (f"<p class=muted>Not used by this run's settings (so not shown): {escape(', '.join(unused))}.</p>"
            if unused else "")
    return f"{head}<table>{''.join(rows)}</table>{tail}"


def environment_pieces(run: Path) -> tuple[list[dict], str | None]:
    """(the environments of a run's pieces of training, oldest first; why not) from RUN/environment.json:
    {"pieces": [{...}, ...]} (`aezoo.environment`), or one flat dict; ([], None) without the file (older runs)."""
    data, err = read_json_or_why(run / "environment.json")
    if err == "missing":
        return [], None
    if err:
        return [], err
    pieces = data.get("pieces", [data])
    if not isinstance(pieces, list) or not pieces or not all(isinstance(p, dict) for p in pieces):
        return [], '"pieces" is not a list of objects'
    return pieces, None


# Keys of an environment piece that tell the pieces apart rather than describe them.
PIECE_KEYS = ("step", "started")


def _grid(d: dict, per_row: int = 2) -> str:
    """A dict as a compact table, `per_row` key-value pairs a row."""
    items = list(d.items())
    rows = []
    for i in range(0, len(items), per_row):
        cells = "".join(f"<th>{escape(str(k))}</th><td>{value_html(v)}</td>" for k, v in items[i:i + per_row])
        rows.append(f"<tr>{cells}</tr>")
    return f"<table>{''.join(rows)}</table>"


def _environment_html(run: Path) -> str:
    """Every key of environment.json; with several pieces of training, the keys whose values differ between
    them named and shown piece by piece, the rest once."""
    pieces, err = environment_pieces(run)
    if err:
        return f"<h3>Environment</h3><p class='muted'>environment.json: {escape(err)}</p>"
    if not pieces:
        return ""
    if len(pieces) == 1:
        return f"<h3>Environment</h3>{_grid(pieces[0])}"
    keys = list(dict.fromkeys(k for p in pieces for k in p))
    differ = [k for k in keys if k not in PIECE_KEYS and len({json.dumps(p.get(k)) for p in pieces}) > 1]
    if differ:
        note = (f"<p class=warn>The run was trained in {len(pieces)} pieces whose environments differ in: "
                f"{escape(', '.join(differ))}; its weights may differ from those of one uninterrupted run.</p>")
    else:
        note = f"<p>The run was trained in {len(pieces)} pieces, all in the same environment.</p>"
    head = "<tr><th>key</th>" + "".join(f"<th>piece {i + 1}</th>" for i in range(len(pieces))) + "</tr>"
    rows = "".join(f"<tr{' class=differs' if k in differ else ''}><th>{escape(k)}</th>"
                   + "".join(f"<td>{value_html(p.get(k))}</td>" for p in pieces) + "</tr>"
                   for k in keys if k in PIECE_KEYS or k in differ)
    same = {k: pieces[0].get(k) for k in keys if k not in PIECE_KEYS and k not in differ}
    return f"<h3>Environment</h3>{note}<table>{head}{rows}</table><p>The same in every piece:</p>{_grid(same)}"


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


def figure_html(png: Path, title: str | None = None) -> str:
    """One embedded picture with its title and caption (`CAPTIONS`)."""
    title = escape(title or _title_from_name(png.stem))
    caption = CAPTIONS.get(png.stem)
    try:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
    except OSError as e:
        return f"<h3>{title}</h3><p class='muted'>unreadable: {escape(str(e))}</p>"
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure><h3>{title}</h3><img alt='{title}' src='data:image/png;base64,{data}'>{text}</figure>"


def _figures_html(run: Path) -> str:
    pngs = sorted((run / "plots").glob("*.png"))
    if not pngs:
        return "<p class='muted'>No plots yet (run <code>aezoo report</code> to draw them).</p>"
    return "\n".join(figure_html(png) for png in pngs)


def _prior_html(run: Path) -> str:
    """Stage 2 of a two-stage model: the prior's progress, losses, numbers and config (RUN/prior)."""
    prior = run / "prior"
    config, err = read_json_or_why(prior / "config.json")
    if err or not isinstance(config, dict):
        return ""
    records = read_metrics(prior / "metrics.jsonl")
    results, eval_err = read_json_or_why(prior / "eval.json")
    parts = [f"<h2>Prior ({escape(str(config.get('model_name', '')))}, stage 2)</h2>",
             _progress_html(config, records), "<h3>Last losses</h3>", _losses_html(prior / "metrics.jsonl")]
    if not eval_err and isinstance(results, dict):
        parts += ["<h3>Evaluation of the prior</h3>", _eval_html(results)]
    parts.append(f"<details><summary>Prior configuration</summary>{config_html(config)}</details>")
    return "\n".join(parts)


def render_report(run_dir: str | Path) -> str:
    """The HTML text of the report for `run_dir`."""
    run = Path(run_dir)
    if not run.is_dir():
        raise AezooError(f"{run}: no such run folder")
    name = run.resolve().name
    config, config_err = read_json_or_why(run / "config.json")
    model_name = config.get("model_name") if isinstance(config, dict) else None
    model_name = str(model_name) if model_name else "unknown model"

    results, eval_err = read_json_or_why(run / "eval.json")
    if eval_err == "missing":
        eval_html = "<p class='muted'>Not evaluated yet (run <code>aezoo eval</code>).</p>"
    elif eval_err:
        eval_html = f"<p class='muted'>eval.json: {escape(eval_err)}</p>"
    else:
        eval_html = _eval_html(results) if isinstance(results, dict) else value_html(results)

    if config_err:
        config_part = f"<p class='muted'>config.json: {escape(config_err)}</p>"
    else:
        config_part = config_html(config) if isinstance(config, dict) else value_html(config)

    records = read_metrics(run / "metrics.jsonl")
    progress_html = _progress_html(config if isinstance(config, dict) else {}, records)
    title = f"{escape(model_name)} <small>&mdash; {escape(name)}</small>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(model_name)} &mdash; {escape(name)}</title>
<style>{CSS}</style></head>
<body>
<h1>{title}</h1>
<h2>Training</h2>
{progress_html}
{_environment_html(run)}
<h2>Evaluation</h2>
{eval_html}
<h2>Last losses</h2>
{_losses_html(run / "metrics.jsonl")}
<h2>Plots</h2>
{_figures_html(run)}
{_prior_html(run)}
<h2>Configuration</h2>
{config_part}
</body></html>
"""


def write_report(run_dir: str | Path) -> Path:
    """Writes RUN/report.html (atomically) and returns its path."""
    out = Path(run_dir) / "report.html"
    atomic_write_bytes(out, render_report(run_dir).encode("utf-8"))
    return out
