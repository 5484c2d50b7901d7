"""The results schema (one row per input row and style: what happened, where the output went,
timings) and turning rows from any source into a table of exactly that schema."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stylebatch.io import storage as _storage
from stylebatch.io.results.layout import check_run_id, utcnow

STATUSES = ("ok", "error", "skipped")

RESULT_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("style", pa.string()),
        pa.field("quality", pa.string()),
        pa.field("model", pa.string()),  # the model kind that ran the row (registry.MODEL_KINDS)
        pa.field("note", pa.string()),   # why that model, when it is not the one planned (a failed training)
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
_STRING_FIELDS = {f.name for f in RESULT_SCHEMA if pa.types.is_string(f.type)}


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
        check_run_id(run_id)
        ids = table.column("run_id")
        others = {r for r in ids.to_pylist() if r is not None and r != run_id}
        if others:
            raise ValueError(f"rows belong to run(s) {sorted(others)}, not to run {run_id!r}")
        table = table.set_column(table.schema.get_field_index("run_id"), RESULT_SCHEMA.field("run_id"), pc.fill_null(ids, run_id))
    now = pa.scalar(utcnow(), type=pa.timestamp("ms", tz="UTC"))
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
