"""The driver: plan, then stream the plan through the stages on Ray Data and record the run.

    manifest -> plan (stylebatch.pipeline.plan) -> fetch -> stylize -> write (stylebatch.pipeline.stages) -> results

``restyle`` is the whole job. It chains the stages with Ray Data (fetch and write as tasks, the
model in one actor pool per model kind, sized by ``stylebatch.pipeline.resources``), records the rows that
cannot run, collects metrics as batches commit, then compacts the results and refreshes the
completed-output snapshot. The pipeline knows rows and URIs; models know pixels.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from stylebatch.config import JobConfig
from stylebatch.io import results, storage
from stylebatch.io.lease import Lease, output_lease
from stylebatch.models import registry
from stylebatch.pipeline.faults import CrashJournal
from stylebatch.pipeline.house_styles import train_networks
from stylebatch.pipeline.memory import MemoryPlan, plan_memory
from stylebatch.pipeline.plan import Plan, build_plan
from stylebatch.pipeline.ray_runtime import init_ray
from stylebatch.pipeline.resources import PoolSizing, size_pools
from stylebatch.pipeline.stages import (
    StylizeActor,
    fetch_batch,
    record_invalid_rows,
    write_batch,
)

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    output: str
    metrics: dict
    results_uri: str
    metrics_uri: str

    @property
    def failed(self) -> int:
        return int(self.metrics["counts"].get("error", 0))


def _dataset_for(ray, table: pa.Table, cfg: JobConfig, run_id: str, kind: str, styles_ref: list,
                 sizing: PoolSizing, memory: MemoryPlan):
    # One block per model batch: images flow through the stages batch by batch (memory stays flat,
    # results commit as each batch finishes) instead of waiting for bigger blocks to fill. Premium
    # (an optimisation per image) commits every image or two.
    fast = registry.KINDS[kind].quality == "fast"
    rows = cfg.batch_size if fast else 2
    blocks = [table.slice(i, rows) for i in range(0, table.num_rows, rows)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(fetch_batch, batch_format="numpy", batch_size=None, num_cpus=sizing.task_cpus,
                        memory=memory.fetch_bytes,
                        fn_kwargs={"max_size": cfg.max_size, "max_pixels": cfg.max_pixels, "memory": memory})
    ds = ds.map_batches(
        StylizeActor,
        batch_format="numpy",
        batch_size=cfg.batch_size if fast else 1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=sizing.actors),
        num_cpus=sizing.num_cpus,
        num_gpus=sizing.num_gpus,
        # Planned from the largest picture the job admits (pipeline.memory): an actor waits for a
        # node with that much free rather than dying there.
        memory=memory.actor_bytes,
        # Ray Data restarts dead actors and retries their batches by default (max_restarts=-1);
        # the CrashJournal makes sure a poisoned image cannot make that loop forever.
        # The styles (reference images: up to MBs) go in by reference: constructor arguments that
        # big would be put in the object store by Ray itself, which then warns that an actor
        # restart could lose them. This reference lives as long as the driver's plan.
        fn_constructor_kwargs={"model_kind": kind, "options": cfg.model_options(), "styles_ref": styles_ref,
                               "threads": sizing.threads, "run_id": run_id, "style_scale": cfg.style_scale},
    )
    return ds.map_batches(write_batch, batch_format="numpy", batch_size=None, num_cpus=sizing.task_cpus,
                          fn_kwargs={"out_uri": cfg.output, "run_id": run_id, "fmt": cfg.output_format,
                                     "quality": cfg.output_quality})


ProgressFn = Callable[[dict], None]  # called after every committed batch


def plan_job(cfg: JobConfig, *, train: bool = True, checked=None,
             on_event: Callable[[str], None] = log.info) -> Plan:
    """The steps before any row runs: a first plan; the networks its styles without one get
    (``house_styles``: found, or trained in Ray tasks; only looked up when ``train`` is False, as
    for a dry run); then the plan with them. ``checked``: what ``plan.precheck(cfg)`` returned, if
    the caller ran it already. ``on_event`` hears each style's decision and training."""
    plan = build_plan(cfg, checked=checked)
    outcome = train_networks(plan, cfg, train=train, on_event=on_event)
    if outcome.networks or outcome.fallbacks:
        cfg.style_networks.update(outcome.networks)
        cfg.style_notes.update(outcome.fallbacks)
        plan = build_plan(cfg, checked=checked)
    plan.decisions = outcome.decisions
    return plan


def restyle(cfg: JobConfig, *, progress: Optional[ProgressFn] = None, plan: Optional[Plan] = None,
            lease: Optional[Lease] = None) -> RunSummary:
    """Run the whole job: take the output's lease, validate and plan, stream every row through the
    actor pools, write outputs, per-row results and run metrics. Returns the summary;
    ``summary.failed`` rows had status=error. Raises ``lease.LeaseHeld`` (naming the running job)
    when another run is writing to the same output, unless ``cfg.wait`` or ``cfg.force``.

    A caller that already holds the lease (the CLI takes it before planning) passes it in; the
    plan should then be built under it, so it sees everything earlier runs finished."""
    if lease is None:
        cfg.run_id = cfg.run_id or results.make_run_id()
        with output_lease(cfg.output, cfg.run_id, wait=cfg.wait, force=cfg.force) as held:
            return restyle(cfg, progress=progress, plan=plan, lease=held)
    started = time.time()
    run_id = lease.run_id
    plan = plan or plan_job(cfg)
    ray = init_ray(cfg.ray_address)
    CrashJournal.create(run_id)
    metrics = results.RunMetrics(run_id=run_id,
                                 started_at=datetime.datetime.fromtimestamp(started, datetime.timezone.utc))
    table = plan.table
    invalid = pc.not_equal(table.column("plan_error"), "")
    if pc.any(invalid).as_py():
        metrics.add(record_invalid_rows(table.filter(invalid), cfg.output, run_id))
        table = table.filter(pc.invert(invalid))

    def report_progress() -> None:
        if progress:
            progress({"done": metrics.total, "rows": plan.table.num_rows, "counts": dict(metrics.counts),
                      "elapsed_s": time.time() - started})

    report_progress()
    kinds = [k.name for k in registry.MODEL_KINDS if k.name in set(table.column("model").to_pylist())]
    alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    node_cpus = max((float(r.get("CPU", 0)) for r in alive), default=0.0) or None
    node_memory = max((float(r.get("memory", 0)) for r in alive), default=0.0)
    sizing = size_pools(ray.cluster_resources(), max(1, len(kinds)), cfg.max_actors, node_cpus, gpu=cfg.gpu)
    datasets, memory_plans = [], []
    for kind in kinds:
        sub = table.filter(pc.equal(table.column("model"), kind))
        names = set(sub.column("style").to_pylist())
        styles_ref = [ray.put({n: plan.styles[n] for n in names})]
        memory = plan_memory(kind, cfg, int(node_memory))
        memory_plans.append(memory)
        datasets.append(_dataset_for(ray, sub, cfg, run_id, kind, styles_ref, sizing, memory))
    if datasets:
        ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            batch = {k: v for k, v in batch.items() if k != "worker"}
            metrics.add(batch)
            report_progress()
    wall = time.time() - started
    config = {k: v for k, v in dataclasses.asdict(cfg).items()}
    config["output"] = storage.redact(str(config["output"]))
    config["manifest"] = storage.redact(str(config["manifest"]))
    config["pool"] = dataclasses.asdict(sizing)
    config["memory"] = [dataclasses.asdict(m) for m in memory_plans]
    # Each style without a network: its decision, and training seconds where it trained.
    config["style_networks"] = {k: storage.redact(v) for k, v in cfg.style_networks.items()}
    config["training"] = [dataclasses.asdict(d) for d in plan.decisions]
    config["plan"] = plan.counts
    out_metrics = metrics.finish(wall, config=config, versions=results.collect_versions())
    out_metrics["run_id"] = run_id
    metrics_uri = results.write_metrics(cfg.output, run_id, out_metrics)
    if lease.lost:  # another run broke our lease (--force): the output is theirs now, fold nothing
        log.error("the lease on %s was taken over while this run went on; its results stay as per-batch parts",
                  storage.redact(cfg.output))
    else:
        try:
            results.fold_finished_runs(cfg.output)
        except storage.StorageError as exc:  # compaction and the snapshot are optimisations; parts stay the truth
            log.warning("could not compact the results or refresh the completed-index snapshot: %s", exc)
    CrashJournal.drop(run_id)
    return RunSummary(run_id, cfg.output, out_metrics, results.results_dir(cfg.output, run_id), metrics_uri)
