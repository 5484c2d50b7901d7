"""The nightly incremental run: restyle only what is new or changed since the last runs.

Layout it adds under an output root ``<out>``::

    <out>/_nightly/manifests/<run_id>.parquet   the manifest each night built from --source
    <out>/_nightly/last_success.json            the last run that finished with zero errors

"New or changed" is not decided here: every night restyles a full manifest and the pipeline
skips each row whose output exists with a recorded ``ok`` for the same source fingerprint
(local: sha256 of the bytes, S3: ETag) and the same params key (``results.completed_index``).
A new image has no such row; an edited one has a new fingerprint; both are redone. Rows that
failed on an earlier night have no ``ok`` row either, so they are retried automatically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from stylebatch.config import JobConfig
from stylebatch.io import results, storage
from stylebatch.io.lease import output_lease
from stylebatch.io.manifest import build_manifest
from stylebatch.pipeline.driver import ProgressFn, RunSummary, plan_job, restyle

NIGHTLY_DIR = "_nightly"
LAST_SUCCESS_NAME = "last_success.json"

__all__ = ["NightlyResult", "last_success_uri", "manifest_uri", "read_last_success", "run_nightly"]


@dataclass
class NightlyResult:
    summary: RunSummary
    manifest: str                     # the manifest this run used (built or given)
    last_success_uri: Optional[str]   # set only when this run wrote last_success.json
    previous_success: Optional[dict]  # last_success.json as it was before this run

    @property
    def failed(self) -> int:
        return self.summary.failed


def manifest_uri(output: str, run_id: str) -> str:
    # run_dir validates the id: it becomes a file name here too.
    results.run_dir(output, run_id)
    return storage.join(output, NIGHTLY_DIR, "manifests", f"{run_id}.parquet")


def last_success_uri(output: str) -> str:
    return storage.join(output, NIGHTLY_DIR, LAST_SUCCESS_NAME)


def read_last_success(output: str) -> Optional[dict]:
    """The last successful nightly run's record, or None before the first one."""
    try:
        return json.loads(storage.read_bytes(last_success_uri(output)).decode("utf-8"))
    except storage.NotFoundError:
        return None


def run_nightly(*, output: str, source: Optional[str] = None, manifest: Optional[str] = None,
                progress: Optional[ProgressFn] = None, **options: Any) -> NightlyResult:
    """Build tonight's manifest from ``source`` (or use ``manifest``), restyle it into ``output``
    and, when no row failed, record the run in ``<output>/_nightly/last_success.json``.

    ``options`` are the remaining JobConfig fields (style, alpha, quality, max_size, ...).
    Raises ValueError/ManifestError/StyleError/StorageError for bad input before any work runs.
    """
    if (source is None) == (manifest is None):
        raise ValueError("give exactly one of --source (a folder/prefix to scan) or --manifest (a Parquet manifest)")
    run_id = options.pop("run_id", None) or results.make_run_id()
    built_uri = manifest_uri(output, run_id)
    cfg = JobConfig(manifest=manifest or built_uri, output=output, run_id=run_id, **options)
    cfg.validate()  # cheap checks before listing a whole catalog
    if source is not None:
        if storage.is_within(output, source):
            # Tonight's outputs would be listed as tomorrow's new images.
            raise ValueError(f"--output {storage.redact(output)} is inside --source {storage.redact(source)}; "
                             "the job would restyle its own outputs: choose an output outside the source")
    # One run per output: a night still going when the next one starts makes the next one stop
    # (or wait with wait=True); nothing is listed or planned before the lease is ours.
    with output_lease(output, run_id, wait=cfg.wait, force=cfg.force) as lease:
        if source is not None:
            build_manifest(source, built_uri)
        plan = plan_job(cfg)
        previous = read_last_success(output)
        summary = restyle(cfg, plan=plan, progress=progress, lease=lease)
        written = _write_last_success(summary, cfg.manifest, source, previous) if summary.failed == 0 else None
    return NightlyResult(summary, cfg.manifest, written, previous)


def _write_last_success(summary: RunSummary, manifest: str, source: Optional[str],
                        previous: Optional[dict]) -> str:
    m = summary.metrics
    counts = {s: int(m["counts"].get(s, 0)) for s in results.STATUSES}
    record = {
        "run_id": summary.run_id,
        "started_at": m["started_at"],
        "finished_at": m["finished_at"],
        "total_rows": int(m["total_rows"]),
        "counts": counts,
        "source": storage.redact(source) if source else None,
        "manifest": storage.redact(manifest),
        "metrics_uri": storage.redact(summary.metrics_uri),
        "results_uri": storage.redact(summary.results_uri),
        "previous_run_id": previous.get("run_id") if previous else None,
    }
    uri = last_success_uri(summary.output)
    # storage.write_bytes is atomic, so a monitor never reads half a record.
    storage.write_bytes(uri, (json.dumps(record, indent=2) + "\n").encode("utf-8"), content_type="application/json")
    return uri
