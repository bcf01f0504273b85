"""The model zoo: trained models shipped inside the package, each loadable by name.

An entry is a trimmed run folder, src/aezoo/zoo/NAME/:

    zoo.json           model, data, the headline eval keys, the command(s) that made it, the reference
    config.json        the run's config (rebuilds the model)
    model.safetensors  the weights
    eval.json          `aezoo eval`'s measurements of these weights
    metrics.jsonl      the training log, when small (the report's curves)
    prior/             a code model's prior (config.json, model.safetensors, metrics.jsonl)
    README.md          what it is, how it was made, its numbers (written by bench/zoo_add.py)

A name works wherever a run folder does. Reading it (`aezoo.load(NAME)`, `aezoo encode NAME`,
`aezoo compress NAME`) reads the entry where it is installed. Anything that writes into a run folder
(`aezoo eval`, `report`, `sample` without --out, `train-prior`, and `runfolder.load_run`, which the
engine uses to write) works on a copy in ./runs/zoo/NAME/ instead, made on first use and remade when the
entry's weights change, so the installed package is never written to. A folder of the same name in the
current directory takes precedence over the entry.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import AezooError
from ..files import atomic_write_bytes, read_json

ROOT = Path(__file__).parent
COPIES = Path("runs") / "zoo"  # relative to the current directory
NAME = re.compile(r"[a-z0-9][a-z0-9.-]*")
WEIGHTS = ("model.safetensors", "prior/model.safetensors")


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    info: dict  # zoo.json

    @property
    def model(self) -> str:
        return self.info["model"]

    @property
    def data(self) -> str:
        return self.info["data"]

    @property
    def headline(self) -> list[str]:
        return list(self.info["headline"])

    def eval(self) -> dict:
        return read_json(self.path / "eval.json")

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def names() -> list[str]:
    """The entries' names, sorted."""
    return sorted(p.name for p in ROOT.iterdir() if NAME.fullmatch(p.name) and (p / "zoo.json").is_file())


def entries() -> list[Entry]:
    return [get(name) for name in names()]


def get(name: str) -> Entry:
    """The entry called `name`; an unknown name is refused in one line naming the entries."""
    folder = ROOT / name
    if not NAME.fullmatch(name) or not (folder / "zoo.json").is_file():
        raise unknown(name)
    return Entry(name, folder, read_json(folder / "zoo.json"))


def unknown(name: str) -> AezooError:
    import difflib

    valid = names()
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(valid) or "empty"
    return AezooError(f"{name}: no run here and no zoo entry of that name{hint} (the zoo: {listing})")


def is_name(path: str | Path) -> bool:
    """True when `path` can only mean a zoo entry: a bare name that is not a file or folder here."""
    text = str(path)
    return bool(NAME.fullmatch(text)) and not Path(text).exists()


def resolve(path: str | Path) -> Path:
    """The folder to read for `path`: the path itself, or the installed entry for a zoo name."""
    return get(str(path)).path if is_name(path) else Path(path)


def resolve_writable(path: str | Path, root: str | Path | None = None) -> Path:
    """The folder to read and write for `path`: the path itself, or the copy of a zoo entry (`copy`)."""
    return copy(str(path), root) if is_name(path) else Path(path)


def copy(name: str, root: str | Path | None = None) -> Path:
    """ROOT_OF_COPIES/NAME (default ./runs/zoo/NAME), a run folder holding the entry's files; made when
    missing and remade when the entry's weights differ from the copy's, so that what eval, report or
    train-prior wrote into an up-to-date copy stays."""
    e = get(name)
    dest = Path(root if root is not None else COPIES) / name
    if dest.exists() and not dest.is_dir():
        raise AezooError(f"{dest} is a file: the copy of zoo entry {name} goes there")
    if all(_same(e.path / w, dest / w) for w in WEIGHTS):
        return dest
    files = [f.relative_to(e.path) for f in e.path.rglob("*") if f.is_file()]
    for rel in sorted(files, key=lambda r: (r.as_posix() in WEIGHTS, r.as_posix())):  # the weights last
        atomic_write_bytes(dest / rel, (e.path / rel).read_bytes())
    if (dest / "plots").is_dir():  # pictures of the weights replaced
        shutil.rmtree(dest / "plots")
    (dest / "report.html").unlink(missing_ok=True)
    return dest


def _same(a: Path, b: Path) -> bool:
    if not a.exists():
        return not b.exists()
    return b.is_file() and a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def format_value(value) -> str:
    """An eval.json number as the zoo's READMEs print it (4 significant digits; lists element-wise)."""
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value
