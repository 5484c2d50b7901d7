"""tools.benchmark's steady-state rate, from the progress reports restyle makes."""
from __future__ import annotations

import pytest

from tools.benchmark import steady_rate


def test_steady_rate_leaves_out_the_start_up_and_the_drain():
    # restyle's 0-row report at t=0, a slow first commit (actor start, model load) at t=10, then a
    # batch of 8 every 2 s, and the last two batches draining together.
    ticks = [(0.0, 0), (10.0, 8), (12.0, 16), (14.0, 24), (16.0, 32), (18.0, 40), (18.01, 48)]
    assert steady_rate(ticks) == pytest.approx(4.0)  # 8 rows / 2 s, between t=12 and t=18
    # Counting from the first report, as the benchmark once did, would have said 48 / 18.01 = 2.7.


def test_steady_rate_of_a_short_run_uses_every_commit():
    assert steady_rate([(0.0, 0), (5.0, 8), (7.0, 16), (9.0, 24)]) == pytest.approx(4.0)


def test_steady_rate_needs_two_commits():
    with pytest.raises(ValueError, match="at least two committed batches"):
        steady_rate([(0.0, 0), (5.0, 8)])
