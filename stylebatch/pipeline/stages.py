"""The three stages a batch of rows goes through, as plain functions of a batch (a dict of numpy
columns, Ray Data's "numpy" batch format); ``stylebatch.pipeline.driver`` chains them with Ray Data.

    plan rows --fetch_batch--> FETCHED --StylizeActor--> STYLIZED --write_batch--> result rows

``BATCH_COLUMNS`` declares what each stage adds and drops; ``check_batch`` verifies a batch
against it (the tests call it at every boundary). Rows never fail a batch: each stage catches per
row and records ``status="error"`` with a message; rows still to be worked on are "pending".
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Optional

import numpy as np
import pyarrow as pa

from stylebatch.io import images, results, storage
from stylebatch.models import registry
from stylebatch.pipeline.faults import CrashJournal, maybe_inject_fault
from stylebatch.pipeline.memory import MemoryPlan, too_large
from stylebatch.pipeline.plan import PLAN_COLUMNS

_MAX_SOURCE_BYTES = 256 * 1024 * 1024

# What each stage's output holds beyond its input (name -> numpy dtype kind; "O": strings or
# images), and what it drops. The write stage's output is a results row (results.RESULT_SCHEMA).
_FETCH_ADDS = {"status": "O", "error": "O", "source_fingerprint": "O", "input_width": "i", "input_height": "i",
               "input_bytes": "i", "read_ms": "f", "image": "O"}
_STYLIZE_ADDS = {"model_ms": "f", "attempt": "i", "stylized": "O", "worker": "O"}
BATCH_COLUMNS = {
    "plan": {name: "O" for name in PLAN_COLUMNS} | {"alpha": "f", "preserve_color": "b"},
    "fetched": {name: "O" for name in PLAN_COLUMNS} | {"alpha": "f", "preserve_color": "b"} | _FETCH_ADDS,
}
BATCH_COLUMNS["stylized"] = {k: v for k, v in BATCH_COLUMNS["fetched"].items() if k != "image"} | _STYLIZE_ADDS
STATUSES = ("pending", *results.STATUSES)


def check_batch(batch: dict, stage: str) -> None:
    """Raise ValueError if ``batch`` does not hold exactly the columns (and dtype kinds) that
    ``stage`` ("plan", "fetched", "stylized") produces, or has a status outside STATUSES."""
    want = BATCH_COLUMNS[stage]
    missing, extra = sorted(set(want) - set(batch)), sorted(set(batch) - set(want))
    if missing or extra:
        raise ValueError(f"{stage} batch: missing columns {missing}, unexpected {extra}")
    for name, kind in want.items():
        got = np.asarray(batch[name]).dtype.kind
        if got != kind and not (kind == "O" and got in "US"):
            raise ValueError(f"{stage} batch: column {name!r} has dtype kind {got!r}, expected {kind!r}")
    lengths = {len(v) for v in batch.values()}
    if len(lengths) > 1:
        raise ValueError(f"{stage} batch: columns of different lengths {sorted(lengths)}")
    if "status" in batch and not set(batch["status"]) <= set(STATUSES):
        raise ValueError(f"{stage} batch: unknown status values {sorted(set(batch['status']) - set(STATUSES))}")


_EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return storage.redact(text if isinstance(exc, (storage.StorageError, images.ImageDecodeError, ValueError))
                          else f"{type(exc).__name__}: {text}")


def fetch_batch(batch: dict, *, max_size: Optional[int], max_pixels: int,
                memory: Optional[MemoryPlan] = None) -> dict:
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
                problem = memory and too_large(memory, *img.shape[:2])
                if problem:  # no node could hold its model run: a row error, never a killed actor
                    status[i], error[i], img = "error", problem, _EMPTY_IMAGE
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

class StylizeStage:
    """The model stage, no Ray: one model (built by the registry from its kind) and the resolved
    styles. A failure inside a batch is retried image by image so one poisoned image only fails
    its own row; a crash of the whole process is handled with the run's CrashJournal."""

    def __init__(self, *, model_kind: str, options: registry.ModelOptions, styles: dict, threads: int = 0,
                 journal: Optional[CrashJournal] = None, style_scale: float = 1.0):
        import torch

        self.style_scale = style_scale
        if threads:
            torch.set_num_threads(threads)
        self.styles = styles
        self.model = registry.build(model_kind, options)
        self.journal = journal or CrashJournal(None)
        self.node = socket.gethostname() + ":" + str(os.getpid())

    def _run_model(self, imgs: list, style, alpha: float, preserve: bool) -> list:
        return images.stylize_at_scale(
            lambda xs: self.model.stylize(xs, style, alpha=alpha, preserve_color=preserve), imgs, self.style_scale)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["image_id"])
        status, error = batch["status"].copy(), batch["error"].copy()
        model_ms = np.zeros(n, np.float64)
        attempt = np.ones(n, np.int32)  # model runs of each row in this run: retries after a failure or a crash count
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
            if one_by_one:
                attempt[idxs] += 1
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
                        attempt[i] += 1
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
        out.update(status=status, error=error, model_ms=model_ms, attempt=attempt, stylized=_ragged(stylized),
                   worker=np.full(n, self.node, dtype=object))
        return out


class StylizeActor(StylizeStage):
    """What Ray Data's actor pool instantiates: the styles come by reference (``[ref]``, so Ray
    passes the reference rather than resolving it) and the journal is the run's named actor."""

    def __init__(self, *, model_kind: str, options: registry.ModelOptions, styles_ref: list, threads: int,
                 run_id: str, style_scale: float = 1.0):
        import ray

        super().__init__(model_kind=model_kind, options=options, styles=ray.get(styles_ref[0]), threads=threads,
                         journal=CrashJournal.for_run(run_id), style_scale=style_scale)


# --------------------------------------------------------------------------------------------
# Stage 3 (Ray tasks): encode, write outputs, then commit the batch's result rows.
# --------------------------------------------------------------------------------------------

def write_batch(batch: dict, *, out_uri: str, run_id: str, fmt: str, quality: int) -> dict:
    n = len(batch["image_id"])
    status, error = batch["status"].copy(), batch["error"].copy()
    out_w, out_h, out_bytes = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int64)
    write_ms = np.zeros(n, np.float64)
    for i in range(n):
        if status[i] != "pending":
            continue
        t0 = time.perf_counter()
        try:
            img = batch["stylized"][i]
            encoder = images.output_format(fmt)
            data = encoder.encode(img, quality)
            storage.write_bytes(batch["output_uri"][i], data, content_type=encoder.content_type)
            out_h[i], out_w[i] = img.shape[:2]
            out_bytes[i] = len(data)
            status[i] = "ok"
        except Exception as exc:
            status[i], error[i] = "error", "could not write output: " + _error_text(exc)
        write_ms[i] = (time.perf_counter() - t0) * 1000
    rows = results.result_columns(dict(batch, status=status, error=error, output_width=out_w, output_height=out_h,
                                       output_bytes=out_bytes, write_ms=write_ms))
    # The part file is the commit marker: written only after every output above it.
    part_id = hashlib.sha256("\n".join(batch["output_uri"]).encode()).hexdigest()[:32]
    results.write_results_part(out_uri, run_id, pa.table(rows), part_id=part_id)
    return rows


def record_invalid_rows(rows: pa.Table, out_uri: str, run_id: str) -> pa.Table:
    """The manifest rows that cannot run, as error rows of this run (one part, written first)."""
    batch = {name: rows.column(name).to_numpy(zero_copy_only=False) for name in ("image_id", "uri", "style", "quality")}
    cols = results.result_columns(dict(batch, status=np.full(rows.num_rows, "error", dtype=object),
                                       error=rows.column("plan_error").to_numpy(zero_copy_only=False)))
    table = pa.table(cols)
    results.write_results_part(out_uri, run_id, table, part_id="invalid-rows")
    return table
