"""Add a finished run to the model zoo (src/aezoo/zoo/NAME), and its rows to README.md's Reproductions table.

    .venv/bin/python bench/zoo_add.py RUN NAME \\
        --command "aezoo train vae --out runs/burda --config configs/vae_burda2015.toml" \\
        --command "aezoo eval runs/burda --set ..." \\
        --headline nll_iwae --reference "nll_iwae=86.76 (Burda et al. 2016, table 1, VAE k=1)" \\
        --summary "Burda et al. 2016's VAE on MNIST, their full 3,280-epoch schedule" \\
        [--note "made of 3 pieces joined by aezoo resume"] [--machine "..."] [--force] [--no-readme]

RUN must hold config.json, model.safetensors and eval.json (run `aezoo eval RUN` first), and for vqvae and
vqvae2 a trained prior in RUN/prior. The entry gets:
  - config.json, model.safetensors, eval.json, environment.json if the run has one, metrics.jsonl when
    under 1 MB, and prior/ (config.json, model.safetensors, metrics.jsonl); never resume.pt, the prior's
    code table, plots or reports;
  - zoo.json: model, data, the headline keys of eval.json, the references, the commands, the note, and
    the budget read from the run's log: steps, epochs, and the wall time of each piece of training (a
    piece is a stretch of metrics.jsonl's time_s, which restarts at each `aezoo resume`), for the model
    and its prior;
  - README.md: what it is, the commands, the budget, a table of the headline numbers with their
    references, and a table of every number in eval.json (tests/engine/test_zoo.py checks both tables
    and README.md's rows against eval.json).
Before anything is written: the entry must come to at most 10 MB, its model and prior must load, and the
headline keys must be in eval.json; an existing entry is replaced only with --force. The entry is written
into a temporary folder beside the zoo and renamed into place. Then README.md's Reproductions table gets
one row per headline key (rows of an entry of the same name are replaced) and the command prints them.
Commit the entry folder and README.md together.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import aezoo
from aezoo import zoo
from aezoo.errors import AezooError
from aezoo.files import read_json, write_json
from aezoo.glossary import KEYS
from aezoo.models.capabilities import CodeModel, Generative
from aezoo.runfolder import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from common import pieces  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 10_000_000
METRICS_LIMIT_BYTES = 1_000_000
HEADLINE = {  # the default headline keys of each model's entry
    "vae": ["nll_iwae"], "beta_vae": ["betavae_score", "mig"], "factor_vae": ["factorvae_score", "mig"],
    "beta_tc_vae": ["mig"], "dip_vae": ["mig"], "vqvae": ["bits_per_dim", "recon_mse"],
    "vqvae2": ["bits_per_dim", "recon_mse"], "tdvae": ["rollout_mse"], "ae": ["recon_mse"],
    "dae": ["finetune_test_error"], "cae": ["finetune_test_error"], "sparse_ae": ["finetune_test_error"],
    "ksparse_ae": ["finetune_test_error"],
}
TABLE_HEAD = "| model | data | metric | obtained | reference | budget | command |"


def budget_of(folder: Path) -> dict:
    """Steps, epochs and pieces of the training logged in folder (a run or its prior)."""
    cfg = read_json(folder / "config.json")
    records = read_metrics(folder / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    last = train[-1] if train else {}
    parts = pieces(records)
    return {
        "steps": last.get("step"),
        "epochs": last.get("epoch"),
        "batch_size": cfg.get("train", {}).get("batch_size"),
        "wall_s": round(sum(p["wall_s"] for p in parts), 1) if parts else None,
        "pieces": parts,
    }


def describe_budget(b: dict) -> str:
    steps = f"{b['steps']:,} steps" if b["steps"] is not None else "steps not logged"
    e = b.get("epochs")
    epochs = f" ({f'{e:,.0f}' if e >= 100 else f'{e:.3g}'} epochs)" if isinstance(e, (int, float)) else ""
    wall = f", {duration(b['wall_s'])}" if b["wall_s"] is not None else ""
    n = len(b["pieces"])
    return f"{steps}{epochs} of batch {b['batch_size']}{wall}" + (f" in {n} pieces" if n > 1 else "")


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def files_of(run: Path) -> list[str]:
    """The run's files that go into the entry, relative to the run."""
    keep = ["config.json", "model.safetensors", "eval.json"]
    for optional in ("environment.json", "metrics.jsonl"):
        f = run / optional
        if f.is_file() and (optional != "metrics.jsonl" or f.stat().st_size <= METRICS_LIMIT_BYTES):
            keep.append(optional)
    if (run / "prior" / "model.safetensors").is_file():
        keep += [f"prior/{n}" for n in ("config.json", "model.safetensors", "metrics.jsonl")
                 if (run / "prior" / n).is_file()]
    return keep


def check_run(run: Path, headline: list[str]) -> tuple[dict, dict, bool]:
    """(config tree, eval.json) of a run fit for the zoo; refuses one that is not."""
    for f in ("config.json", "model.safetensors"):
        if not (run / f).is_file():
            raise AezooError(f"{run}: no {f}: not a finished run")
    if not (run / "eval.json").is_file():
        raise AezooError(f"{run}: no eval.json: run `aezoo eval {run}` first")
    cfg, results = read_json(run / "config.json"), read_json(run / "eval.json")
    missing = [k for k in headline if k not in results]
    if missing:
        raise AezooError(f"{run}/eval.json has no {', '.join(missing)} (it has: {', '.join(sorted(results))})")
    model = aezoo.load(run)
    if isinstance(model, CodeModel) and model.prior is None:
        raise AezooError(f"{run}: a {cfg['model_name']} without a prior cannot sample: `aezoo train-prior {run}`")
    if isinstance(model, Generative):
        torch.manual_seed(0)
        with torch.no_grad():
            sample = model.sample(2)
        if not torch.isfinite(sample).all():
            raise AezooError(f"{run}: the model's samples are not finite")
    return cfg, results, isinstance(model, Generative)


def parse_references(items: list[str], headline: list[str]) -> dict[str, str]:
    refs = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in headline:
            raise AezooError(f"--reference {item!r}: expected KEY=TEXT with KEY one of {', '.join(headline)}")
        refs[key] = text.strip()
    return refs


def unit(key: str) -> str:
    return KEYS[key].unit if key in KEYS else ""


def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(key, value, unit, meaning) of each number or list of numbers in eval.json."""
    rows = []
    for key, value in results.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        numbers = isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value)
        if (numeric and math.isfinite(value)) or (numbers and len(value) <= 16):
            meaning = KEYS[key].meaning if key in KEYS else ""
            rows.append((key, zoo.format_value(value), unit(key), meaning))
    return rows


def readme_text(name: str, info: dict, results: dict, generative: bool) -> str:
    b = info["budget"]
    lines = [f"# {name}", "", info["summary"], "",
             f"`{info['model']}` on `{info['data']}`. Use it by name wherever aezoo takes a run folder:", "",
             "```", (f"aezoo sample {name} --out samples.png" if generative
                     else f"aezoo encode {name} --split test --out codes.npz   # no prior to sample from"),
             f"aezoo eval {name}      # on a copy in ./runs/zoo/{name}",
             f'python -c "import aezoo; print(aezoo.load(\'{name}\'))"', "```", "",
             "## How it was made", "", "```", *info["commands"], "```", ""]
    lines.append(f"Training: {describe_budget(b)}" + (f"; its prior: {describe_budget(b['prior'])}" if "prior" in b
                                                       else "") + f", on {info['machine']}.")
    for what, part in (("model", b), ("prior", b.get("prior"))):
        if part and len(part["pieces"]) > 1:
            lines.append(f"Pieces of the {what}: " + "; ".join(
                f"steps {p['from_step']}-{p['to_step']} in {duration(p['wall_s'])}" for p in part["pieces"]) + ".")
    if info.get("note"):
        lines += ["", info["note"]]
    lines += ["", "## Headline", "", "| metric | obtained | unit | reference |", "| --- | ---: | --- | --- |"]
    for key in info["headline"]:
        lines.append(f"| `{key}` | {zoo.format_value(results[key])} | {unit(key)} | "
                     f"{info['references'].get(key, 'none published')} |")
    lines += ["", f"## Every number of eval.json ({results.get('split', 'test')} split)", "",
              "| key | value | unit | meaning |", "| --- | ---: | --- | --- |"]
    lines += [f"| `{k}` | {v} | {u} | {m} |" for k, v, u, m in table_rows(results)]
    return "\n".join(lines) + "\n"


def reproduction_rows(name: str, info: dict, results: dict) -> list[str]:
    b = info["budget"]
    budget = describe_budget(b) + (f"; prior {describe_budget(b['prior'])}" if "prior" in b else "")
    budget += f"; {info['machine']}"
    command = "; ".join(f"`{c}`" for c in info["commands"])
    return [f"| `{name}` ({info['model']}) | {info['data']} | `{key}`{f' ({unit(key)})' if unit(key) else ''} | "
            f"{zoo.format_value(results[key])} | {info['references'].get(key, 'none published')} | {budget} | "
            f"{command} |" for key in info["headline"]]


def update_readme(path: Path, name: str, rows: list[str]) -> None:
    """Replaces NAME's rows of the Reproductions table (appends them when it has none)."""
    lines = path.read_text().splitlines()
    if TABLE_HEAD not in lines:
        raise AezooError(f"{path}: no Reproductions table (a line {TABLE_HEAD!r})")
    start = lines.index(TABLE_HEAD) + 2  # after the header and its rule
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    kept = [line for line in lines[start:end] if not line.startswith(f"| `{name}` (")]
    lines[start:end] = kept + rows
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def add(args) -> Path:
    run = Path(args.run)
    if not zoo.NAME.fullmatch(args.name):
        raise AezooError(f"{args.name!r}: a zoo name is lower-case letters, digits, '-' and '.'")
    dest = zoo.ROOT / args.name
    if dest.exists() and not args.force:
        raise AezooError(f"{dest} exists: --force replaces it")
    cfg = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    model_name = cfg.get("model_name", "")
    headline = args.headline or HEADLINE.get(model_name, [])
    if not headline:
        raise AezooError(f"no default headline keys for {model_name!r}: give --headline KEY")
    cfg, results, generative = check_run(run, headline)
    files = files_of(run)
    size = sum((run / f).stat().st_size for f in files)
    if size > LIMIT_BYTES:
        raise AezooError(f"{run}: the entry would be {size / 1e6:.1f} MB, over the zoo's {LIMIT_BYTES / 1e6:g} MB")
    budget = budget_of(run)
    if "prior/config.json" in files:
        budget["prior"] = budget_of(run / "prior")
    info = {
        "model": model_name,
        "data": cfg["data"]["name"],
        "summary": args.summary,
        "headline": headline,
        "references": parse_references(args.reference, headline),
        "commands": args.command,
        "note": args.note,
        "machine": args.machine or f"{cpu_name()}, {os.cpu_count()} cores",
        "budget": budget,
    }
    tmp = Path(tempfile.mkdtemp(dir=zoo.ROOT, prefix=f".{args.name}."))
    tmp.chmod(0o755)
    try:
        for f in files:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / f, tmp / f)
        write_json(tmp / "zoo.json", info)
        (tmp / "README.md").write_text(readme_text(args.name, info, results, generative))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rows = reproduction_rows(args.name, info, results)
    if not args.no_readme:
        update_readme(REPO / "README.md", args.name, rows)
    print(f"wrote {dest} ({zoo.get(args.name).size_bytes() / 1e6:.2f} MB)")
    print("\n".join(rows))
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the finished, evaluated run folder")
    p.add_argument("name", help="the entry's name, e.g. vae-burda2015")
    p.add_argument("--command", action="append", required=True,
                   help="a command that made the run, in order (repeat for each: train, resume, train-prior, eval)")
    p.add_argument("--summary", required=True, help="one or two sentences: what the model is")
    p.add_argument("--headline", action="append", help="an eval.json key to headline (repeat; default by model)")
    p.add_argument("--reference", action="append", default=[], metavar="KEY=TEXT",
                   help="the paper's number for a headline key, with where it is from")
    p.add_argument("--note", default="", help="departures from the paper or the benchmark, how the run was made")
    p.add_argument("--machine", help="the CPU it trained on (default: this machine's)")
    p.add_argument("--force", action="store_true", help="replace an entry of the same name")
    p.add_argument("--no-readme", action="store_true", help="leave README.md's Reproductions table alone")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        add(args)
    except AezooError as e:
        print(f"zoo_add: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
