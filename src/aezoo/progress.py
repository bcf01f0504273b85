"""Progress of long work on stderr: a bar on a terminal, and one line every `every` seconds otherwise
(a log file, `nohup`, `make`), so a wait is never silent.

    for x in progress(batches, "IWAE k=5000"):        # evaluation passes, code extraction, ...
    bar = progress(None, "vae", total=steps, initial=step, unit="step"); bar.update(1); bar.note(loss=...)
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

EVERY_S = 30.0  # seconds between progress lines when stderr is not a terminal


class LineProgress:
    """tqdm's interface (iteration, update, set_postfix, close) as periodic plain lines:
    `desc: 1,200/6,000 steps (20%), 35.1 steps/s, 2m17s left, loss=93.1`."""

    def __init__(self, iterable=None, desc: str = "", total: int | None = None, initial: int = 0,
                 unit: str = "it", every: float = EVERY_S, file=None):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = self.start_n = initial
        self.file = file or sys.stderr
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.write(now)

    def write(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.started, 1e-9)
        parts = [f"{self.n:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}s"]
        if self.total:
            parts[0] += f" ({self.n / self.total:.0%})"
        parts.append(f"{rate:.3g} {self.unit}s/s")
        if self.total and rate > 0:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=self.file, flush=True)

    def close(self) -> None:
        """A last line saying where it ended, if the work took long enough to have printed any."""
        if not self.closed and time.monotonic() - self.started >= self.every:
            self.write(time.monotonic())
        self.closed = True


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress(iterable=None, desc: str = "", total: int | None = None, initial: int = 0, unit: str = "it",
             enabled: bool = True):
    """A bar on a terminal, periodic lines otherwise; nothing when not `enabled`."""
    if not enabled:
        return tqdm(iterable, total=total, initial=initial, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, leave=False,
                    dynamic_ncols=True, file=sys.stderr)
    return LineProgress(iterable, desc, total, initial, unit)
