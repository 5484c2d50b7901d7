"""The run's progress as a person watching it wants it: one live line on a terminal (rows done of
total, ok/skipped/error, images/s, ETA), plain periodic lines elsewhere (CI, ``ray job logs``,
files), where a carriage-return bar would be one endless line."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressDisplay:
    """Callable with the pipeline's progress dict (``done``, ``rows``, ``counts``, ``elapsed_s``).

    ``live`` (default: the stream is a terminal) redraws one line in place, at most every
    ``live_every`` s; otherwise a line is printed every ``every`` s. The last update (all rows
    done) is always shown, and ``close()`` ends the live line."""

    def __init__(self, stream: Optional[TextIO] = None, *, live: Optional[bool] = None, every: float = 30.0,
                 live_every: float = 0.2, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.every = live_every if self.live else every
        self.clock = clock
        self._last = float("-inf")
        self._width = 0

    @staticmethod
    def line(p: dict) -> str:
        done, rows, c, elapsed = p["done"], p["rows"], p["counts"], p["elapsed_s"]
        pct = 100.0 * done / rows if rows else 100.0
        ok_rate = c.get("ok", 0) / elapsed if elapsed > 0 else 0.0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _duration((rows - done) / rate) if rate > 0 and done < rows else ("done" if done >= rows else "--")
        width = 24
        filled = int(width * done / rows) if rows else width
        bar = "#" * filled + "." * (width - filled)
        return (f"[{bar}] {done}/{rows} rows {pct:5.1f}%  ok {c.get('ok', 0)}  skipped {c.get('skipped', 0)}  "
                f"error {c.get('error', 0)}  {ok_rate:.2f} images/s  elapsed {_duration(elapsed)}  ETA {eta}")

    def __call__(self, p: dict) -> None:
        now = self.clock()
        final = p["done"] >= p["rows"]
        if now - self._last < self.every and not final:
            return
        self._last = now
        text = self.line(p)
        if self.live:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
            if final:
                self.close()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
