"""Networks for the styles that have none, trained by the job where they pay (``--train-style``).

After a first plan, every style whose rows would run AdaIN (``--style-image``, catalog entries
without ``network:``, rows whose style is an image URI) gets a decision: a network already
trained for it (cached by the style's content and the training settings under ``OUT/_styles/``
or ``--style-cache``) is used; otherwise, with ``--train-style auto``, a style with at least
``--train-min-rows`` rows still to do gets one trained, ``always`` trains for every such style and
``never`` for none. The trainings run at the same time as Ray tasks (a GPU each on a GPU cluster;
on CPU the cores shared out, each task's threads matching its CPUs); a training that fails leaves
its style's rows to AdaIN with the reason in their results. The job then plans again with the
networks, and every later run reuses them.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from stylebatch.config import JobConfig
from stylebatch.io import images, storage
from stylebatch.pipeline.ray_runtime import init_ray

TRAIN_MODES = ("auto", "always", "never")
# Seconds a training step takes (the default recipe, batch and crops): 2 CPU cores with bf16, one
# GPU (docs/benchmarks.md). For the printed estimate only.
STEP_SECONDS = {"cpu": 2.0, "gpu": 0.1}


@dataclass
class StyleDecision:
    style: str                   # the style's name in the plan
    rows: int                    # its rows that still need a model run (AdaIN as planned)
    action: str                  # "cached", "train" or "adain"
    network: Optional[str]       # the network file it runs with (cached or to train)
    reason: str                  # why, in words (printed, and in the results of a fallback)
    estimate_s: float = 0.0      # training time, estimated ("train" only)
    train_s: float = 0.0         # training time, measured ("train" only)
    error: str = ""              # why its training failed (then its rows run AdaIN)

    def line(self) -> str:
        est = f", about {self.estimate_s / 60:.0f} min to train" if self.action == "train" else ""
        return f"style {self.style}: {self.rows} rows -> {self.action} ({self.reason}{est})"


@dataclass
class TrainingOutcome:
    decisions: list[StyleDecision] = field(default_factory=list)
    networks: dict[str, str] = field(default_factory=dict)    # style -> network file to run it with
    fallbacks: dict[str, str] = field(default_factory=dict)   # style -> why its training failed


def _trainable(style) -> bool:
    """One style image and nothing to run it yet (presets and checkpoints have their own)."""
    return len(style.images) == 1 and not style.network and not getattr(style, "model", None)


def _cached_locations(cfg: JobConfig, key: str) -> list[str]:
    from stylebatch.training import house_style

    places = [cfg.style_cache] if cfg.style_cache else []
    return [house_style.cached_network_uri(p, key, cfg.train_steps) for p in [*places, cfg.output]]


def decide(plan, cfg: JobConfig, *, gpus: float = 0.0) -> list[StyleDecision]:
    """One decision per style whose rows would run AdaIN, in row-count order."""
    counts: Counter = Counter()
    for style, model, done, error in zip(plan.table.column("style").to_pylist(), plan.table.column("model").to_pylist(),
                                         plan.table.column("done_fingerprint").to_pylist(),
                                         plan.table.column("plan_error").to_pylist()):
        if model == "adain" and not done and not error:
            counts[style] += 1
    per_step = STEP_SECONDS["gpu" if gpus >= 1 else "cpu"]
    out = []
    for name, rows in counts.most_common():
        style = plan.styles[name]
        if not _trainable(style):
            continue
        places = _cached_locations(cfg, style.key)
        cached = next((p for p in places if storage.exists(p)), None)
        if cfg.train_style == "never":
            out.append(StyleDecision(name, rows, "adain", None, "--train-style never"))
        elif cached:
            out.append(StyleDecision(name, rows, "cached", cached, "trained by an earlier run"))
        elif cfg.train_style == "always" or rows >= cfg.train_min_rows:
            why = "--train-style always" if cfg.train_style == "always" else f"at least --train-min-rows {cfg.train_min_rows}"
            out.append(StyleDecision(name, rows, "train", places[0], why, estimate_s=cfg.train_steps * per_step))
        else:
            out.append(StyleDecision(name, rows, "adain", None, f"under --train-min-rows {cfg.train_min_rows}"))
    return out


def _train_one(style_image: str, out: str, *, steps: int, threads: int, device: str, precision: str) -> float:
    """A Ray task: train one style's network with as many torch threads as the task has CPUs."""
    import torch

    from stylebatch.pipeline.faults import maybe_inject_fault
    from stylebatch.training import house_style

    maybe_inject_fault(out)  # test hook: STYLEBATCH_INJECT_FAULT=<part of the network's name>:raise
    torch.set_num_threads(max(1, threads))
    t0 = time.time()
    house_style.train_house_style(style_image, out, steps=steps, device=device, precision=precision)
    return time.time() - t0


def train_networks(plan, cfg: JobConfig, *, train: bool = True,
                   on_event=lambda line: None) -> TrainingOutcome:
    """Decide (see the module docstring) and, unless ``train`` is False (a dry run), train the
    networks the decisions ask for, all at once; returns what each style runs with."""
    ray = init_ray(cfg.ray_address) if train else None
    resources = ray.cluster_resources() if ray else {}
    gpus = float(resources.get("GPU", 0)) if cfg.gpu != "never" else 0.0
    decisions = decide(plan, cfg, gpus=gpus)
    outcome = TrainingOutcome(decisions)
    for d in decisions:
        on_event(d.line())
        if d.action == "cached":
            outcome.networks[d.style] = d.network
    todo = [d for d in decisions if d.action == "train"]
    if not todo or not train:
        return outcome
    cpus = float(resources.get("CPU", 1))
    # A GPU each where there are GPUs; on CPU the cores shared out, at least one each.
    threads = 1 if gpus >= 1 else max(1, math.floor(cpus / len(todo)))
    task = ray.remote(_train_one).options(num_cpus=1 if gpus >= 1 else threads, num_gpus=1 if gpus >= 1 else 0,
                                          max_retries=1)
    pending = {}
    for d in todo:
        # The style's pixels go beside its network, so the task (on any node) reads them through storage.
        style_png = d.network.rsplit(".", 1)[0] + ".style.png"
        if not storage.exists(style_png):
            storage.write_bytes(style_png, images.encode_image(np.asarray(plan.styles[d.style].images[0]), fmt="png"))
        pending[task.remote(style_png, d.network, steps=cfg.train_steps, threads=threads,
                            device=cfg.device, precision=cfg.precision)] = d
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        d = pending.pop(done[0])
        try:
            d.train_s = float(ray.get(done[0]))
            outcome.networks[d.style] = d.network
            on_event(f"style {d.style}: network trained in {d.train_s / 60:.1f} min -> {storage.redact(d.network)}")
        except Exception as exc:  # a failed training never costs the night: AdaIN runs the rows
            d.error = storage.redact(str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
            outcome.fallbacks[d.style] = f"network training failed ({d.error}); ran AdaIN"
            on_event(f"style {d.style}: training failed, its rows run AdaIN: {d.error}")
    return outcome
