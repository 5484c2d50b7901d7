"""Per-row results, run bookkeeping and metrics (human-readable reports: ``report.py``).

Layout under an output root ``<out>`` (local path, file:// or s3://)::

    <out>/_runs/<run_id>/results/part-<uuid>.parquet   per-row results
    <out>/_runs/<run_id>/metrics.json                   run metrics
    <out>/_runs/<run_id>/contact_sheet.jpg              sample of outputs (report.py)
    <out>/_runs/<run_id>/report.html                    HTML report (report.py)
    <out>/_runs/_index.parquet                          completed-output snapshot

A results part is written only after the outputs it describes, so a part file
is the commit marker for its rows: an output without an ``ok`` row in some part
is treated as not done and is redone on the next run.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import secrets
import uuid
from array import array
from collections import Counter, defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stylebatch.io import storage as _storage

log = logging.getLogger(__name__)

STATUSES = ("ok", "error", "skipped")

RESULT_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("style", pa.string()),
        pa.field("quality", pa.string()),
        pa.field("output_uri", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("input_width", pa.int32()),
        pa.field("input_height", pa.int32()),
        pa.field("output_width", pa.int32()),
        pa.field("output_height", pa.int32()),
        pa.field("input_bytes", pa.int64()),
        pa.field("output_bytes", pa.int64()),
        pa.field("source_fingerprint", pa.string()),
        pa.field("params_key", pa.string()),
        pa.field("read_ms", pa.float64()),
        pa.field("model_ms", pa.float64()),
        pa.field("write_ms", pa.float64()),
        pa.field("attempt", pa.int32()),
        pa.field("worker", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)

RUNS_DIR = "_runs"
COMPACTED_PREFIX = "results-"   # a run's compacted result files; "part-" files are per-batch commit markers
_FOLDED_META = b"stylebatch.folded_parts"
INDEX_NAME = "_index.parquet"
_INDEX_META_RUNS = b"stylebatch.runs_included"
_INDEX_META_VERSION = b"stylebatch.index_version"
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STRING_FIELDS = {f.name for f in RESULT_SCHEMA if pa.types.is_string(f.type)}


# --------------------------------------------------------------------------
# run ids and paths
# --------------------------------------------------------------------------


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def make_run_id(now: _dt.datetime | None = None) -> str:
    """Sortable run id: UTC second + random suffix, e.g. ``20261121T221500Z-3f9a``."""
    now = (now or _utcnow()).astimezone(_dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def _check_run_id(run_id: str) -> str:
    # Run ids become path segments; refusing separators and dot-dot keeps a
    # run from writing outside its own directory.
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-' (no path separators)")
    return run_id


def run_dir(out_uri: str, run_id: str) -> str:
    return _storage.join(out_uri, RUNS_DIR, _check_run_id(run_id))


def results_dir(out_uri: str, run_id: str) -> str:
    return _storage.join(run_dir(out_uri, run_id), "results")


def metrics_uri(out_uri: str, run_id: str) -> str:
    return _storage.join(run_dir(out_uri, run_id), "metrics.json")


def index_uri(out_uri: str) -> str:
    return _storage.join(out_uri, RUNS_DIR, INDEX_NAME)


def _atomic_write(uri: str, data: bytes, content_type: str) -> None:
    # storage.write_bytes is atomic (local: hidden temp file + rename, which
    # dataset readers skip; S3: a single PUT), so readers never see partial parts.
    _storage.write_bytes(uri, data, content_type=content_type)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------
# schema coercion
# --------------------------------------------------------------------------


def _to_utc(value: Any, column: str) -> _dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and value != value:  # NaN, NaT
        return None
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        value = value.to_pydatetime()
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").astype(_dt.datetime)
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"column {column!r}: cannot parse timestamp {value!r}") from exc
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(float(value), _dt.timezone.utc)  # epoch seconds
    if not isinstance(value, _dt.datetime):
        raise ValueError(f"column {column!r}: expected a timestamp, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)  # naive timestamps are taken as UTC
    return value.astimezone(_dt.timezone.utc)


def _column_from_values(name: str, typ: pa.DataType, values: list) -> pa.Array:
    if pa.types.is_timestamp(typ):
        values = [_to_utc(v, name) for v in values]
    elif name in _STRING_FIELDS:
        # ids often arrive as ints; anything else non-string is a bug upstream
        values = [str(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v for v in values]
        values = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
    else:
        values = [None if isinstance(v, float) and math.isnan(v) and not pa.types.is_floating(typ) else v for v in values]
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"column {name!r}: cannot convert to {typ}: {exc}") from exc


def _column_from_arrow(name: str, typ: pa.DataType, col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if col.type.equals(typ):
        return col
    if pa.types.is_timestamp(typ) and pa.types.is_timestamp(col.type):
        # Naive timestamps are interpreted as UTC; sub-ms precision is dropped.
        return pc.cast(col, typ, safe=False)
    try:
        return pc.cast(col, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _column_from_values(name, typ, col.to_pylist())


def coerce_results(rows: Sequence[Mapping[str, Any]] | pa.Table | Any, *, run_id: str | None = None) -> pa.Table:
    """Return ``rows`` as a table with exactly RESULT_SCHEMA.

    Accepts a list of dicts, a pyarrow Table or a pandas DataFrame. Columns not
    in the schema are dropped, missing ones become null; ``run_id`` fills empty
    run ids (and must match present ones), ``finished_at`` defaults to now and
    ``attempt`` to 1. Raises ValueError for bad statuses or unconvertible values.
    """
    if not isinstance(rows, pa.Table) and hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = pa.Table.from_pandas(rows, preserve_index=False)
    arrays = []
    if isinstance(rows, pa.Table):
        n = rows.num_rows
        for f in RESULT_SCHEMA:
            if f.name in rows.column_names:
                arrays.append(_column_from_arrow(f.name, f.type, rows.column(f.name)))
            else:
                arrays.append(pa.nulls(n, f.type))
    else:
        rows = list(rows)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise ValueError(f"result row {i} is a {type(r).__name__}, expected a mapping")
        n = len(rows)
        for f in RESULT_SCHEMA:
            arrays.append(_column_from_values(f.name, f.type, [r.get(f.name) for r in rows]))
    table = pa.Table.from_arrays(arrays, schema=RESULT_SCHEMA)

    status = table.column("status")
    bad = sorted({s if s is not None else "<null>" for s in status.to_pylist() if s not in STATUSES})
    if bad:
        raise ValueError(f"invalid status value(s) {', '.join(map(repr, bad))}; expected one of {', '.join(STATUSES)}")
    ok_without_output = pc.sum(pc.and_(pc.equal(status, "ok"), pc.is_null(table.column("output_uri")))).as_py()
    if ok_without_output:
        raise ValueError(f"{ok_without_output} row(s) with status 'ok' have no output_uri")

    if run_id is not None:
        _check_run_id(run_id)
        ids = table.column("run_id")
        others = {r for r in ids.to_pylist() if r is not None and r != run_id}
        if others:
            raise ValueError(f"rows belong to run(s) {sorted(others)}, not to run {run_id!r}")
        table = table.set_column(table.schema.get_field_index("run_id"), RESULT_SCHEMA.field("run_id"), pc.fill_null(ids, run_id))
    now = pa.scalar(_utcnow(), type=pa.timestamp("ms", tz="UTC"))
    table = table.set_column(table.schema.get_field_index("finished_at"), RESULT_SCHEMA.field("finished_at"), pc.fill_null(table.column("finished_at"), now))
    table = table.set_column(table.schema.get_field_index("attempt"), RESULT_SCHEMA.field("attempt"), pc.fill_null(table.column("attempt"), pa.scalar(1, pa.int32())))
    return table


def result_columns(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The results row of each row of a stage's batch: the RESULT_SCHEMA columns it has (run_id
    and finished_at are added when the part is written). Source URIs may carry credentials
    (user:password@, presigned queries): they are redacted; an empty error is null."""
    cols = {f.name: np.asarray(batch[f.name]) for f in RESULT_SCHEMA if f.name in batch}
    if "uri" in cols:
        cols["uri"] = np.array([_storage.redact(u) if u is not None else None for u in cols["uri"]], dtype=object)
    if "error" in cols:
        cols["error"] = np.array([e or None for e in cols["error"]], dtype=object)
    return cols


# --------------------------------------------------------------------------
# result parts
# --------------------------------------------------------------------------


def write_results_part(out_uri: str, run_id: str, rows: Sequence[Mapping[str, Any]] | pa.Table,
                       *, part_id: str | None = None) -> str:
    """Atomically write one results part for ``run_id``; returns its URI.

    Call it only after the outputs the rows describe are written: the part is
    the commit marker for those outputs. A deterministic ``part_id`` (e.g. a hash
    of the rows' output URIs) makes a retried task overwrite its own part instead
    of adding duplicate rows.
    """
    table = coerce_results(rows, run_id=run_id)
    name = part_id if part_id and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", part_id) else uuid.uuid4().hex
    uri = _storage.join(results_dir(out_uri, run_id), f"part-{name}.parquet")
    _atomic_write(uri, _parquet_bytes(table), "application/vnd.apache.parquet")
    return uri


def _part_paths(results_uri: str) -> list[str]:
    """The files holding a run's rows, each row once: its compacted files, plus the per-batch parts
    that no compacted file has folded in yet (a run killed before or during its compaction)."""
    files, _ = _storage.list_dir(results_uri)
    compacted = [n for n in files if n.startswith(COMPACTED_PREFIX) and n.endswith(".parquet")]
    folded = {name for n in compacted for name in _folded_parts(_storage.join(results_uri, n))}
    parts = [n for n in files if n.startswith("part-") and n.endswith(".parquet") and n not in folded]
    return [_storage.join(results_uri, n) for n in compacted + parts]


def _folded_parts(uri: str) -> list[str]:
    meta = _storage.read_parquet_metadata(uri).metadata or {}
    return json.loads(meta.get(_FOLDED_META, b"[]").decode())


def compact_run(out_uri: str, run_id: str, *, rows_per_file: int = 1_000_000) -> list[str]:
    """Fold a run's per-batch parts into a few files of up to ``rows_per_file`` rows (a 1M-row run
    would otherwise leave ~125,000 tiny objects to list and read). Safe to kill at any moment:
    each compacted file names the parts it holds, readers skip those parts, and the parts are
    deleted only after every compacted file is written; a later call finishes the job.
    Returns the compacted files' URIs (empty when there was nothing to fold)."""
    results_uri = results_dir(out_uri, run_id)
    names, _ = _storage.list_dir(results_uri)
    compacted = [n for n in names if n.startswith(COMPACTED_PREFIX) and n.endswith(".parquet")]
    folded = {p for n in compacted for p in _folded_parts(_storage.join(results_uri, n))}
    parts = [n for n in names if n.startswith("part-") and n.endswith(".parquet")]
    stale = [p for p in parts if p in folded]        # folded by a compaction that was cut short
    loose = [p for p in parts if p not in folded]
    written: list[str] = []
    batches: list[pa.RecordBatch] = []
    claimed: list[str] = []
    rows = 0

    def flush() -> None:
        nonlocal batches, claimed, rows
        # A compacted file claims exactly the parts whose rows it holds, so at every moment each
        # row is read once: from its part, or from the one file that claimed the part.
        table = pa.Table.from_batches(batches, schema=RESULT_SCHEMA).replace_schema_metadata(
            {_FOLDED_META: json.dumps(claimed).encode()})
        name = f"{COMPACTED_PREFIX}{len(compacted) + len(written):05d}-{uuid.uuid4().hex[:8]}.parquet"
        uri = _storage.join(results_uri, name)
        _atomic_write(uri, _parquet_bytes(table), "application/vnd.apache.parquet")
        written.append(uri)
        batches, claimed, rows = [], [], 0

    if loose:
        # Parallel reads through storage (its retries), in order, a bounded number ahead.
        tables = _storage.iter_parquet_tables([_storage.join(results_uri, p) for p in loose], schema=RESULT_SCHEMA)
        for name, table in zip(loose, tables):
            if rows >= rows_per_file:
                flush()
            claimed.append(name)
            batches.extend(table.to_batches())
            rows += table.num_rows
        if claimed:
            flush()
    for p in stale + loose:
        _storage.delete(_storage.join(results_uri, p))
    return written


def _read_paths(uris: list[str], columns: Sequence[str] | None = None, filter: pc.Expression | None = None) -> pa.Table:
    schema = RESULT_SCHEMA if columns is None else pa.schema([RESULT_SCHEMA.field(c) for c in columns])
    if not uris:
        return schema.empty_table()
    # An explicit schema makes older/narrower parts conform (missing columns
    # read as null); only the requested columns are decoded.
    tables = _storage.iter_parquet_tables(uris, schema=RESULT_SCHEMA, columns=columns, filter=filter)
    return pa.concat_tables(list(tables)).cast(schema)


def read_results(out_uri: str, run_id: str, *, columns: Sequence[str] | None = None) -> pa.Table:
    """All result rows of one run (empty table with the schema if none)."""
    return _read_paths(_part_paths(results_dir(out_uri, run_id)), columns)


def list_runs(out_uri: str) -> list[str]:
    """Run ids that have a directory under ``<out>/_runs``, sorted (= chronological for generated ids)."""
    _, folders = _storage.list_dir(_storage.join(out_uri, RUNS_DIR))
    return sorted(name for name in folders if not name.startswith(("_", ".")) and _RUN_ID_RE.match(name))


# --------------------------------------------------------------------------
# completed-output index
# --------------------------------------------------------------------------


_INDEX_SCHEMA = pa.schema([("output_uri", pa.string()), ("source_fingerprint", pa.string()),
                           ("params_key", pa.string())])


class CompletedIndex(Mapping):
    """output_uri -> (source_fingerprint, params_key) of its latest ``ok`` row, held as Arrow
    columns: about 100 bytes an output where a Python dict took ~600 (a million outputs: ~100 MB
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
    uris = [u for r in runs for u in _part_paths(results_dir(out_uri, r))]
    cols = ["output_uri", "source_fingerprint", "params_key", "run_id", "finished_at", "attempt"]
    table = _read_paths(uris, cols, filter=pc.field("status") == "ok")
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
    runs = sorted({_check_run_id(r) for r in runs_included})
    if isinstance(index, CompletedIndex):
        table = index.table
    else:
        keys = list(index)
        table = pa.table({"output_uri": pa.array(keys, pa.string()),
                          "source_fingerprint": pa.array([index[k][0] for k in keys], pa.string()),
                          "params_key": pa.array([index[k][1] for k in keys], pa.string())})
    table = table.replace_schema_metadata({_INDEX_META_RUNS: json.dumps(runs).encode(), _INDEX_META_VERSION: b"1"})
    uri = index_uri(out_uri)
    _atomic_write(uri, _parquet_bytes(table), "application/vnd.apache.parquet")
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


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------


def _batch_columns(rows: Any, names: Sequence[str]) -> tuple[int, dict[str, list]]:
    """Columns ``names`` of a batch given as list of dicts, pyarrow Table,
    pandas DataFrame or dict of arrays (Ray's numpy batch format)."""
    if isinstance(rows, pa.Table):
        return rows.num_rows, {n: rows.column(n).to_pylist() if n in rows.column_names else [None] * rows.num_rows for n in names}
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return _batch_columns(pa.Table.from_pandas(rows, preserve_index=False), names)
    if isinstance(rows, Mapping):
        n = len(next(iter(rows.values()))) if rows else 0
        out = {}
        for name in names:
            col = rows.get(name)
            out[name] = [None] * n if col is None else [v.item() if isinstance(v, np.generic) else v for v in list(col)]
        return n, out
    rows = list(rows)
    return len(rows), {n: [r.get(n) for r in rows] for n in names}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


class RunMetrics:
    """Streaming accumulator over result rows; memory is O(ok rows) floats."""

    _COLUMNS = ("status", "quality", "style", "read_ms", "model_ms", "write_ms", "input_bytes", "output_bytes", "image_id", "error")
    MAX_ERRORS = 20

    def __init__(self, run_id: str | None = None, started_at: _dt.datetime | None = None):
        self.run_id = run_id
        self.started_at = (started_at or _utcnow()).astimezone(_dt.timezone.utc)
        self.counts: dict[str, int] = {s: 0 for s in STATUSES}
        self.per_quality: dict[str, Counter] = defaultdict(Counter)
        self.per_style: dict[str, Counter] = defaultdict(Counter)
        self.latencies_ms = array("d")
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors: list[dict[str, Any]] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, rows: Any) -> "RunMetrics":
        n, c = _batch_columns(rows, self._COLUMNS)
        bad = sorted({str(s) for s in c["status"] if s not in STATUSES})
        if bad:
            raise ValueError(f"invalid status value(s) {', '.join(bad)}; expected one of {', '.join(STATUSES)}")
        for i in range(n):
            status = c["status"][i]
            self.counts[status] += 1
            self.per_quality[str(c["quality"][i])][status] += 1
            self.per_style[str(c["style"][i])][status] += 1
            ib = _num(c["input_bytes"][i])
            if ib is not None:
                self.bytes_in += int(ib)
            if status == "ok":
                ob = _num(c["output_bytes"][i])
                if ob is not None:
                    self.bytes_out += int(ob)
                parts = [_num(c[k][i]) for k in ("read_ms", "model_ms", "write_ms")]
                if any(p is not None for p in parts):
                    self.latencies_ms.append(sum(p for p in parts if p is not None))
            elif status == "error" and len(self.errors) < self.MAX_ERRORS:
                self.errors.append({"image_id": c["image_id"][i], "error": _storage.redact(str(c["error"][i]))})
        return self

    def latency_summary(self) -> dict[str, float | None]:
        if not self.latencies_ms:
            return {"p50": None, "p95": None, "max": None, "mean": None}
        lat = np.frombuffer(self.latencies_ms, dtype=np.float64)
        p50, p95 = np.percentile(lat, [50, 95])
        return {"p50": float(p50), "p95": float(p95), "max": float(lat.max()), "mean": float(lat.mean())}

    def finish(self, wall_s: float, config: Mapping[str, Any] | None = None, versions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ok = self.counts["ok"]
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "finished_at": _utcnow().isoformat().replace("+00:00", "Z"),
            "wall_s": float(wall_s),
            "total_rows": self.total,
            "counts": dict(self.counts),
            "per_quality": {q: {s: int(v.get(s, 0)) for s in STATUSES} for q, v in sorted(self.per_quality.items())},
            "per_style": {q: {s: int(v.get(s, 0)) for s in STATUSES} for q, v in sorted(self.per_style.items())},
            "images_per_s": ok / wall_s if wall_s and wall_s > 0 else None,
            "latency_ms": self.latency_summary(),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "errors_sample": list(self.errors),
            "config": dict(config or {}),
            "versions": dict(versions or {}),
        }


def collect_versions() -> dict[str, str]:
    """Versions of the packages that shape outputs, for metrics.json."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("stylebatch", "torch", "torchvision", "ray", "pyarrow", "numpy", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def write_metrics(out_uri: str, run_id: str, metrics: Mapping[str, Any]) -> str:
    uri = metrics_uri(out_uri, run_id)
    text = json.dumps(metrics, indent=2, default=_json_default, allow_nan=False) + "\n"
    _atomic_write(uri, text.encode("utf-8"), "application/json")
    return uri


def read_metrics(out_uri: str, run_id: str) -> dict[str, Any]:
    return json.loads(_storage.read_bytes(metrics_uri(out_uri, run_id)).decode("utf-8"))
