"""The run folder: its files, its lock, its metrics log, and loading what it holds.

    config.json        the whole RunConfig (rebuilds the model and the run)
    model.safetensors  the weights
    resume.pt          the state for an exact resume (written by the engine)
    metrics.jsonl      one JSON object per logged step: "step", "split" (train or val), the terms
    eval.json          the measurements (`aezoo.evaluation`)
    environment.json   the software and machine of each piece of training (written at train start and resume)
    tensorboard/       with train.log=tensorboard: metrics.jsonl's scalars as TensorBoard event files
    plots/, report.html

Every file is written atomically (`files`). This module is the one reader and writer of
metrics.jsonl: `append_metrics` adds lines, `read_metrics` reads them (skipping a line cut short by a
crash), and `truncate_metrics` drops the lines after a checkpoint by rewriting the file atomically.
"""

from __future__ import annotations

import fcntl
import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import registry, zoo
from .config import RunConfig
from .data import Dataset, load_dataset
from .distributed import pick_device
from .errors import AezooError
from .files import atomic_write_bytes, is_number, reading


@dataclass
class RunFolder:
    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    config = property(lambda self: self.path / "config.json")
    weights = property(lambda self: self.path / "model.safetensors")
    state = property(lambda self: self.path / "resume.pt")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    eval = property(lambda self: self.path / "eval.json")
    plots = property(lambda self: self.path / "plots")
    tensorboard = property(lambda self: self.path / "tensorboard")
    lock_file = property(lambda self: self.path / ".lock")

    def require(self) -> None:
        """Refuses a folder that holds no run."""
        if not self.config.exists():
            raise AezooError(f"{self.path}: no run here (config.json missing)")

    def lock(self):
        """An exclusive lock held while this process trains here; a second trainer is refused."""
        handle = open(self.lock_file, "w")  # noqa: SIM115  (held open as the lock, closed by the caller)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AezooError(f"{self.path} is in use by another aezoo process") from None
        for stale in self.path.glob(".*.tmp"):  # left by a process killed while writing
            stale.unlink()
        return handle


# --- metrics.jsonl ------------------------------------------------------------------------------
# Keys of a metrics.jsonl line that are bookkeeping, not loss terms.
BOOKKEEPING = frozenset({"step", "split", "epoch", "lr", "samples_per_s", "time_s"})
SPLIT_ORDER = {"train": 0, "val": 1}


def _parse(line: str) -> dict | None:
    """A record with a numeric "step" and a string "split", or None (blank, cut short, not an object)."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, an int of over 4300 digits, nesting too deep
        return None
    if isinstance(rec, dict) and is_number(rec.get("step")) and isinstance(rec.get("split"), str):
        return rec
    return None


def read_metrics(path: str | Path) -> list[dict]:
    """The valid records of a metrics.jsonl, in order; [] when there is none. Any bytes are read
    (a line that is not a record is skipped); a path that cannot be read (a folder) is an AezooError."""
    path = Path(path)
    if not path.exists():
        return []
    with reading(path, "cannot read the metrics log"):
        text = path.read_text(errors="replace")
    return [rec for rec in map(_parse, text.splitlines()) if rec is not None]


def append_metrics(path: str | Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: str | Path, step: int) -> None:
    """Keeps the records up to `step` (lines logged after a checkpoint are written again on resume)."""
    path = Path(path)
    if path.exists():
        kept = [json.dumps(r) + "\n" for r in read_metrics(path) if r["step"] <= step]
        atomic_write_bytes(path, "".join(kept).encode())


def require_tensorboard() -> None:
    """Refuses train.log=tensorboard, before anything is written, when the package is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise AezooError("train.log=tensorboard needs the tensorboard package: pip install 'aezoo[tensorboard]'")


class TensorBoardLog:
    """The scalars of every metrics.jsonl line, also as TensorBoard events in RUN/tensorboard: tag
    "<split>/<key>" at the line's step. Opened at `step` (a resumed run's checkpoint), it tells TensorBoard
    to discard the events logged after that step by the interrupted piece, as `truncate_metrics` drops
    their lines."""

    def __init__(self, folder: Path, step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=step + 1)

    def add(self, record: dict) -> None:
        step, split = int(record["step"]), record["split"]
        for key, value in record.items():
            if key not in ("step", "split") and is_number(value):
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


def loss_terms(records: list[dict]) -> list[str]:
    """The numeric non-bookkeeping keys of `records`, "loss" first, then in order of appearance.
    Per-unit diagnostics (`kl_0`, `kl_1`, ...) are left to their own plot."""
    terms = {}
    for rec in records:
        for k, v in rec.items():
            if k not in BOOKKEEPING and is_number(v) and not re.fullmatch(r"kl_\d+", k):
                terms[k] = None
    return sorted(terms, key=lambda k: k != "loss")  # stable: keeps first-seen order otherwise


def curves(records: list[dict], terms: list[str]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{term: {split: [(step, value), ...]}} of `records`, splits train, val, then the rest."""
    splits = sorted({r["split"] for r in records}, key=lambda s: (SPLIT_ORDER.get(s, 2), s))
    return {t: {s: sorted((r["step"], r[t]) for r in records if r["split"] == s and is_number(r.get(t)))
                for s in splits} for t in terms}


def steps_done_and_planned(train: dict, records: list[dict]) -> tuple[int, int | None]:
    """The last logged training step, and the run's planned total (train.steps, or train.epochs times the
    steps of an epoch as the log shows them; None when neither can be told). `train` is config.json's
    train section."""
    logged = [r for r in records if r["split"] == "train"]
    done = int(logged[-1]["step"]) if logged else 0
    per_epoch = next((r["step"] / r["epoch"] for r in logged if is_number(r.get("epoch")) and r["epoch"] > 0), None)
    planned = train.get("steps") or (round(train["epochs"] * per_epoch)
                                      if per_epoch and is_number(train.get("epochs")) else None)
    return done, planned


def train_throughput(records: list[dict]) -> dict:
    """The median training samples/s over the logged intervals."""
    rates = sorted(r["samples_per_s"] for r in records if r["split"] == "train" and is_number(r.get("samples_per_s")))
    return {"train_samples_per_s": rates[len(rates) // 2]} if rates else {}


# --- loading ------------------------------------------------------------------------------------
def load_run(path: str | Path, split: str | None = None, device: str | None = None):
    """(model, dataset, cfg, run) of a finished or checkpointed run, on the configured device; the
    evaluated split cut to `eval.limit` examples. A zoo entry's name loads its writable copy (`zoo.copy`)."""
    run = RunFolder(zoo.resolve_writable(path))
    run.require()
    cfg: RunConfig = registry.load_run_config(run.path)
    if split:
        cfg.eval.split = split
    dev = pick_device(device or cfg.train.device)
    model = registry.load(run.path, device=str(dev))
    dataset: Dataset = load_dataset(cfg.data)
    if cfg.eval.limit:
        dataset.x[cfg.eval.split] = dataset.x[cfg.eval.split][: cfg.eval.limit]
    if dataset.shape != tuple(cfg.model.data_shape):
        raise AezooError(f"{run.path}: the model expects data of shape {tuple(cfg.model.data_shape)}, "
                         f"{cfg.data.name} gives {dataset.shape}")
    return model, dataset.to(dev), cfg, run
