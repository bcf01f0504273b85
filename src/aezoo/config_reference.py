"""Every config key of a model's run: its default, what it may be, and what it means.

Generated from the config classes themselves, so it cannot drift: the defaults and ranges from the
dataclass fields (`config.choice`, `config.number`), the meaning from the comment beside the field (or
the comment lines just above it) in the class's source. `aezoo config MODEL` prints it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

from . import registry
from .config import DataConfig, EvalConfig, TrainConfig

_FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+?=")


@dataclass(frozen=True)
class KeyInfo:
    key: str  # section.name
    default: object
    allowed: str  # the choices or the range, "" when any value of the type goes
    meaning: str


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
        out.append(KeyInfo(f"{name}.{f.name}", default, _allowed(f), comments.get(f.name, "")))
    return out


def reference(model_name: str) -> list[KeyInfo]:
    """Every key of a run of `model_name`, section by section."""
    e = registry.entry(model_name)
    return (_section(e.section, e.config_class) + _section("data", DataConfig) + _section("train", TrainConfig)
            + _section("eval", EvalConfig))


def format_reference(model_name: str) -> str:
    """`reference` as an aligned table, one key a line."""
    rows = reference(model_name)
    shown = [(r.key, str(list(r.default) if isinstance(r.default, tuple) else r.default), r.allowed, r.meaning)
             for r in rows]
    w = [max(len(row[i]) for row in shown) for i in range(3)]
    return "\n".join(f"{k:<{w[0]}}  {d:<{w[1]}}  {a:<{w[2]}}  {m}".rstrip() for k, d, a, m in shown)
