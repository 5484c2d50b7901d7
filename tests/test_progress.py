"""The progress display: one live line on a terminal, periodic plain lines elsewhere."""
from __future__ import annotations

import io

from stylebatch.pipeline.progress import ProgressDisplay


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _p(done, rows=100, ok=None, err=0, skipped=0, elapsed=10.0):
    return {"done": done, "rows": rows, "elapsed_s": elapsed,
            "counts": {"ok": done - err - skipped if ok is None else ok, "error": err, "skipped": skipped}}


def test_line_has_counts_rate_and_eta():
    line = ProgressDisplay.line(_p(25, err=1, skipped=4, elapsed=10.0))
    assert "25/100 rows" in line and " 25.0%" in line
    assert "ok 20  skipped 4  error 1" in line
    assert "2.00 images/s" in line            # ok rows per second
    assert "ETA 30s" in line                  # 75 rows left at 2.5 rows/s
    assert line.startswith("[" + "#" * 6 + "." * 18 + "]")
    assert "ETA done" in ProgressDisplay.line(_p(100))
    assert "ETA 1h00m" in ProgressDisplay.line(_p(1, rows=361, elapsed=10.0))


def test_terminal_redraws_one_line_in_place():
    out, clock = io.StringIO(), _Clock()
    show = ProgressDisplay(out, live=True, clock=clock)
    show(_p(10))
    clock.t = 0.05
    show(_p(20))                              # too soon: not drawn
    clock.t = 1.0
    show(_p(30))
    show(_p(100))                             # the last one is always drawn, then the line ends
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "20/100" not in text and "30/100" in text and "100/100" in text


def test_not_a_terminal_prints_plain_lines_now_and_then():
    out, clock = io.StringIO(), _Clock()
    show = ProgressDisplay(out, clock=clock)  # StringIO is not a terminal
    for i in range(1, 100):
        clock.t = i                           # one batch a second
        show(_p(i, elapsed=float(i)))
    show(_p(100, elapsed=100.0))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [ln.split()[1] for ln in lines] == ["1/100", "31/100", "61/100", "91/100", "100/100"]
