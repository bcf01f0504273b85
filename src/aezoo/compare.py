"""`aezoo compare RUN RUN ... --out compare.html`: runs side by side on one self-contained page.

Their eval.json numbers in one table (the best of each key marked where the glossary says which
direction is better), their loss curves overlaid (one panel per term they share, one line per run and
split), the pictures each run's report drew (samples, reconstructions, ...) next to each other, and where
their environments (environment.json, the last piece of each) differ.
Like the report it only reads files: run `aezoo eval` and `aezoo report` on each run first for the
numbers and pictures.
"""

from __future__ import annotations

import json
import tempfile
from html import escape
from pathlib import Path

from .errors import AezooError
from .files import atomic_write_bytes, is_number
from .glossary import KEYS
from .plots import save_loss_curves
from .report import CSS, environment_pieces, figure_html, read_json_or_why, value_html
from .runfolder import curves, loss_terms, read_metrics

# Pictures shown side by side when the runs have them, in this order.
PICTURES = ("samples", "prior_samples", "reconstructions", "interpolations", "traversals", "rollouts")


def _names(runs: list[Path]) -> list[str]:
    """Short unique labels: the folder names, with their parents where two share a name."""
    names = [r.name for r in runs]
    return [str(r) if names.count(r.name) > 1 else r.name for r in runs]


def _numbers_html(names: list[str], results: list[dict]) -> str:
    keys = list(dict.fromkeys(k for res in results for k in res))
    head = "<tr><th>key</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "<th>meaning</th></tr>"
    rows = []
    for k in keys:
        values = [res.get(k) for res in results]
        glossary = KEYS.get(k)
        best = None
        numbers = [v for v in values if is_number(v)]
        if glossary and glossary.better and len(numbers) > 1:
            best = (min if glossary.better == "lower" else max)(numbers)
        cells = "".join(
            f"<td class='num{' best' if best is not None and v == best else ''}'>{value_html(v)}</td>"
            if v is not None else "<td>&mdash;</td>" for v in values)
        meaning = f"{glossary.meaning} ({glossary.unit}; {glossary.better} is better)" if glossary and glossary.better \
            else (glossary.meaning if glossary else "")
        rows.append(f"<tr><th>{escape(k)}</th>{cells}<td class=meaning>{escape(meaning)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _curves_html(names: list[str], runs: list[Path], workdir: Path) -> str:
    per_run = [read_metrics(r / "metrics.jsonl") for r in runs]
    shared = [t for t in loss_terms([rec for records in per_run for rec in records])
              if all(any(t in rec for rec in records) for records in per_run)]
    overlaid: dict = {t: {} for t in shared}
    for name, records in zip(names, per_run):
        for term, by_split in curves(records, shared).items():
            for split, pts in by_split.items():
                overlaid[term][f"{name} ({split})"] = pts
    if not overlaid:
        return "<p class='muted'>The runs share no logged loss term.</p>"
    return figure_html(save_loss_curves(overlaid, workdir / "loss_curves.png"), "Loss curves, overlaid")


def _pictures_html(names: list[str], runs: list[Path]) -> str:
    parts = []
    for stem in PICTURES:
        cells = [figure_html(r / "plots" / f"{stem}.png", name) for name, r in zip(names, runs)
                 if (r / "plots" / f"{stem}.png").is_file()]
        if cells:
            parts.append(f"<h3>{escape(stem.replace('_', ' ').capitalize())}</h3><div class=row>{''.join(cells)}</div>")
    return "\n".join(parts) or "<p class='muted'>No pictures yet (run <code>aezoo report</code> on each run).</p>"


def _environments_html(names: list[str], runs: list[Path]) -> str:
    """The keys of the runs' environments (each run's latest piece of training) whose values differ."""
    last = [pieces[-1] if pieces else None for pieces, _ in map(environment_pieces, runs)]
    known = [(n, env) for n, env in zip(names, last) if env is not None]
    if len(known) < 2:
        return "<p class='muted'>Fewer than two of the runs record their environment (environment.json).</p>"
    keys = [k for k in dict.fromkeys(k for _, env in known for k in env) if k not in ("step", "started")]
    differ = [k for k in keys if len({json.dumps(env.get(k)) for _, env in known}) > 1]
    missing = [n for n, env in zip(names, last) if env is None]
    note = f"<p class='muted'>No environment.json: {escape(', '.join(missing))}.</p>" if missing else ""
    if not differ:
        return f"{note}<p>The runs' environments are the same in all {len(keys)} keys.</p>"
    head = "<tr><th>key</th>" + "".join(f"<th>{escape(n)}</th>" for n, _ in known) + "</tr>"
    rows = "".join(f"<tr><th>{escape(k)}</th>" + "".join(f"<td>{value_html(env.get(k))}</td>" for _, env in known)
                   + "</tr>" for k in differ)
    return (f"{note}<p>{len(differ)} of {len(keys)} keys differ (the rest are the same):</p>"
            f"<table>{head}{rows}</table>")


def render_comparison(run_dirs: list[str | Path]) -> str:
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise AezooError("compare needs at least two run folders")
    for r in runs:
        if not (r / "config.json").is_file():
            raise AezooError(f"{r}: no run here (config.json missing)")
    names = _names(runs)
    results = [read_json_or_why(r / "eval.json")[0] for r in runs]
    results = [res if isinstance(res, dict) else {} for res in results]
    models = [str((read_json_or_why(r / "config.json")[0] or {}).get("model_name", "?")) for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        curves_html = _curves_html(names, runs, Path(tmp))
    listing = "".join(f"<li><b>{escape(n)}</b>: {escape(m)}, <code>{escape(str(r))}</code></li>"
                      for n, m, r in zip(names, models, runs))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>aezoo comparison: {escape(", ".join(names))}</title>
<style>{CSS}
.row {{ display: flex; gap: 1em; flex-wrap: wrap; }} .row figure {{ flex: 1 1 300px; }}
td.best {{ font-weight: bold; background: #eef7ee; }}</style></head>
<body>
<h1>Comparison <small>&mdash; {len(runs)} runs</small></h1>
<ul>{listing}</ul>
<h2>Numbers</h2>
{_numbers_html(names, results)}
<h2>Losses</h2>
{curves_html}
<h2>Pictures</h2>
{_pictures_html(names, runs)}
<h2>Environments</h2>
{_environments_html(names, runs)}
</body></html>
"""


def write_comparison(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Writes the comparison page to `out` (atomically) and returns its path."""
    out = Path(out)
    atomic_write_bytes(out, render_comparison(run_dirs).encode("utf-8"))
    return out
