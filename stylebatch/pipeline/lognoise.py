"""Drop the one ERROR line that Ray Data 2.60 prints on every clean run, and nothing else.

Every actor pool in Ray Data 2.60 passes its own ``DataContext`` and ``MapTransformer`` to the
actor constructor as object references, with ``max_restarts=-1``; Ray core then logs, once per
process and at ERROR level, that such an actor's restart "will fail" if those objects are lost
(ray-project/ray#57733, upstream and still open). The objects are owned by the driver and live as
long as the run, so for this job the line is noise, and a user reads it as a failure. The only
switch that silences it at the source is ``max_restarts=0``, which would give up the actor
restarts that recover from a crashed model actor (see ``faults.py``).

So, for the duration of a job, the driver's stderr (file descriptor 2, where Ray core's C++ log
lines go) runs through a tiny filter *process* that forwards every byte except lines matching
``KNOWN_NOISE``. A process rather than a thread: whatever the driver writes before it dies (a
traceback, a fatal signal's message) is still drained and printed. ``STYLEBATCH_RAW_STDERR=1``
turns the filter off.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

KNOWN_NOISE = (
    # ray-project/ray#57733: Ray Data's own constructor arguments, see the module docstring.
    re.compile(rb"core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*' and ID: '[0-9a-f]+' has constructor "
               rb"arguments in the object store and max_restarts > 0\."),
)
_LOG_LINE_START = re.compile(rb"^\[\d{4}-\d\d-\d\d ")  # how Ray core's log lines begin


def is_noise(line: bytes) -> bool:
    return any(p.search(line) for p in KNOWN_NOISE)


class LineFilter:
    """Forwards bytes as they come (a live progress line redrawn with '\\r' must not wait for a
    newline), except that a line that begins like a Ray core log line is held until complete and
    then dropped if it is known noise."""

    def __init__(self, write):
        self._write = write
        self._held = b""

    def feed(self, data: bytes) -> None:
        buf = self._held + data
        self._held = b""
        out = []
        while buf:
            nl = buf.find(b"\n")
            if nl < 0:
                if _LOG_LINE_START.match(buf) or (len(buf) < 12 and buf.startswith(b"[")):
                    self._held = buf  # maybe the start of a log line: wait for the rest
                else:
                    out.append(buf)
                break
            line, buf = buf[:nl + 1], buf[nl + 1:]
            if not is_noise(line):
                out.append(line)
        if out:
            self._write(b"".join(out))

    def close(self) -> None:
        if self._held and not is_noise(self._held):
            self._write(self._held)
        self._held = b""


def _filter_main() -> None:
    out = sys.stdout.buffer

    def write(b: bytes) -> None:
        out.write(b)
        out.flush()

    f = LineFilter(write)
    while True:
        try:
            data = os.read(0, 65536)
        except InterruptedError:  # pragma: no cover
            continue
        if not data:
            break
        f.feed(data)
    f.close()


@contextlib.contextmanager
def ray_noise_filtered():
    """Run the body with fd 2 going through the filter process (see the module docstring)."""
    if os.environ.get("STYLEBATCH_RAW_STDERR") or not _fd_open(2):
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    try:
        # The filter ignores Ctrl-C (the driver handles it) and dies only when every writer is gone.
        proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=read_end,
                                stdout=2, close_fds=True, preexec_fn=_ignore_sigint)
    except OSError:
        os.close(read_end)
        os.close(write_end)
        yield
        return
    os.close(read_end)
    saved = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the filter sees EOF once processes started meanwhile (Ray's) let go too
        os.close(saved)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    _filter_main()
