"""Every config key of a model's run: its default, what it may be, and what it means.

Generated from the config classes themselves, so it cannot drift: the defaults and ranges from the
dataclass fields (`config.choice`, `config.number`), the meaning from the comment beside the field (or
the comment lines just above it) in the class's source, and when a key is used from its `when`
(`config.used_when`). `aezoo config MODEL` prints it; the report shows a run's config through `run_keys`:
the keys it uses, those set away from their defaults marked.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

from . import registry
from .config import MODEL_SECTIONS, DataConfig, EvalConfig, TrainConfig, is_used

_FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+?=")


@dataclass(frozen=True)
class KeyInfo:
    key: str  # section.name
    default: object
    allowed: str  # the choices or the range, "" when any value of the type goes
    meaning: str
    when: str = ""  # the setting under which the key is used, e.g. "model.quantizer=fsq" ("" : always)


def _comments(cls) -> dict[str, str]:
    """{field: its comment} from the source of cls and its bases (a subclass's comment wins)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass.__module__ == "builtins":
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("# ").strip())
                continue
            match = _FIELD.match(line)
            if match:
                trailing = line.split("#", 1)[1].strip() if "  # " in line else ""
                text = " ".join(part for part in (" ".join(above), trailing) if part)
                if text:
                    found[match.group(1)] = text
            above = []
    return found


def _allowed(f: dataclasses.Field) -> str:
    if "choices" in f.metadata:
        return " | ".join(map(str, f.metadata["choices"]))
    if "range" in f.metadata:
        lo, hi, lo_open, hi_open = f.metadata["range"]
        if hi is None:
            return "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
        left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
        return f"{left}{'-inf' if lo is None else f'{lo:g}'}, {hi:g}{right}"
    return ""


def _section(name: str, cls) -> list[KeyInfo]:
    comments = _comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        when = "; ".join(f"{name}.{c}" for c in f.metadata["when"].split("; ")) if "when" in f.metadata else ""
        out.append(KeyInfo(f"{name}.{f.name}", default, _allowed(f), comments.get(f.name, ""), when))
    return out


def _classes(model_name: str) -> list[tuple[str, type]]:
    e = registry.entry(model_name)
    return [(e.section, e.config_class), ("data", DataConfig), ("train", TrainConfig), ("eval", EvalConfig)]


def reference(model_name: str) -> list[KeyInfo]:
    """Every key of a run of `model_name`, section by section."""
    return [info for name, cls in _classes(model_name) for info in _section(name, cls)]


@dataclass(frozen=True)
class RunKey:
    key: str  # section.name
    value: object  # as config.json holds it
    default: object  # as config.json would hold it; None for a key the config classes do not know
    used: bool  # False when its `when` does not hold for this run

    @property
    def changed(self) -> bool:
        return self.default is not None and self.value != self.default


def _json_like(value):
    return list(value) if isinstance(value, tuple) else value


def run_keys(tree: dict) -> list[RunKey]:
    """The keys of a run's config.json (`tree`), section by section (the model's first), each with its default
    and whether the run uses it. A section or key the config classes do not know (another version's) is kept,
    as used."""
    model_name = tree.get("model_name")
    try:
        classes = dict(_classes(model_name)) if isinstance(model_name, str) else {}
    except Exception:  # an unknown model: AezooError from the registry
        classes = {}
    out = []
    order = {name: i for i, name in enumerate((*MODEL_SECTIONS, "data", "train", "eval"))}
    for section, values in sorted(tree.items(), key=lambda item: order.get(item[0], len(order))):
        if not isinstance(values, dict):
            continue
        fields = {f.name: f for f in dataclasses.fields(classes[section])} if section in classes else {}
        for name, value in values.items():
            f = fields.get(name)
            if f is None:
                out.append(RunKey(f"{section}.{name}", value, None, True))
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(RunKey(f"{section}.{name}", value, _json_like(default), is_used(f, values)))
    return out


def format_reference(model_name: str) -> str:
    """`reference` as an aligned table, one key a line."""
    rows = reference(model_name)
    shown = [(r.key, str(_json_like(r.default)), r.allowed, r.meaning + (f" (used when {r.when})" if r.when else ""))
             for r in rows]
    w = [max(len(row[i]) for row in shown) for i in range(3)]
    return "\n".join(f"{k:<{w[0]}}  {d:<{w[1]}}  {a:<{w[2]}}  {m}".rstrip() for k, d, a, m in shown)
