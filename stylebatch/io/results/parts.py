"""A run's result rows on storage: one Parquet part per committed batch, compacted into a few
files at the end of the run, and read back as one table.

A results part is written only after the outputs it describes, so a part file is the commit marker
for its rows: an output without an ``ok`` row in some part is treated as not done and is redone on
the next run.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from stylebatch.io import storage as _storage
from stylebatch.io.results.layout import results_dir, write_parquet
from stylebatch.io.results.schema import RESULT_SCHEMA, coerce_results

COMPACTED_PREFIX = "results-"   # a run's compacted result files; "part-" files are per-batch commit markers
_FOLDED_META = b"stylebatch.folded_parts"


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
    write_parquet(uri, table)
    return uri


def part_paths(results_uri: str) -> list[str]:
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
        write_parquet(uri, table)
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


def read_paths(uris: list[str], columns: Sequence[str] | None = None, filter: pc.Expression | None = None) -> pa.Table:
    schema = RESULT_SCHEMA if columns is None else pa.schema([RESULT_SCHEMA.field(c) for c in columns])
    if not uris:
        return schema.empty_table()
    # An explicit schema makes older/narrower parts conform (missing columns
    # read as null); only the requested columns are decoded.
    tables = _storage.iter_parquet_tables(uris, schema=RESULT_SCHEMA, columns=columns, filter=filter)
    return pa.concat_tables(list(tables)).cast(schema)


def read_results(out_uri: str, run_id: str, *, columns: Sequence[str] | None = None) -> pa.Table:
    """All result rows of one run (empty table with the schema if none)."""
    return read_paths(part_paths(results_dir(out_uri, run_id)), columns)
