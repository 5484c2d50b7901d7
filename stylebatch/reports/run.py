"""One run as the reports read it: its result rows (sorted by finish time), its RunMetrics and its
metrics.json, loaded once and shared by the summary, the contact sheet and the HTML page."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow.compute as pc

from stylebatch.io import results as _results
from stylebatch.io import storage as _storage

log = logging.getLogger(__name__)

MAX_READ_BYTES = 256 * 1024 * 1024  # an output or source bigger than this is not thumbnailed
_COLUMNS = ["image_id", "uri", "style", "quality", "status", "error", "output_uri", "read_ms", "model_ms",
            "write_ms", "input_bytes", "output_bytes", "finished_at"]


class Run:
    """One run's rows (sorted by finish time), its RunMetrics and metrics.json (None if absent)."""

    def __init__(self, out_uri: str, run_id: str):
        self.out_uri, self.run_id = out_uri, run_id
        self.table = _results.read_results(out_uri, run_id, columns=_COLUMNS).sort_by([("finished_at", "ascending")])
        self.metrics = _results.RunMetrics(run_id).add(self.table)
        self.metrics_json: dict[str, Any] | None = None
        if _storage.exists(_results.metrics_uri(out_uri, run_id)):
            try:
                self.metrics_json = _results.read_metrics(out_uri, run_id)
            except Exception as exc:
                log.warning("cannot read metrics for run %s: %s", run_id, exc)

    def ok_outputs(self) -> list[dict[str, Any]]:
        """The run's ok rows, one per output (a retried output counts once: its latest row), in
        image-id order."""
        t = self.table
        t = t.filter(pc.equal(t.column("status"), "ok")).sort_by([("image_id", "ascending"), ("finished_at", "ascending")])
        latest: dict[str, dict[str, Any]] = {}
        for r in t.select(["image_id", "uri", "style", "output_uri"]).to_pylist():
            latest[r["output_uri"]] = r  # the latest row of a retried output, at its first place
        return list(latest.values())


def even_sample(items: list, n: int) -> list:
    """At most ``n`` items spread evenly over ``items`` (first and last included), order kept."""
    if n <= 0:
        return []
    if len(items) <= n:
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in picks]
