"""Pool sizing: the cases that used to hang a run (an actor pool reserving every CPU starves the
fetch/write tasks; an actor asking for more CPUs than any node has is never scheduled)."""
from __future__ import annotations

import pytest

from stylebatch.pipeline.resources import size_pools


def _fits(s, cpus: float, pools: int) -> float:
    """CPUs left to tasks when every pool runs all its actors."""
    return cpus - pools * s.actors * s.num_cpus


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("pools", [1, 2, 3])
def test_tasks_always_have_a_cpu_left(cpus, pools):
    s = size_pools({"CPU": cpus}, pools)
    assert _fits(s, cpus, pools) >= min(1.0, cpus * 0.25) - 1e-9, s
    assert s.task_cpus < s.num_cpus or s.num_cpus < 1  # unequal requests: Ray Data must not fuse fetch into the actor
    assert s.actors >= 1 and s.threads >= 1 and s.num_gpus == 0


def test_two_cores_one_pool_reserves_a_share_but_computes_on_both():
    s = size_pools({"CPU": 2}, 1)
    assert (s.actors, s.num_cpus, s.threads) == (1, 1.0, 2)  # one CPU left to the tasks


def test_an_actor_never_asks_more_than_the_biggest_node_has():
    s = size_pools({"CPU": 12}, 1, node_cpus=1)  # e.g. twelve 1-CPU nodes
    assert s.num_cpus <= 1 and s.threads == 1 and s.actors >= 8


def test_max_actors_caps_the_pool():
    assert size_pools({"CPU": 64}, 1).actors > 4
    assert size_pools({"CPU": 64}, 1, max_actors=4).actors == 4


def test_gpus_one_per_actor_split_between_pools():
    s = size_pools({"CPU": 32, "GPU": 4}, 2)
    assert (s.actors, s.num_gpus, s.num_cpus) == (2, 1.0, 1.0) and s.threads == 8
    assert size_pools({"CPU": 32, "GPU": 4}, 1, gpu="never").num_gpus == 0


def test_gpu_always_asks_for_gpus_an_autoscaler_has_not_started_yet():
    s = size_pools({"CPU": 4}, 1, max_actors=3, gpu="always")
    assert (s.actors, s.num_gpus) == (3, 1.0)
