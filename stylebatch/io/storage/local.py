"""Local files: bare paths and ``file://`` URIs.

Writes are atomic (hidden temp file in the same folder, then ``os.replace``); fingerprints are the
sha256 of the bytes (cached per path, size, mtime, ctime and inode). Conditional operations run
under an flock on a hidden sidecar file ``.<name>.lock`` next to the object, and creation is
exclusive through ``os.link`` (which fails when the name exists), so compare-and-swap is atomic
between processes of this module.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import re
import urllib.parse
import uuid
from typing import Callable, Iterator

import pyarrow.fs as pafs

from stylebatch.io.redact import redact
from stylebatch.io.storage.base import (
    SCHEME_RE,
    AccessDeniedError,
    AlreadyExistsError,
    Backend,
    IsAFolderError,
    NotFoundError,
    ObjectInfo,
    ParsedURI,
    PreconditionFailedError,
    StorageError,
    sort_key,
    too_large,
)

log = logging.getLogger("stylebatch.io.storage")

_TMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
_LOCK_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
_LINK_UNSUPPORTED = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS)
_warned_no_lock: set[str] = set()


def local_error(uri: str, action: str, exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{action} {uri}: not found ({reason})", uri=uri)
    if isinstance(exc, PermissionError):
        return AccessDeniedError(f"{action} {uri}: access denied ({reason})", uri=uri)
    if isinstance(exc, IsADirectoryError):
        return IsAFolderError(f"{action} {uri}: is a directory", uri=uri)
    return StorageError(f"{action} {uri} failed: {reason}", uri=uri)


def _tmp_name(name: str) -> str:
    # Hidden and recognisable, so listings skip in-flight files (see _TMP_RE).
    return f".{name}.{uuid.uuid4().hex[:12]}.tmp"


def _atomic_write(path: str, data: bytes | memoryview) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, _tmp_name(os.path.basename(path)))
    # os.open with 0o666 honours the umask (mkstemp would force 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # No fsync: os.replace already guarantees a killed process leaves either the old or the
        # new file; fsync per image would cost far more than it protects (power loss only).
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: str, st: os.stat_result) -> str:
    # mtime alone is too coarse (kernel timestamps tick every few ms); inode + ctime catch an
    # atomic replace or rewrite within the same tick.
    return _sha256_cached(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@functools.lru_cache(maxsize=4096)
def _sha256_cached(path: str, size: int, mtime_ns: int, ctime_ns: int, ino: int) -> str:
    # Everything but path is only a cache key.
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_fingerprint(uri: str, path: str) -> str:
    """The sha256 of a listed file, computed when first asked for (see ObjectInfo)."""
    try:
        return _sha256_file(path, os.stat(path))
    except OSError as exc:
        raise local_error(uri, "fingerprint", exc) from None


class _LocalLock:
    """Exclusive flock on ``.<name>.lock`` beside ``path`` (created on first use, never removed:
    removing a lock file races with the next locker)."""

    def __init__(self, path: str):
        parent = os.path.dirname(os.path.abspath(path))
        self.lock_path = os.path.join(parent, f".{os.path.basename(path)}.lock")
        self.parent = parent
        self.fd: int | None = None

    def __enter__(self) -> "_LocalLock":
        import fcntl

        os.makedirs(self.parent, exist_ok=True)
        self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _LOCK_UNSUPPORTED:
                os.close(self.fd)
                self.fd = None
                raise
            # Some network/FUSE filesystems refuse flock. Creation stays exclusive (os.link);
            # compare-and-swap degrades to compare-then-swap.
            if self.parent not in _warned_no_lock:
                _warned_no_lock.add(self.parent)
                log.warning("%s", redact(f"{self.parent}: file locking not supported ({exc.strerror}); "
                                         "conditional replaces there are not atomic between processes"))
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def _current_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return _sha256_bytes(fh.read())
    except FileNotFoundError:
        return None


class LocalBackend(Backend):
    plain_form = r"^file:(///|//localhost/|/[^/])"

    @classmethod
    def parse(cls, uri: str, scheme: str, rest: str) -> ParsedURI:
        if rest.startswith("//"):
            host, slash, path = rest[2:].partition("/")
            if host not in ("", "localhost"):
                raise StorageError(
                    f"file URI {uri!r} names host {host!r}; only local files are supported", uri=uri
                )
            path = slash + path
        else:
            path = rest
        if not path.startswith("/"):
            raise StorageError(f"malformed file URI {uri!r}: path must be absolute", uri=uri)
        return ParsedURI("file", None, urllib.parse.unquote(path))

    def read_bytes(self, uri: str, loc: ParsedURI, max_bytes: int | None) -> bytes:
        try:
            with open(loc.key_or_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise too_large(uri, size, max_bytes)
                # Read one byte past the limit: the file may grow between fstat and read.
                data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise local_error(uri, "read", exc) from None
        if max_bytes is not None and len(data) > max_bytes:
            raise too_large(uri, len(data), max_bytes)
        return data

    def read_tail(self, uri: str, loc: ParsedURI, nbytes: int) -> bytes:
        try:
            with open(loc.key_or_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - nbytes))
                return fh.read()
        except OSError as exc:
            raise local_error(uri, "read", exc) from None

    def write_bytes(self, uri: str, loc: ParsedURI, data: bytes, content_type: str | None) -> None:
        try:
            _atomic_write(loc.key_or_path, data)
        except OSError as exc:
            raise local_error(uri, "write", exc) from None

    def stat(self, uri: str, loc: ParsedURI) -> ObjectInfo:
        path = loc.key_or_path
        try:
            st = os.stat(path)
            if not os.path.isfile(path):
                raise StorageError(f"stat {uri}: not a regular file", uri=uri)
            digest = _sha256_file(os.path.abspath(path), st)
        except OSError as exc:
            raise local_error(uri, "stat", exc) from None
        return ObjectInfo(uri, st.st_size, digest, st.st_mtime)

    def exists(self, uri: str, loc: ParsedURI) -> bool:
        return os.path.isfile(loc.key_or_path)

    def list_objects(self, uri: str, loc: ParsedURI, wanted: Callable[[str], bool]) -> Iterator[ObjectInfo]:
        root = loc.key_or_path
        if not os.path.exists(root):
            raise NotFoundError(f"list {uri}: not found", uri=uri)
        if not os.path.isdir(root):
            raise StorageError(f"list {uri}: not a directory", uri=uri)
        rels: list[str] = []

        def _onerror(exc: OSError) -> None:
            raise local_error(uri, "list", exc)

        for dirpath, _dirnames, filenames in os.walk(root, onerror=_onerror, followlinks=False):
            reldir = os.path.relpath(dirpath, root)
            for name in filenames:
                if _TMP_RE.match(name) or not wanted(name):
                    continue
                full = os.path.join(dirpath, name)
                if not os.path.isfile(full):
                    continue
                rels.append(name if reldir == "." else f"{reldir.replace(os.sep, '/')}/{name}")
        rels.sort(key=sort_key)
        base = uri if uri.endswith("/") else uri + "/"  # the listed URI's own form, bare path or file://
        for rel in rels:
            child = base + rel
            full = os.path.join(root, *rel.split("/"))
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue  # deleted while listing
            except OSError as exc:
                raise local_error(child, "list", exc) from None
            yield ObjectInfo(child, st.st_size, None, st.st_mtime,
                             compute=functools.partial(file_fingerprint, child, os.path.abspath(full)))

    def list_dir(self, uri: str, loc: ParsedURI) -> tuple[list[str], list[str]]:
        files: list[str] = []
        folders: list[str] = []
        try:
            with os.scandir(loc.key_or_path) as entries:
                for entry in entries:
                    if entry.is_dir():
                        folders.append(entry.name)
                    elif entry.is_file() and not _TMP_RE.match(entry.name):
                        files.append(entry.name)
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise local_error(uri, "list", exc) from None
        return sorted(files, key=sort_key), sorted(folders, key=sort_key)

    def delete(self, uri: str, loc: ParsedURI) -> None:
        try:
            os.remove(loc.key_or_path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise local_error(uri, "delete", exc) from None

    def read_with_fingerprint(self, uri: str, loc: ParsedURI, max_bytes: int | None) -> tuple[bytes, str]:
        data = self.read_bytes(uri, loc, max_bytes)
        return data, _sha256_bytes(data)

    def create_exclusive(self, uri: str, loc: ParsedURI, data: bytes, content_type: str | None) -> str:
        path = loc.key_or_path
        try:
            with _LocalLock(path):
                parent = os.path.dirname(os.path.abspath(path))
                tmp = os.path.join(parent, _tmp_name(os.path.basename(path)))
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(data)
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise AlreadyExistsError(f"create {uri}: already exists", uri=uri) from None
                    except OSError as exc:
                        if exc.errno not in _LINK_UNSUPPORTED:
                            raise
                        # No hard links here: exclusive through the lock instead.
                        if os.path.lexists(path):
                            raise AlreadyExistsError(f"create {uri}: already exists", uri=uri) from None
                        os.replace(tmp, path)
                finally:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
        except OSError as exc:
            raise local_error(uri, "create", exc) from None
        return _sha256_bytes(data)

    def replace_if_match(self, uri: str, loc: ParsedURI, data: bytes, fingerprint: str,
                         content_type: str | None) -> str:
        path = loc.key_or_path
        try:
            with _LocalLock(path):
                current = _current_sha256(path)
                if current is None:
                    raise PreconditionFailedError(f"replace {uri}: no longer exists", uri=uri)
                if current != fingerprint:
                    raise PreconditionFailedError(f"replace {uri}: changed since it was read", uri=uri)
                _atomic_write(path, data)
        except OSError as exc:
            raise local_error(uri, "replace", exc) from None
        return _sha256_bytes(data)

    def delete_if_match(self, uri: str, loc: ParsedURI, fingerprint: str) -> None:
        path = loc.key_or_path
        if not os.path.lexists(path):
            return
        try:
            with _LocalLock(path):
                current = _current_sha256(path)
                if current is None:
                    return
                if current != fingerprint:
                    raise PreconditionFailedError(f"delete {uri}: changed since it was read", uri=uri)
                os.remove(path)
        except OSError as exc:
            raise local_error(uri, "delete", exc) from None

    def canonical(self, loc: ParsedURI) -> ParsedURI:
        return loc._replace(key_or_path=os.path.abspath(loc.key_or_path))

    def absolute(self, uri: str, loc: ParsedURI) -> str:
        # file:// URIs are absolute already; a bare path is made so.
        return uri if SCHEME_RE.match(uri) else os.path.abspath(uri)

    def pyarrow_filesystem(self, uri: str, loc: ParsedURI) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), os.path.abspath(loc.key_or_path)
