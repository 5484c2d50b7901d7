"""The Ray Data plan: manifest rows -> fetch+decode tasks -> model actor pools -> write tasks -> results.

Reading order for a newcomer: ``restyle`` (driver), then the three stages it chains:
``fetch_batch`` (tasks), ``StylizeActor`` (actor pools, one per model kind) and ``write_batch`` (tasks).
Rows never fail a block: each stage catches per row and records ``status="error"``.
The pipeline knows rows and URIs; models know pixels (see ``stylebatch.models``).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import images, manifest, results, storage, styles
from .config import JobConfig
from .faults import CrashJournal, maybe_inject_fault
from .models import registry

log = logging.getLogger(__name__)

_MAX_SOURCE_BYTES = 256 * 1024 * 1024


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


# --------------------------------------------------------------------------------------------
# Planning (driver): validate the manifest, resolve styles, decide each row's output and params.
# --------------------------------------------------------------------------------------------

# The plan's columns: what the driver decided for each manifest row. ``plan_error`` is set for a
# row that cannot run (its message), and such a row has no model and no output_uri.
PLAN_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("uri", pa.string()), ("style", pa.string()), ("alpha", pa.float64()),
    ("preserve_color", pa.bool_()), ("quality", pa.string()), ("model", pa.string()), ("output_uri", pa.string()),
    ("params_key", pa.string()), ("done_fingerprint", pa.string()), ("plan_error", pa.string()),
])
PLAN_COLUMNS = tuple(PLAN_SCHEMA.names)


@dataclass
class Plan:
    table: pa.Table                     # one row per manifest row, plus output_uri/params_key/done_fingerprint
    styles: dict                        # style name -> ResolvedStyle
    counts: dict = field(default_factory=dict)


def _params_key(style: styles.ResolvedStyle, alpha: float, preserve: bool, quality: str, cfg: JobConfig,
                kind: str) -> str:
    """Everything that changes the output pixels; a change means the row is redone."""
    parts = [style.key, f"{alpha:.4f}", str(bool(preserve)), quality, cfg.output_format, str(cfg.output_quality),
             str(cfg.max_size), _model_id(cfg, kind, style)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _file_id(uri: str) -> str:
    try:
        return storage.stat(uri).fingerprint[:12]
    except storage.StorageError:
        return os.path.basename(uri)


def _model_id(cfg: JobConfig, kind: str, style: styles.ResolvedStyle) -> str:
    """The weights that make a row's pixels: a retrained network or a new decoder redoes the rows."""
    from .models.adain import default_decoder_path

    if kind == "network":
        return f"network-{_file_id(styles.network_location(style.network))}-{style.network_style or ''}"
    ident = _file_id(cfg.decoder_weights or default_decoder_path())
    return ident + (f"-gatys{cfg.premium_iterations}" if kind == "gatys" else "")


def _resolve_styles(cfg: JobConfig, names: set[str]) -> tuple[dict, dict]:
    """(name -> ResolvedStyle, name -> why it cannot be used). The job's own style (``--style`` /
    ``--style-image``) must resolve: a bad command line stops the run. A row's style that does
    not resolve (a catalog entry whose image is gone) fails those rows, or the run with --strict."""
    catalog = styles.StyleCatalog.load(cfg.style_catalog) if cfg.style_catalog else None
    out, broken = {}, {}
    for name in sorted(names):
        if name == cfg.style and cfg.style_image:
            out[name] = styles.resolve_style(cfg.style_image, catalog=catalog)
            if cfg.style_network:
                out[name] = styles.with_network(out[name], cfg.style_network)
            continue
        try:
            out[name] = styles.resolve_style(name, catalog=catalog)
        except styles.StyleError as exc:
            if name == cfg.style or cfg.strict:
                raise
            broken[name] = str(exc)
    return out, broken


def custom_style_name(style_image: str) -> str:
    """A stable folder name for --style-image outputs: file stem + hash of the URI (no secrets)."""
    stem = os.path.splitext(os.path.basename(storage.parse_uri(style_image).key_or_path.rstrip("/")))[0]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)[:40] or "custom"
    return f"{stem}-{hashlib.sha256(style_image.encode()).hexdigest()[:8]}"


def _check_weights(cfg: JobConfig, kinds: set[str], resolved: dict) -> None:
    """Refuse missing, corrupt or unsafe (pickled code) weights files on the driver, before any work;
    otherwise every model actor dies on them inside Ray and the run ends in an actor traceback.
    Weights-only loading never executes pickled code. Each style's network file is read and checked
    to hold that style."""
    options = cfg.model_options()
    registry.check(options, sorted(kinds))
    if "network" in kinds:
        from .models.network import NetworkStylizer

        checker = NetworkStylizer(device="cpu", precision="fp32", read_bytes=styles.read_network)
        for style in resolved.values():
            if style.network:
                checker.style_index(style)


def _train_style_network(cfg: JobConfig, *, train: bool) -> Optional[str]:
    """--train-style: the network for --style-image, cached under the output prefix by the style's
    content key and the training settings, so the next run (and every nightly) reuses it. Trained by
    one Ray task (a GPU when the cluster has one); checkpoints next to it, so a killed run resumes."""
    from . import train_style

    style = styles.style_from_image(cfg.style_image)
    uri = train_style.cached_network_uri(cfg.output, style.key, cfg.train_steps)
    if storage.exists(uri) or not train:
        return uri if storage.exists(uri) else None
    ray = _init_ray(cfg.ray_address)
    gpus = 1 if cfg.gpu == "always" or (cfg.gpu == "auto" and ray.cluster_resources().get("GPU", 0) >= 1) else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(train_style.train_house_style)
    ray.get(task.remote(cfg.style_image, uri, steps=cfg.train_steps, device=cfg.device, precision=cfg.precision))
    return uri


def build_plan(cfg: JobConfig, *, train_styles: bool = True) -> Plan:
    """Validate everything before any work; raise ManifestError/StyleError with every problem named.
    With ``cfg.train_style`` the style's network is trained first (unless cached, or ``train_styles``
    is False, as for a dry run)."""
    cfg.validate()
    registry.check(cfg.model_options())  # named weights files, before reading the manifest
    if cfg.style_image:
        cfg.style = custom_style_name(cfg.style_image)
    if cfg.train_style and not cfg.style_network:
        cfg.style_network = _train_style_network(cfg, train=train_styles)
    table = manifest.read_manifest(cfg.manifest)
    row_styles = table.column("style").to_pylist() if "style" in table.column_names else [None] * table.num_rows
    catalog_names = set(styles.available_styles(styles.StyleCatalog.load(cfg.style_catalog))) if cfg.style_catalog \
        else set(styles.available_styles())
    check = manifest.check_manifest(table, known_styles=catalog_names | {cfg.style})
    if check.structural or (cfg.strict and check.row_errors):
        raise manifest.ManifestError(check.problems())
    row_errors = check.row_errors
    wanted = {s for i, s in enumerate(row_styles) if s and i not in row_errors} | {cfg.style}
    resolved, broken = _resolve_styles(cfg, wanted)

    ids = table.column("image_id").to_pylist()
    uris = table.column("uri").to_pylist()
    alphas = table.column("alpha").to_pylist() if "alpha" in table.column_names else [None] * len(ids)
    quals = table.column("quality").to_pylist() if "quality" in table.column_names else [None] * len(ids)
    done = {} if cfg.overwrite else results.completed_index(cfg.output)
    ext = images.FORMAT_EXTENSIONS[cfg.output_format]
    cols: dict[str, list] = {k: [] for k in PLAN_COLUMNS}
    for i, (image_id, uri, style_name, alpha, quality) in enumerate(zip(ids, uris, row_styles, alphas, quals)):
        style_name = style_name or cfg.style
        problem = row_errors.get(i) or (f"style {style_name!r} cannot be used: {broken[style_name]}"
                                        if style_name in broken else "")
        if problem:
            # Never run and never given an output key: an unsafe or repeated id must not name a file.
            values = (image_id, uri, style_name, None, False, quality, "", None, "", "", problem)
        else:
            style = resolved[style_name]
            # Precedence: manifest row > command line > style catalog default.
            alpha = float(alpha) if alpha is not None else (cfg.alpha if cfg.alpha is not None else style.alpha)
            quality = quality or cfg.quality or style.quality
            preserve = cfg.preserve_color or style.preserve_color
            out_uri = storage.output_uri(cfg.output, style_name, f"{image_id}.{ext}")
            kind = registry.kind_for(quality, style).name
            pkey = _params_key(style, alpha, preserve, quality, cfg, kind)
            prev = done.get(out_uri)
            values = (image_id, uri, style_name, alpha, preserve, quality, kind, out_uri, pkey,
                      prev[0] if prev and prev[1] == pkey else "", "")
        for name, value in zip(PLAN_COLUMNS, values):
            cols[name].append(value)
    _check_weights(cfg, {k for k in cols["model"] if k}, resolved)
    plan_table = pa.table(cols, schema=PLAN_SCHEMA)
    valid = [q for q, e in zip(cols["quality"], cols["plan_error"]) if not e]
    counts = {
        "rows": plan_table.num_rows,
        "fast": valid.count("fast"),
        "premium": valid.count("premium"),
        "invalid": sum(1 for e in cols["plan_error"] if e),
        "models": {k: cols["model"].count(k) for k in sorted(set(cols["model"]) - {""})},
        "previously_done": sum(1 for f in cols["done_fingerprint"] if f),
        "styles": sorted(resolved),
    }
    return Plan(plan_table, resolved, counts)


# --------------------------------------------------------------------------------------------
# Stage 1 (Ray tasks): stat, skip what is done, fetch and decode.
# --------------------------------------------------------------------------------------------

_EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return storage.redact(text if isinstance(exc, (storage.StorageError, images.ImageDecodeError, ValueError))
                          else f"{type(exc).__name__}: {text}")


def fetch_batch(batch: dict, *, max_size: Optional[int], max_pixels: int, run_id: str) -> dict:
    n = len(batch["image_id"])
    status = np.full(n, "pending", dtype=object)
    error = np.full(n, "", dtype=object)
    fingerprint = np.full(n, "", dtype=object)
    in_w, in_h, in_bytes = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int64)
    read_ms = np.zeros(n, np.float64)
    pixels = []
    for i in range(n):
        t0 = time.perf_counter()
        uri, img = batch["uri"][i], _EMPTY_IMAGE
        try:
            info = storage.stat(uri)
            fingerprint[i] = info.fingerprint
            if batch["done_fingerprint"][i] and batch["done_fingerprint"][i] == info.fingerprint \
                    and storage.exists(batch["output_uri"][i]):
                status[i] = "skipped"
            else:
                data = storage.read_bytes(uri, max_bytes=_MAX_SOURCE_BYTES)
                in_bytes[i] = len(data)
                decoded = images.decode_image(data, max_pixels=max_pixels)
                in_h[i], in_w[i] = decoded.shape[:2]
                img = images.resize_to_max(decoded, max_size)
        except Exception as exc:  # one bad row never fails the block
            status[i], error[i] = "error", _error_text(exc)
        read_ms[i] = (time.perf_counter() - t0) * 1000
        pixels.append(img)
    out = dict(batch)
    out.update(status=status, error=error, source_fingerprint=fingerprint, input_width=in_w, input_height=in_h,
               input_bytes=in_bytes, read_ms=read_ms, image=_ragged(pixels))
    return out


def _ragged(arrays: list) -> np.ndarray:
    """An object array of variable-shaped images (Ray stores it as a variable-shaped tensor column)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


# --------------------------------------------------------------------------------------------
# Stage 2 (actor pools): the model, loaded once per actor.
# --------------------------------------------------------------------------------------------

class StylizeActor:
    """Callable class for ``map_batches``: holds one model (built by the registry from its kind) and
    the resolved styles. A failure inside a batch is retried image by image so one poisoned image
    only fails its own row; a crash of the whole process is handled with the run's CrashJournal."""

    def __init__(self, *, model_kind: str, options: registry.ModelOptions, styles_ref: list, threads: int,
                 run_id: str):
        import ray
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.styles = ray.get(styles_ref[0])  # {name: ResolvedStyle}, wrapped in a list so Ray passes the ref
        self.run_id = run_id
        self.model = registry.build(model_kind, options)
        self.journal = CrashJournal.for_run(run_id)
        self.node = socket.gethostname() + ":" + str(os.getpid())

    def _run_model(self, imgs: list, style, alpha: float, preserve: bool) -> list:
        return self.model.stylize(imgs, style, alpha=alpha, preserve_color=preserve)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["image_id"])
        status, error = batch["status"].copy(), batch["error"].copy()
        model_ms = np.zeros(n, np.float64)
        stylized = [_EMPTY_IMAGE] * n
        pending = [i for i in range(n) if status[i] == "pending"]
        # Rows this run already saw crash a model process are failed, not retried forever.
        suspects = self.journal.crashed_rows([batch["output_uri"][i] for i in pending])
        groups: dict[tuple, list[int]] = {}
        for i in pending:
            if batch["output_uri"][i] in suspects:
                status[i], error[i] = "error", "the model process crashed on this image (it was isolated and skipped)"
                continue
            key = (batch["style"][i], float(batch["alpha"][i]), bool(batch["preserve_color"][i]))
            groups.setdefault(key, []).append(i)
        for (style_name, alpha, preserve), idxs in groups.items():
            style = self.styles[style_name]
            # Alone after a crash elsewhere in the batch: journal each row separately so the
            # next attempt can tell exactly which image brought the process down.
            one_by_one = self.journal.batch_crashed_before([batch["output_uri"][i] for i in idxs])
            chunks = [[i] for i in idxs] if one_by_one else [idxs]
            for chunk in chunks:
                uris = [batch["output_uri"][i] for i in chunk]
                self.journal.begin(uris)
                t0 = time.perf_counter()
                try:
                    for i in chunk:
                        maybe_inject_fault(batch["uri"][i])
                    outs = self._run_model([batch["image"][i] for i in chunk], style, alpha, preserve)
                    per = (time.perf_counter() - t0) * 1000 / len(chunk)
                    for i, o in zip(chunk, outs):
                        stylized[i], model_ms[i] = o, per
                except Exception:
                    # Isolate the culprit: rerun one image at a time.
                    for i in chunk:
                        t1 = time.perf_counter()
                        try:
                            maybe_inject_fault(batch["uri"][i])
                            stylized[i] = self._run_model([batch["image"][i]], style, alpha, preserve)[0]
                        except Exception as exc:
                            status[i], error[i] = "error", "model failed: " + _error_text(exc)
                        model_ms[i] = (time.perf_counter() - t1) * 1000
                finally:
                    self.journal.end(uris)
        out = {k: v for k, v in batch.items() if k != "image"}
        out.update(status=status, error=error, model_ms=model_ms, stylized=_ragged(stylized),
                   worker=np.full(n, self.node, dtype=object))
        return out


# --------------------------------------------------------------------------------------------
# Stage 3 (Ray tasks): encode, write outputs, then commit the batch's result rows.
# --------------------------------------------------------------------------------------------

def write_batch(batch: dict, *, out_uri: str, run_id: str, fmt: str, quality: int) -> dict:
    n = len(batch["image_id"])
    status, error = batch["status"].copy(), batch["error"].copy()
    out_w, out_h, out_bytes = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int64)
    write_ms = np.zeros(n, np.float64)
    content_type = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[fmt]
    for i in range(n):
        if status[i] != "pending":
            continue
        t0 = time.perf_counter()
        try:
            img = batch["stylized"][i]
            data = images.encode_image(img, fmt=fmt, quality=quality)
            storage.write_bytes(batch["output_uri"][i], data, content_type=content_type)
            out_h[i], out_w[i] = img.shape[:2]
            out_bytes[i] = len(data)
            status[i] = "ok"
        except Exception as exc:
            status[i], error[i] = "error", "could not write output: " + _error_text(exc)
        write_ms[i] = (time.perf_counter() - t0) * 1000
    rows = {
        # Source URIs may carry credentials (user:password@, presigned queries): never into results.
        "image_id": batch["image_id"], "uri": np.array([storage.redact(u) for u in batch["uri"]], dtype=object),
        "style": batch["style"], "quality": batch["quality"],
        "output_uri": batch["output_uri"], "status": status, "error": error,
        "input_width": batch["input_width"], "input_height": batch["input_height"],
        "output_width": out_w, "output_height": out_h, "input_bytes": batch["input_bytes"], "output_bytes": out_bytes,
        "source_fingerprint": batch["source_fingerprint"], "params_key": batch["params_key"],
        "read_ms": batch["read_ms"], "model_ms": batch["model_ms"], "write_ms": write_ms,
        "attempt": np.ones(n, np.int32), "worker": batch["worker"],
    }
    table_rows = [{k: (rows[k][i] if k != "error" or rows[k][i] else None) for k in rows} for i in range(n)]
    # The part file is the commit marker: written only after every output above it.
    part_id = hashlib.sha256("\n".join(batch["output_uri"]).encode()).hexdigest()[:32]
    results.write_results_part(out_uri, run_id, table_rows, part_id=part_id)
    return {k: np.asarray(v) for k, v in rows.items()}


def _record_invalid_rows(rows: pa.Table, out_uri: str, run_id: str) -> pa.Table:
    """The manifest rows that cannot run, as error rows of this run (one part, written first)."""
    n = rows.num_rows
    table = pa.table({
        "image_id": rows.column("image_id"),
        "uri": pa.array([storage.redact(u) if u is not None else None for u in rows.column("uri").to_pylist()],
                        pa.string()),
        "style": rows.column("style"), "quality": rows.column("quality"),
        "status": pa.array(["error"] * n, pa.string()), "error": rows.column("plan_error"),
    })
    results.write_results_part(out_uri, run_id, table, part_id="invalid-rows")
    return table


# --------------------------------------------------------------------------------------------
# Resources: size the pools from what Ray reports so read/write tasks always have CPU left.
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# The driver.
# --------------------------------------------------------------------------------------------

def _init_ray(address: Optional[str]):
    if not address and "ray" not in sys.modules:
        # Ray's default for a new local cluster (token auth), said explicitly so Ray does not print
        # a warning about having chosen it; RAY_AUTH_MODE=disabled still opts out. Ray reads it
        # when imported, so only before that (otherwise Ray's own default and warning stand).
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if address:
            kwargs["address"] = address
        else:
            kwargs["include_dashboard"] = False
        # Ray Data ships this package to workers via the driver's sys.path on a local cluster; on a
        # remote cluster the job's working_dir (ray job submit) provides it.
        ray.init(**kwargs)
    _quiet_ray_data(ray)
    return ray


def _quiet_ray_data(ray) -> None:
    """Our progress line replaces Ray Data's bars and per-dataset INFO lines on the console (they
    still go to Ray's ray-data.log); its warnings and errors still show."""
    from ray.util.debug import log_once

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    log_once("ray_data_progress_manager_disabled")  # marks Ray's "bars disabled" notice as shown
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":  # the console handler of Ray Data's config
            handler.setLevel(logging.WARNING)


def _dataset_for(ray, table: pa.Table, cfg: JobConfig, run_id: str, kind: str, styles_ref: list,
                 sizing: PoolSizing):
    # One block per model batch: images flow through the stages batch by batch (memory stays flat,
    # results commit as each batch finishes) instead of waiting for bigger blocks to fill. Premium
    # (an optimisation per image) commits every image or two.
    fast = registry.KINDS[kind].quality == "fast"
    rows = cfg.batch_size if fast else 2
    blocks = [table.slice(i, rows) for i in range(0, table.num_rows, rows)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(fetch_batch, batch_format="numpy", batch_size=None, num_cpus=sizing.task_cpus,
                        fn_kwargs={"max_size": cfg.max_size, "max_pixels": cfg.max_pixels, "run_id": run_id})
    ds = ds.map_batches(
        StylizeActor,
        batch_format="numpy",
        batch_size=cfg.batch_size if fast else 1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=sizing.actors),
        num_cpus=sizing.num_cpus,
        num_gpus=sizing.num_gpus,
        # Ray Data restarts dead actors and retries their batches by default (max_restarts=-1);
        # the CrashJournal makes sure a poisoned image cannot make that loop forever.
        # The styles (reference images: up to MBs) go in by reference: constructor arguments that
        # big would be put in the object store by Ray itself, which then warns that an actor
        # restart could lose them. This reference lives as long as the driver's plan.
        fn_constructor_kwargs={"model_kind": kind, "options": cfg.model_options(), "styles_ref": styles_ref,
                               "threads": sizing.threads, "run_id": run_id},
    )
    return ds.map_batches(write_batch, batch_format="numpy", batch_size=None, num_cpus=sizing.task_cpus,
                          fn_kwargs={"out_uri": cfg.output, "run_id": run_id, "fmt": cfg.output_format,
                                     "quality": cfg.output_quality})


ProgressFn = Callable[[dict], None]  # called after every committed batch


def restyle(cfg: JobConfig, *, progress: Optional[ProgressFn] = None, plan: Optional[Plan] = None) -> RunSummary:
    """Run the whole job: validate and plan, stream every row through the actor pools, write outputs,
    per-row results and run metrics. Returns the summary; ``summary.failed`` rows had status=error."""
    started = time.time()
    plan = plan or build_plan(cfg)
    run_id = cfg.run_id or results.make_run_id()
    ray = _init_ray(cfg.ray_address)
    CrashJournal.create(run_id)
    metrics = results.RunMetrics(run_id=run_id,
                                 started_at=datetime.datetime.fromtimestamp(started, datetime.timezone.utc))
    table = plan.table
    invalid = pc.not_equal(table.column("plan_error"), "")
    if pc.any(invalid).as_py():
        metrics.add(_record_invalid_rows(table.filter(invalid), cfg.output, run_id))
        table = table.filter(pc.invert(invalid))

    def report_progress() -> None:
        if progress:
            progress({"done": metrics.total, "rows": plan.table.num_rows, "counts": dict(metrics.counts),
                      "elapsed_s": time.time() - started})

    report_progress()
    kinds = [k.name for k in registry.MODEL_KINDS if k.name in set(table.column("model").to_pylist())]
    node_cpus = max((float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")),
                    default=0.0) or None
    sizing = size_pools(ray.cluster_resources(), max(1, len(kinds)), cfg.max_actors, node_cpus, gpu=cfg.gpu)
    datasets = []
    for kind in kinds:
        sub = table.filter(pc.equal(table.column("model"), kind))
        names = set(sub.column("style").to_pylist())
        styles_ref = [ray.put({n: plan.styles[n] for n in names})]
        datasets.append(_dataset_for(ray, sub, cfg, run_id, kind, styles_ref, sizing))
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
    config["plan"] = plan.counts
    out_metrics = metrics.finish(wall, config=config, versions=results.collect_versions())
    out_metrics["run_id"] = run_id
    metrics_uri = results.write_metrics(cfg.output, run_id, out_metrics)
    try:
        results.fold_finished_runs(cfg.output)
    except storage.StorageError as exc:  # compaction and the snapshot are optimisations; the parts stay the truth
        log.warning("could not compact the results or refresh the completed-index snapshot: %s", exc)
    CrashJournal.drop(run_id)
    return RunSummary(run_id, cfg.output, out_metrics, results.results_dir(cfg.output, run_id), metrics_uri)


def plan_summary(plan: Plan, cfg: JobConfig) -> str:
    c = plan.counts
    return json.dumps({
        "manifest": storage.redact(cfg.manifest), "output": storage.redact(cfg.output), "rows": c["rows"],
        "fast": c["fast"], "premium": c["premium"], "already_done_candidates": c["previously_done"],
        "styles": c["styles"], "format": cfg.output_format, "max_size": cfg.max_size,
        "invalid_rows": c["invalid"], "invalid_examples": invalid_examples(plan),
        "example_output": next((u for u in plan.table.column("output_uri").to_pylist() if u), None),
    }, indent=2)


def invalid_examples(plan: Plan, limit: int = 10) -> list[str]:
    """'image_id: why' for the first rows that cannot run."""
    t = plan.table.filter(pc.not_equal(plan.table.column("plan_error"), "")).slice(0, limit)
    return [f"{i}: {e}" for i, e in zip(t.column("image_id").to_pylist(), t.column("plan_error").to_pylist())]
