"""Every byte stylebatch reads or writes goes through here: local paths, file:// and s3://.

One ``Backend`` subclass per URI scheme (``local.LocalBackend``, ``s3.S3Backend``), registered once
in ``BACKENDS``; the functions below parse a URI, pick its backend and call it, so callers never
branch on a scheme. What is the same for every scheme lives here: URI parsing and joining, safe
output keys (``output_uri``), argument checks, Parquet on top of bytes, and comparing locations.
Adding a scheme (``gs://``, say) is one Backend subclass and one ``BACKENDS`` entry.

* Every error is a StorageError subclass whose message is passed through :func:`redact`.
* S3 retries transient failures within one wall-clock budget (STYLEBATCH_IO_RETRY_SECONDS,
  default 30 s); see ``s3.py``.
* Fingerprints identify content: the ETag on S3, the sha256 of the bytes locally.
"""

from __future__ import annotations

import io
import os
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from stylebatch.io.redact import redact
from stylebatch.io.storage.base import (
    SCHEME_PATTERN,
    SCHEME_RE,
    AccessDeniedError,
    AlreadyExistsError,
    Backend,
    IsAFolderError,
    NotFoundError,
    ObjectInfo,
    ObjectTooLargeError,
    ParsedURI,
    PreconditionFailedError,
    StorageError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from stylebatch.io.storage.local import LocalBackend
from stylebatch.io.storage.s3 import S3Backend, get_s3_client

__all__ = [
    "BACKENDS",
    "Backend",
    "SUPPORTED_SCHEMES",
    "StorageError",
    "NotFoundError",
    "AccessDeniedError",
    "UnsupportedSchemeError",
    "UnsafePathError",
    "ObjectTooLargeError",
    "IsAFolderError",
    "PreconditionFailedError",
    "AlreadyExistsError",
    "ParsedURI",
    "ObjectInfo",
    "parse_uri",
    "uri_errors",
    "supported_locations",
    "read_bytes",
    "write_bytes",
    "exists",
    "stat",
    "list_objects",
    "list_dir",
    "join",
    "output_uri",
    "is_relative",
    "is_within",
    "absolute",
    "delete",
    "read_with_fingerprint",
    "create_exclusive",
    "replace_if_match",
    "delete_if_match",
    "redact",
    "get_s3_client",
    "pyarrow_filesystem",
    "read_parquet_table",
    "read_parquet_metadata",
    "iter_parquet_tables",
    "write_parquet_table",
]

#: The accepted URI schemes, each with the class that serves it; bare paths are DEFAULT_SCHEME's.
BACKENDS: dict[str, type[Backend]] = {"file": LocalBackend, "s3": S3Backend}
DEFAULT_SCHEME = "file"

_INSTANCES: dict[type, Backend] = {}


def __getattr__(name: str):
    if name == "SUPPORTED_SCHEMES":  # kept for callers of the old constant; follows BACKENDS
        return tuple(BACKENDS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def supported_locations() -> str:
    """The accepted forms, for messages: "local paths, file://, s3://"."""
    return ", ".join(["local paths"] + [f"{s}://" for s in BACKENDS])


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------


def parse_uri(uri: str | os.PathLike) -> ParsedURI:
    """Split a URI into (scheme, bucket, key_or_path).

    Accepts bare local paths and the URIs of the schemes in ``BACKENDS`` (``file:///abs/path`` or
    ``file:/abs/path``, ``s3://bucket/key``). Anything that starts with another ``scheme:`` (http,
    ftp, gs, data, ...) raises UnsupportedSchemeError; a local file whose name contains a colon
    must be written as ``./name:with:colon``.
    """
    if type(uri) is not str and isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise StorageError(f"URI must be a string, got {type(uri).__name__}")
    if not uri:
        raise StorageError("empty URI")
    m = SCHEME_RE.match(uri)
    if not m:
        return ParsedURI(DEFAULT_SCHEME, None, uri)
    scheme = m.group(1).lower()
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise UnsupportedSchemeError(
            f"unsupported URI scheme {scheme!r} in {uri!r}; supported: "
            + ", ".join(f"{s}://" for s in BACKENDS)
            + " or a local path",
            uri=uri,
        )
    return backend.parse(uri, scheme, uri[m.end():])


def uri_errors(uris: Sequence[str | None]) -> dict[int, StorageError]:
    """What :func:`parse_uri` raises for each URI it refuses, by position (None entries are skipped).
    Fast on a million URIs: bare paths and URIs in their backend's ``plain_form`` are accepted in
    one vectorised pass, only the rest are parsed one by one."""
    import pyarrow.compute as pc

    arr = pa.array(uris, pa.string())
    plain = pc.invert(pc.match_substring_regex(arr, SCHEME_PATTERN))  # bare paths
    plain = pc.and_(plain, pc.not_equal(arr, ""))
    for cls in BACKENDS.values():
        if cls.plain_form:
            plain = pc.or_(plain, pc.match_substring_regex(arr, cls.plain_form))
    errors: dict[int, StorageError] = {}
    for i in pc.indices_nonzero(pc.invert(pc.fill_null(plain, True))).to_pylist():
        try:
            parse_uri(uris[i])
        except StorageError as exc:
            errors[i] = exc
    return errors


def _backend(uri: str | os.PathLike) -> tuple[Backend, ParsedURI, str]:
    """The backend serving ``uri``, its parsed form and ``uri`` as a string."""
    loc = parse_uri(uri)
    cls = BACKENDS[loc.scheme]
    backend = _INSTANCES.get(cls)
    if backend is None:
        backend = _INSTANCES.setdefault(cls, cls())
    return backend, loc, os.fspath(uri)


def join(base_uri: str, *parts: str) -> str:
    """Join path parts onto a URI with "/" and keep its form (bare path, file://, s3://).

    Leading/trailing slashes of parts are dropped and empty parts skipped, so a part can never
    replace the base the way ``os.path.join`` does with an absolute part. For untrusted parts use
    :func:`output_uri`, which also rejects traversal.
    """
    base = os.fspath(base_uri)
    parse_uri(base)  # validate scheme early
    clean = [str(p).strip("/") for p in parts]
    clean = [p for p in clean if p]
    if not clean:
        return base
    if base.endswith("/"):
        return base + "/".join(clean)
    return base + "/" + "/".join(clean)


_MAX_DECODE_ROUNDS = 10
_MAX_SEGMENT_BYTES = 255  # NAME_MAX on common local filesystems


def _fully_unquote(text: str) -> str:
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = urllib.parse.unquote(text)
        if decoded == text:
            return text
        text = decoded
    return text


def _check_output_part(part: Any) -> str | None:
    """Return why ``part`` is unsafe, or None when it is fine."""
    if not isinstance(part, str):
        return f"must be a string, got {type(part).__name__}"
    if part == "":
        return "is empty"
    if part.startswith("/"):
        return "is an absolute path"
    if "\\" in part:
        return "contains a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in part):
        return "contains a NUL or control character"
    decoded = _fully_unquote(part)
    if decoded != part:
        # Percent-encoded separators or dots are traversal attempts once any later layer decodes.
        if decoded.count("/") != part.count("/") or "\\" in decoded:
            return "contains a URL-encoded path separator (%2f or %5c)"
        if any(ord(c) < 32 or ord(c) == 127 for c in decoded):
            return "contains a URL-encoded control character"
    for text, note in ((part, ""), (decoded, " (URL-encoded)")):
        for seg in text.split("/"):
            if seg == "..":
                return "contains a '..' segment" + note
            if seg == ".":
                return "contains a '.' segment"
            if seg == "":
                return "contains an empty path segment (// or a trailing /)"
            if len(seg.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
                return f"has a path segment longer than {_MAX_SEGMENT_BYTES} bytes"
    return None


def output_uri(base_uri: str, *parts: str) -> str:
    """Join ``parts`` under ``base_uri`` and guarantee the result stays under it.

    Each part may contain "/" between non-empty segments; a part that is empty, absolute, has
    ".." or "." segments, a backslash, a NUL/control character, or URL-encoded traversal
    (%2e%2e, %2f, %5c in any case, decoded repeatedly) raises UnsafePathError naming it.
    """
    base = os.fspath(base_uri)
    parse_uri(base)
    if not parts:
        raise UnsafePathError(f"output_uri needs at least one path part under {base!r}", uri=base)
    for part in parts:
        why = _check_output_part(part)
        if why is not None:
            raise UnsafePathError(f"unsafe output path part {part!r} under {base!r}: {why}", uri=base)
    result = join(base, *parts)
    # Belt and braces: the checks above imply this, but the guarantee is the point of the function.
    prefix = base if base.endswith("/") else base + "/"
    if not result.startswith(prefix):  # pragma: no cover - unreachable if the checks are right
        raise UnsafePathError(f"output path {result!r} escapes {base!r}", uri=base)
    return result


def is_relative(ref: str) -> bool:
    """True for a bare local path that is not absolute: one to resolve against a base (with
    :func:`join`); False for URIs and absolute paths."""
    return not SCHEME_RE.match(ref) and not os.path.isabs(ref)


def is_within(child_uri: str, parent_uri: str) -> bool:
    """True when ``child_uri`` is ``parent_uri`` or lies under it (same scheme and bucket; local
    paths compared absolute)."""
    c_backend, c, _ = _backend(child_uri)
    p_backend, p, _ = _backend(parent_uri)
    c, p = c_backend.canonical(c), p_backend.canonical(p)
    if (c.scheme, c.bucket) != (p.scheme, p.bucket):
        return False
    c_path, p_path = c.key_or_path.rstrip("/"), p.key_or_path.rstrip("/")
    return p_path == "" or c_path == p_path or c_path.startswith(p_path + "/")


def absolute(uri: str) -> str:
    """``uri`` in a form that means the same from any working directory (a relative local path
    made absolute; other URIs unchanged)."""
    backend, loc, uri = _backend(uri)
    return backend.absolute(uri, loc)


# --------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------


def _check_max_bytes(max_bytes: int | None) -> None:
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")


def _payload(data: Any) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return data if type(data) is bytes else bytes(data)


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """Read a whole object. With ``max_bytes``, larger objects raise ObjectTooLargeError
    (a StorageError) before their content is downloaded/read."""
    backend, loc, uri = _backend(uri)
    _check_max_bytes(max_bytes)
    return backend.read_bytes(uri, loc, max_bytes)


def write_bytes(uri: str, data: bytes, *, content_type: str | None = None) -> None:
    """Write a whole object. Local writes create parent folders and are atomic (temp file in the
    same folder + os.replace); S3 puts are atomic by nature. ``content_type`` defaults to a guess
    from the extension (S3 only)."""
    backend, loc, uri = _backend(uri)
    backend.write_bytes(uri, loc, _payload(data), content_type)


def stat(uri: str) -> ObjectInfo:
    """Size, content fingerprint and mtime of one object (NotFoundError if absent)."""
    backend, loc, uri = _backend(uri)
    return backend.stat(uri, loc)


def exists(uri: str) -> bool:
    """True if a file/object exists at ``uri`` (directories and bare S3 prefixes do not count).
    Access denied and other failures raise rather than answer False."""
    backend, loc, uri = _backend(uri)
    return backend.exists(uri, loc)


def _normalize_suffixes(suffixes: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if suffixes is None:
        return None
    if isinstance(suffixes, str):
        suffixes = [suffixes]
    return tuple(s.lower() for s in suffixes)


def list_objects(prefix_uri: str, *, suffixes: Iterable[str] | None = None) -> Iterator[ObjectInfo]:
    """All objects under a folder/prefix, recursively, sorted by key.

    The prefix is treated as a folder ("s3://b/photos" lists "photos/..." but not "photos2/...").
    ``suffixes`` filters by name ending, case-insensitively (e.g. [".jpg", ".png"]). Local
    fingerprints are computed on first access (see ObjectInfo). Our own in-flight temp files
    are skipped. A missing local folder or S3 bucket raises NotFoundError; an empty prefix
    yields nothing.
    """
    backend, loc, prefix_uri = _backend(prefix_uri)
    sfx = _normalize_suffixes(suffixes)

    def wanted(name: str) -> bool:
        return sfx is None or name.lower().endswith(sfx)

    yield from backend.list_objects(prefix_uri, loc, wanted)


def list_dir(prefix_uri: str) -> tuple[list[str], list[str]]:
    """(file names, folder names) directly under a folder/prefix, each sorted; both empty when
    nothing is there. One listing, not recursive (for run folders and results parts)."""
    backend, loc, prefix_uri = _backend(prefix_uri)
    return backend.list_dir(prefix_uri, loc)


def delete(uri: str) -> None:
    """Delete one file/object. Idempotent: deleting something absent is not an error."""
    backend, loc, uri = _backend(uri)
    backend.delete(uri, loc)


# --------------------------------------------------------------------------------------------
# Conditional writes (for leases and other single-writer objects)
# --------------------------------------------------------------------------------------------
#
# Fingerprints are the same as stat()'s. Locally every conditional operation runs under a lock
# beside the object; on S3 they are conditional requests (If-None-Match / If-Match). A retried
# request (after a timeout, say) may find its own first attempt already applied and answer
# PreconditionFailedError; callers that must know put something identifying in the body and
# re-read (stylebatch.io.lease does).


def read_with_fingerprint(uri: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
    """The bytes of one object and the fingerprint of exactly those bytes (what
    :func:`replace_if_match` and :func:`delete_if_match` expect), from one read."""
    backend, loc, uri = _backend(uri)
    _check_max_bytes(max_bytes)
    return backend.read_with_fingerprint(uri, loc, max_bytes)


def create_exclusive(uri: str, data: bytes, *, content_type: str | None = None) -> str:
    """Write ``data`` only if nothing exists at ``uri``; return the new object's fingerprint.

    Raises AlreadyExistsError (a StorageError) when the object exists, also when it was created
    a moment ago by a concurrent caller: of any number of simultaneous creators exactly one
    succeeds. Local: temp file + os.link (fails if the name exists), parent folders created.
    S3: PutObject with If-None-Match: * (a 412 or 409 answer means someone else's object is there
    or is being written).
    """
    backend, loc, uri = _backend(uri)
    return backend.create_exclusive(uri, loc, _payload(data), content_type)


def replace_if_match(uri: str, data: bytes, fingerprint: str, *, content_type: str | None = None) -> str:
    """Overwrite the object with ``data`` only if its current fingerprint is ``fingerprint``
    (compare-and-swap); return the new fingerprint.

    Raises PreconditionFailedError when the object changed or no longer exists. Local: compare
    and atomic replace under the sidecar lock. S3: PutObject with If-Match: "<etag>".
    """
    backend, loc, uri = _backend(uri)
    return backend.replace_if_match(uri, loc, _payload(data), fingerprint, content_type)


def delete_if_match(uri: str, fingerprint: str) -> None:
    """Delete the object only if its current fingerprint is ``fingerprint``; an absent object is
    not an error. Raises PreconditionFailedError when it changed. S3: DeleteObject with
    If-Match: "<etag>"; a server that answers 501 to it gets a compare (stat) then a plain delete.
    """
    backend, loc, uri = _backend(uri)
    backend.delete_if_match(uri, loc, fingerprint)


# --------------------------------------------------------------------------------------------
# pyarrow / Parquet
# --------------------------------------------------------------------------------------------


def pyarrow_filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and in-filesystem path for ``uri``, for libraries that need one (Ray
    Data, pyarrow). Local -> (LocalFileSystem, absolute path); S3 -> (S3FileSystem configured from
    the same environment as boto3, "bucket/key"). stylebatch's own reads use the functions here."""
    backend, loc, uri = _backend(uri)
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
    backend, loc, uri = _backend(uri)
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
