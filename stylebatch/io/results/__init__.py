"""Per-row results, run bookkeeping and metrics (human-readable reports: ``stylebatch.reports``).

Layout under an output root ``<out>`` (local path, file:// or s3://)::

    <out>/_runs/<run_id>/results/part-<uuid>.parquet   per-row results
    <out>/_runs/<run_id>/metrics.json                   run metrics
    <out>/_runs/<run_id>/contact_sheet.jpg              sample of outputs (stylebatch.reports)
    <out>/_runs/<run_id>/report.html                    HTML report (stylebatch.reports)
    <out>/_runs/_index.parquet                          completed-output snapshot

This package's namespace is the results API; its modules hold one role each:

* ``layout``: run ids, the paths above, listing runs, writing a Parquet file there;
* ``schema``: RESULT_SCHEMA and turning rows from any source into a table of it;
* ``parts``: a run's per-batch parts (the commit markers of its outputs), compaction, reading rows;
* ``index``: the completed-output index over all runs and its snapshot;
* ``metrics``: RunMetrics and metrics.json.
"""

from __future__ import annotations

from stylebatch.io.results.index import (
    completed_index,
    fold_finished_runs,
    read_index_snapshot,
    refresh_index_snapshot,
    write_index_snapshot,
)
from stylebatch.io.results.layout import list_runs, make_run_id, metrics_uri, results_dir, run_dir
from stylebatch.io.results.metrics import RunMetrics, collect_versions, read_metrics, write_metrics
from stylebatch.io.results.parts import COMPACTED_PREFIX, compact_run, read_results, write_results_part
from stylebatch.io.results.schema import RESULT_SCHEMA, STATUSES, coerce_results, result_columns

__all__ = [
    "COMPACTED_PREFIX",
    "RESULT_SCHEMA",
    "STATUSES",
    "RunMetrics",
    "coerce_results",
    "collect_versions",
    "compact_run",
    "completed_index",
    "fold_finished_runs",
    "list_runs",
    "make_run_id",
    "metrics_uri",
    "read_index_snapshot",
    "read_metrics",
    "read_results",
    "refresh_index_snapshot",
    "result_columns",
    "results_dir",
    "run_dir",
    "write_index_snapshot",
    "write_metrics",
    "write_results_part",
]
