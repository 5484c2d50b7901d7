"""The completed-output index: output_uri -> (source_fingerprint, params_key) of its latest ``ok``
row over all runs, what planning skips by. Kept as a snapshot (``<out>/_runs/_index.parquet``)
covering finished runs, so a rerun scans only the runs since."""

from __future__ import annotations

import json
import logging
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stylebatch.io import storage as _storage
from stylebatch.io.results.layout import check_run_id, index_uri, list_runs, results_dir, write_parquet
from stylebatch.io.results.parts import compact_run, part_paths, read_paths

log = logging.getLogger(__name__)

_INDEX_META_RUNS = b"stylebatch.runs_included"
_INDEX_META_VERSION = b"stylebatch.index_version"

_INDEX_SCHEMA = pa.schema([("output_uri", pa.string()), ("source_fingerprint", pa.string()),
                           ("params_key", pa.string())])


class CompletedIndex(Mapping):
    """output_uri -> (source_fingerprint, params_key) of its latest ``ok`` row, held as Arrow
    columns: about 100 bytes an output where a Python dict takes ~600 (a million outputs: ~100 MB
    instead of ~550 MB on the driver). ``lookup`` answers many URIs in one hashed pass."""

    def __init__(self, table: pa.Table):
        self.table = table.select(_INDEX_SCHEMA.names).cast(_INDEX_SCHEMA)

    def lookup(self, uris: Sequence[str]) -> list[tuple[str, str] | None]:
        pos = pc.index_in(pa.array(uris, pa.string()), value_set=self.table.column("output_uri"))
        fps = self.table.column("source_fingerprint").take(pos).to_pylist()
        keys = self.table.column("params_key").take(pos).to_pylist()
        return [None if p is None else (f, k) for p, f, k in zip(pos.to_pylist(), fps, keys)]

    def __getitem__(self, uri: str) -> tuple[str, str]:
        found = self.lookup([uri])[0]
        if found is None:
            raise KeyError(uri)
        return found

    def __iter__(self):
        return iter(self.table.column("output_uri").to_pylist())

    def __len__(self) -> int:
        return self.table.num_rows


def _latest_per_output(tables: Sequence[pa.Table]) -> pa.Table:
    """One row per output_uri from ``tables`` (oldest first): the last one wins."""
    table = pa.concat_tables([t.select(_INDEX_SCHEMA.names).cast(_INDEX_SCHEMA) for t in tables])
    table = table.append_column("_order", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = table.group_by("output_uri", use_threads=False).aggregate([("_order", "max")]).column("_order_max")
    return table.take(last).drop_columns(["_order"])


def _scan_ok(out_uri: str, runs: Iterable[str]) -> pa.Table:
    """The ``ok`` rows of ``runs``, oldest first: later run, then later finish, then higher attempt."""
    uris = [u for r in runs for u in part_paths(results_dir(out_uri, r))]
    cols = ["output_uri", "source_fingerprint", "params_key", "run_id", "finished_at", "attempt"]
    table = read_paths(uris, cols, filter=pc.field("status") == "ok")
    return table.sort_by([("run_id", "ascending"), ("finished_at", "ascending"), ("attempt", "ascending")])


def read_index_snapshot(out_uri: str) -> tuple[CompletedIndex, list[str]] | None:
    """(index, runs_included) from ``<out>/_runs/_index.parquet``, or None if absent/unreadable."""
    uri = index_uri(out_uri)
    try:
        data = _storage.read_bytes(uri)
    except (_storage.NotFoundError, _storage.IsAFolderError):
        return None
    try:
        table = pq.read_table(pa.BufferReader(data))
        meta = table.schema.metadata or {}
        runs = json.loads(meta[_INDEX_META_RUNS].decode())
        index = CompletedIndex(table)
    except Exception as exc:  # a damaged snapshot only costs a full scan
        log.warning("ignoring unreadable index snapshot %s: %s", _storage.redact(uri), exc)
        return None
    return index, list(runs)


def write_index_snapshot(out_uri: str, index: Mapping[str, tuple[str, str]], runs_included: Iterable[str]) -> str:
    """Persist ``index`` as covering ``runs_included`` (which must be finished:
    their later parts would be ignored by :func:`completed_index`)."""
    runs = sorted({check_run_id(r) for r in runs_included})
    if isinstance(index, CompletedIndex):
        table = index.table
    else:
        keys = list(index)
        table = pa.table({"output_uri": pa.array(keys, pa.string()),
                          "source_fingerprint": pa.array([index[k][0] for k in keys], pa.string()),
                          "params_key": pa.array([index[k][1] for k in keys], pa.string())})
    table = table.replace_schema_metadata({_INDEX_META_RUNS: json.dumps(runs).encode(), _INDEX_META_VERSION: b"1"})
    uri = index_uri(out_uri)
    write_parquet(uri, table)
    return uri


def _index_with(snapshot, runs: Sequence[str], out_uri: str) -> CompletedIndex:
    """The snapshot's index updated with the ``ok`` rows of ``runs`` (theirs win)."""
    scanned = _scan_ok(out_uri, runs)
    if snapshot and scanned.num_rows == 0:
        return snapshot[0]  # the usual rerun: nothing new since the last run ended
    return CompletedIndex(_latest_per_output(([snapshot[0].table] if snapshot else []) + [scanned]))


def completed_index(out_uri: str, *, use_snapshot: bool = True) -> CompletedIndex:
    """output_uri -> (source_fingerprint, params_key) of its latest ``ok`` row
    over all runs. Error/skipped rows never count. With a snapshot, only runs
    it does not cover are scanned; their rows override the snapshot's."""
    snapshot = read_index_snapshot(out_uri) if use_snapshot else None
    included = set(snapshot[1]) if snapshot else set()
    return _index_with(snapshot, [r for r in list_runs(out_uri) if r not in included], out_uri)


def fold_finished_runs(out_uri: str) -> str:
    """At the end of a run (holding the output's lease, so no other run is writing): compact
    every run the snapshot does not cover yet (this one, and any killed before its end), then
    fold them into the completed-output snapshot. Returns the snapshot's URI."""
    snapshot = read_index_snapshot(out_uri)
    included = set(snapshot[1]) if snapshot else set()
    for run in list_runs(out_uri):
        if run not in included:
            compact_run(out_uri, run)
    return refresh_index_snapshot(out_uri)


def refresh_index_snapshot(out_uri: str, *, exclude_runs: Iterable[str] = ()) -> str:
    """Fold every finished run (all listed runs except ``exclude_runs``, e.g.
    one still in progress) into the snapshot."""
    exclude = set(exclude_runs)
    snapshot = read_index_snapshot(out_uri)
    included = set(snapshot[1]) if snapshot else set()
    pending = [r for r in list_runs(out_uri) if r not in included and r not in exclude]
    return write_index_snapshot(out_uri, _index_with(snapshot, pending, out_uri), included | set(pending))
