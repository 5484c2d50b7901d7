"""Sizing the actor pools from what Ray reports, so fetch/write tasks always have CPU left."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class PoolSizing:
    actors: int
    num_cpus: float
    num_gpus: float
    threads: int
    task_cpus: float


def size_pools(resources: dict, pools: int, max_actors: Optional[int] = None,
               node_cpus: Optional[float] = None, gpu: str = "auto") -> PoolSizing:
    """On a 2-core machine an actor pool that reserves every CPU starves the fetch tasks and the
    job hangs (seen with Ray 2.60): always leave at least one CPU to the tasks. Task and actor CPU
    requests also differ on purpose: Ray Data would otherwise fuse the fetch stage into the actors,
    and decoding would stop overlapping with the model. ``node_cpus`` (the largest node's CPU count)
    caps what one actor reserves: an actor asking for more CPUs than any single node has can never
    be scheduled (e.g. on three 1-CPU nodes) and the job would wait forever."""
    cpus = float(resources.get("CPU", 1))
    gpus = float(resources.get("GPU", 0)) if gpu != "never" else 0.0
    if gpu == "always" and gpus < 1:
        # An autoscaling cluster may have no GPU node up yet: ask for them and let it scale.
        gpus = float(max_actors or 1) * pools
    if gpus >= 1:
        per_pool = max(1, int(gpus // pools))
        actors = min(per_pool, max_actors or per_pool)
        return PoolSizing(actors, 1.0, 1.0, max(1, int(cpus // max(1, gpus))), 0.5)
    task_reserve = max(1.0, cpus * 0.25)
    budget = cpus - task_reserve
    if budget < pools:  # tiny machine: fractional reservations, the OS shares the cores
        share = max(0.25, budget / pools) if budget > 0 else 0.25
        return PoolSizing(1, round(min(share, 0.75), 2), 0.0, max(1, int(cpus)), 0.2)
    threads = max(1, min(4, int(budget // pools)))
    if node_cpus:
        threads = max(1, min(threads, int(node_cpus)))
    actors = max(1, int(budget // pools // threads))
    if max_actors:
        actors = min(actors, max_actors)
    # A lone actor on a small machine may use every core for its math while reserving fewer.
    math_threads = int(min(cpus, node_cpus or cpus)) if cpus <= 4 and actors == 1 and pools == 1 else threads
    return PoolSizing(actors, float(threads), 0.0, math_threads, 0.5)
