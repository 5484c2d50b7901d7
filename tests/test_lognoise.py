"""The stderr filter drops Ray Data's one known ERROR line (ray#57733) and passes everything else."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from stylebatch.pipeline.lognoise import LineFilter, is_noise

# As a Ray 2.60 driver prints it (text from _raylet.so; the actor ID varies per run).
RAY_LINE = (b"[2026-11-30 17:02:11,123 E 4242 4242] core_worker.cc:2917: Actor with class name: "
            b"'MapWorker(MapBatches(Stylize))' and ID: '8c1a0e4f3f0b0c6ad0b1c2d301000000' has constructor "
            b"arguments in the object store and max_restarts > 0. If the arguments in the object store go out "
            b"of scope or are lost, the actor restart will fail. See "
            b"https://github.com/ray-project/ray/issues/53727 for more details.\n")


def _run(*chunks: bytes) -> bytes:
    out = []
    f = LineFilter(out.append)
    for c in chunks:
        f.feed(c)
    f.close()
    return b"".join(out)


def test_only_the_known_ray_line_is_noise():
    assert is_noise(RAY_LINE)
    other_error = b"[2026-11-30 17:02:11,123 E 4242 4242] core_worker.cc:100: Failed to connect to GCS.\n"
    assert not is_noise(other_error)
    assert not is_noise(b"error: manifest.parquet: missing required column 'uri'\n")
    # Same words, another actor class: not Ray Data's own pool, so not ours to hide.
    assert not is_noise(RAY_LINE.replace(b"MapWorker(MapBatches(Stylize))", b"MyActor"))


def test_filter_drops_the_line_even_when_it_arrives_in_pieces():
    before, after = b"Traceback (most recent call last):\n", b"ValueError: boom\n"
    assert _run(before + RAY_LINE + after) == before + after
    pieces = [RAY_LINE[i:i + 7] for i in range(0, len(RAY_LINE), 7)]
    assert _run(before, *pieces, after) == before + after


def test_filter_passes_progress_redraws_at_once_and_keeps_real_errors():
    out: list[bytes] = []
    f = LineFilter(out.append)
    f.feed(b"\r[####....] 10/40 rows")          # a live progress line has no newline yet
    assert out == [b"\r[####....] 10/40 rows"]   # not held back
    real = b"[2026-11-30 17:02:12,000 E 4242 4242] raylet.cc:12: worker died\n"
    f.feed(real[:20])
    assert len(out) == 1                          # the start of a log line waits for its end...
    f.feed(real[20:])
    assert out[-1] == real                        # ...and a real error passes whole
    f.feed(b"[2026-11-30 partial")               # held, then flushed at close: nothing lost
    f.close()
    assert out[-1] == b"[2026-11-30 partial"


def test_context_manager_filters_fd2_of_the_process_and_its_children(tmp_path):
    script = textwrap.dedent("""
        import os, subprocess, sys
        from stylebatch.pipeline.lognoise import ray_noise_filtered
        line = os.environ["RAY_LINE"].encode()
        child = "import os, sys; os.write(2, os.environ['RAY_LINE'].encode()); print('child ok', file=sys.stderr)"
        with ray_noise_filtered():
            os.write(2, line)
            subprocess.run([sys.executable, "-c", child])
            print("parent ok", file=sys.stderr, flush=True)
        print("after", file=sys.stderr, flush=True)
    """)
    env = {**{k: v for k, v in os.environ.items() if k != "STYLEBATCH_RAW_STDERR"}, "RAY_LINE": RAY_LINE.decode()}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [b"child ok", b"parent ok", b"after"]
    raw = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                         env={**env, "STYLEBATCH_RAW_STDERR": "1"})
    assert raw.stderr.count(b"core_worker.cc") == 2   # the switch shows Ray's stderr untouched
