"""Dispatch: a URI's scheme picks its ``Backend`` from ``BACKENDS`` and every object operation
(read, write, stat, list, delete, conditional writes) goes to that backend.

One ``Backend`` subclass per URI scheme (``local.LocalBackend``, ``s3.S3Backend``), registered once
in ``BACKENDS``, so callers never branch on a scheme; adding a scheme (``gs://``, say) is one Backend
subclass and one ``BACKENDS`` entry. What is the same for every scheme (URI parsing, argument
checks) lives here, the rest in the backends.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa

from stylebatch.io.storage.base import (
    SCHEME_PATTERN,
    SCHEME_RE,
    Backend,
    ObjectInfo,
    ParsedURI,
    StorageError,
    UnsupportedSchemeError,
)
from stylebatch.io.storage.local import LocalBackend
from stylebatch.io.storage.s3 import S3Backend

# --------------------------------------------------------------------------------------------
# Schemes and backends
# --------------------------------------------------------------------------------------------

#: The accepted URI schemes, each with the class that serves it; bare paths are DEFAULT_SCHEME's.
BACKENDS: dict[str, type[Backend]] = {"file": LocalBackend, "s3": S3Backend}
DEFAULT_SCHEME = "file"

_INSTANCES: dict[type, Backend] = {}


def supported_locations() -> str:
    """The accepted forms, for messages: "local paths, file://, s3://"."""
    return ", ".join(["local paths"] + [f"{s}://" for s in BACKENDS])


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


def backend_for(uri: str | os.PathLike) -> tuple[Backend, ParsedURI, str]:
    """The backend serving ``uri``, its parsed form and ``uri`` as a string."""
    loc = parse_uri(uri)
    cls = BACKENDS[loc.scheme]
    backend = _INSTANCES.get(cls)
    if backend is None:
        backend = _INSTANCES.setdefault(cls, cls())
    return backend, loc, os.fspath(uri)


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
    backend, loc, uri = backend_for(uri)
    _check_max_bytes(max_bytes)
    return backend.read_bytes(uri, loc, max_bytes)


def write_bytes(uri: str, data: bytes, *, content_type: str | None = None) -> None:
    """Write a whole object. Local writes create parent folders and are atomic (temp file in the
    same folder + os.replace); S3 puts are atomic by nature. ``content_type`` defaults to a guess
    from the extension (S3 only)."""
    backend, loc, uri = backend_for(uri)
    backend.write_bytes(uri, loc, _payload(data), content_type)


def stat(uri: str) -> ObjectInfo:
    """Size, content fingerprint and mtime of one object (NotFoundError if absent)."""
    backend, loc, uri = backend_for(uri)
    return backend.stat(uri, loc)


def exists(uri: str) -> bool:
    """True if a file/object exists at ``uri`` (directories and bare S3 prefixes do not count).
    Access denied and other failures raise rather than answer False."""
    backend, loc, uri = backend_for(uri)
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
    backend, loc, prefix_uri = backend_for(prefix_uri)
    sfx = _normalize_suffixes(suffixes)

    def wanted(name: str) -> bool:
        return sfx is None or name.lower().endswith(sfx)

    yield from backend.list_objects(prefix_uri, loc, wanted)


def list_dir(prefix_uri: str) -> tuple[list[str], list[str]]:
    """(file names, folder names) directly under a folder/prefix, each sorted; both empty when
    nothing is there. One listing, not recursive (for run folders and results parts)."""
    backend, loc, prefix_uri = backend_for(prefix_uri)
    return backend.list_dir(prefix_uri, loc)


def delete(uri: str) -> None:
    """Delete one file/object. Idempotent: deleting something absent is not an error."""
    backend, loc, uri = backend_for(uri)
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
    backend, loc, uri = backend_for(uri)
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
    backend, loc, uri = backend_for(uri)
    return backend.create_exclusive(uri, loc, _payload(data), content_type)


def replace_if_match(uri: str, data: bytes, fingerprint: str, *, content_type: str | None = None) -> str:
    """Overwrite the object with ``data`` only if its current fingerprint is ``fingerprint``
    (compare-and-swap); return the new fingerprint.

    Raises PreconditionFailedError when the object changed or no longer exists. Local: compare
    and atomic replace under the sidecar lock. S3: PutObject with If-Match: "<etag>".
    """
    backend, loc, uri = backend_for(uri)
    return backend.replace_if_match(uri, loc, _payload(data), fingerprint, content_type)


def delete_if_match(uri: str, fingerprint: str) -> None:
    """Delete the object only if its current fingerprint is ``fingerprint``; an absent object is
    not an error. Raises PreconditionFailedError when it changed. S3: DeleteObject with
    If-Match: "<etag>"; a server that answers 501 to it gets a compare (stat) then a plain delete.
    """
    backend, loc, uri = backend_for(uri)
    backend.delete_if_match(uri, loc, fingerprint)

