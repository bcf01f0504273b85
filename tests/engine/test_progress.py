"""Progress when stderr is not a terminal: periodic plain lines with count, rate and time left."""

import io

from aezoo.progress import LineProgress


def test_lines_report_count_share_rate_and_time_left(monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 40.0, 62.0, 62.0, 62.0])
    monkeypatch.setattr("aezoo.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = LineProgress(None, "vae", total=100, unit="step", every=30.0, file=out)
    bar.set_postfix(loss="93.1")
    for _ in range(4):
        bar.update(10)  # at 10 s, 31 s (a line), 40 s, 62 s (a line)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "vae: 20/100 steps (20%), 0.645 steps/s, 2m04s left, loss=93.1"
    assert lines[1].startswith("vae: 40/100 steps (40%), 0.645 steps/s, 1m33s left")
    assert len(lines) == 3  # and the closing line


def test_iterating_prints_nothing_for_quick_work():
    out = io.StringIO()
    assert list(LineProgress(range(5), "codes", every=30.0, file=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue() == ""
