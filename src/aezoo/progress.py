"""Progress of long work on stderr: a bar on a terminal, nothing to clutter a log file otherwise."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(iterable, desc: str, total: int | None = None):
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None, file=sys.stderr)
