"""Parquet on top of the storage functions: one file or a folder of parts as a table, many small
files read in parallel (``iter_parquet_tables``), a footer alone (``read_parquet_metadata``), and
a pyarrow filesystem for libraries that need one. Every byte goes through ``dispatch``, so errors
and retries are the same as for any other object."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from stylebatch.io.storage.base import IsAFolderError, NotFoundError, StorageError
from stylebatch.io.storage.dispatch import backend_for, list_objects, read_bytes, write_bytes


def pyarrow_filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and in-filesystem path for ``uri``, for libraries that need one (Ray
    Data, pyarrow). Local -> (LocalFileSystem, absolute path); S3 -> (S3FileSystem configured from
    the same environment as boto3, "bucket/key"). stylebatch's own reads go through ``dispatch``."""
    backend, loc, uri = backend_for(uri)
    return backend.pyarrow_filesystem(uri, loc)


def _parquet_error(uri: str, exc: BaseException) -> StorageError:
    return StorageError(f"read {uri}: not a valid Parquet file ({exc})", uri=uri)


def _table_from_bytes(uri: str, data: bytes, columns: Sequence[str] | None = None, *,
                      schema: pa.Schema | None = None, filter: Any = None) -> pa.Table:
    try:
        if schema is None and filter is None:
            return pq.read_table(pa.BufferReader(data), columns=columns)
        import pyarrow.dataset as pads

        fragment = pads.ParquetFileFormat().make_fragment(pa.BufferReader(data))
        return fragment.to_table(schema=schema, columns=list(columns) if columns is not None else None,
                                 filter=filter)
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(uri, exc) from None


def read_parquet_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file, or every ``*.parquet`` file under a local folder / S3 prefix
    (as written by Ray Data), into a single table. Goes through read_bytes, so errors and
    retries are the same as for any other object."""
    try:
        return _table_from_bytes(uri, read_bytes(uri), columns)
    except (NotFoundError, IsAFolderError) as exc:
        first = exc
    # Not one object: a folder/prefix of parts.
    try:
        parts = [o.uri for o in list_objects(uri, suffixes=[".parquet"])]
    except NotFoundError:
        parts = []
    if not parts:
        if isinstance(first, IsAFolderError):
            raise NotFoundError(f"read {uri}: folder contains no .parquet files", uri=uri)
        raise first
    tables = [_table_from_bytes(part, read_bytes(part), columns) for part in parts]
    return pa.concat_tables(tables, promote_options="default")


_PARQUET_READERS = 16   # threads fetching bytes
_PARQUET_CHUNK = 512    # files decoded together (and fetched ahead of decoding)
_FOOTER_GUESS = 64 * 1024


def iter_parquet_tables(uris: Iterable[str], *, schema: pa.Schema | None = None,
                        columns: Sequence[str] | None = None, filter: Any = None) -> Iterator[pa.Table]:
    """Each Parquet file of ``uris`` as a table, in order, for many small files.

    Bytes are fetched with read_bytes (so with its retries) by a pool of threads, one chunk of
    files ahead of decoding; memory holds two chunks' bytes at most. With ``schema`` (the files'
    common schema) a chunk is decoded as one pyarrow dataset over the in-memory files (Arrow's
    threads, as fast as a dataset on a filesystem), a file lacking some of the schema's columns
    reads them as nulls, and ``columns`` / ``filter`` (a pyarrow.compute expression) apply to
    every file; without it each file is read with its own schema."""
    uris = list(uris)
    if not uris:
        return
    chunks = [uris[i:i + _PARQUET_CHUNK] for i in range(0, len(uris), _PARQUET_CHUNK)]
    pool = ThreadPoolExecutor(max_workers=min(_PARQUET_READERS, len(uris)), thread_name_prefix="storage-parquet")
    try:
        fetching = [pool.submit(read_bytes, u) for u in chunks[0]]
        for i, chunk in enumerate(chunks):
            datas = [f.result() for f in fetching]
            fetching = [pool.submit(read_bytes, u) for u in chunks[i + 1]] if i + 1 < len(chunks) else []
            yield from _decode_parquet(chunk, datas, schema, columns, filter)
            del datas
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_parquet(uris: list[str], datas: list[bytes], schema: pa.Schema | None,
                    columns: Sequence[str] | None, filter: Any) -> Iterator[pa.Table]:
    if schema is None or len(uris) == 1:
        for uri, data in zip(uris, datas):
            yield _table_from_bytes(uri, data, columns, schema=schema, filter=filter)
        return
    import pyarrow.dataset as pads

    fmt = pads.ParquetFileFormat()
    buffers = [pa.py_buffer(d) for d in datas]
    position = {b.address: i for i, b in enumerate(buffers)}
    batches: list[list[pa.RecordBatch]] = [[] for _ in buffers]
    try:
        dataset = pads.FileSystemDataset([fmt.make_fragment(b) for b in buffers], schema=schema, format=fmt)
        scanner = dataset.scanner(columns=list(columns) if columns is not None else None, filter=filter)
        for tagged in scanner.scan_batches():  # each batch tagged with the file (buffer) it came from
            batches[position[tagged.fragment.buffer.address]].append(tagged.record_batch)
    except (pa.ArrowException, OSError) as exc:
        for uri, data in zip(uris, datas):  # name the file that cannot be read
            _table_from_bytes(uri, data, columns, schema=schema, filter=filter)
        raise _parquet_error(uris[0] if len(uris) == 1 else f"{uris[0]} .. {uris[-1]}", exc) from None
    for per_file in batches:
        yield pa.Table.from_batches(per_file, schema=scanner.projected_schema)


def read_parquet_metadata(uri: str) -> pq.FileMetaData:
    """The footer of one Parquet file (row counts, schema, key-value metadata), read without
    fetching the data: one ranged read of the file's end (two when the footer is large)."""
    backend, loc, uri = backend_for(uri)
    tail = backend.read_tail(uri, loc, _FOOTER_GUESS)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise _parquet_error(uri, "no Parquet footer")
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > len(tail):
        tail = backend.read_tail(uri, loc, need)
        if len(tail) < need:
            raise _parquet_error(uri, "footer longer than the file")
    try:
        return pq.read_metadata(pa.BufferReader(tail[-need:]))
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(uri, exc) from None


def write_parquet_table(table: pa.Table, uri: str) -> None:
    """Write ``table`` as one Parquet file (atomic locally; an S3 put is atomic anyway)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    write_bytes(uri, sink.getvalue(), content_type="application/vnd.apache.parquet")
