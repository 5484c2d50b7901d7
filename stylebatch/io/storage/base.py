"""What every storage backend shares: the errors, ``ParsedURI``, ``ObjectInfo`` and the ``Backend``
interface that ``stylebatch.io.storage`` dispatches to (one subclass per URI scheme)."""

from __future__ import annotations

import abc
import mimetypes
import re
from typing import Any, Callable, Iterator, NamedTuple

from stylebatch.io.redact import redact

# ``scheme:`` at the start of a URI (what parse_uri looks up in the backend registry).
SCHEME_PATTERN = r"^([A-Za-z][A-Za-z0-9+.\-]*):"
SCHEME_RE = re.compile(SCHEME_PATTERN)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class StorageError(Exception):
    """An I/O failure. The message names the URI and the problem, with credentials removed."""

    def __init__(self, message: str, uri: str | None = None):
        # Redact here too so that nobody raising a StorageError can leak a secret by accident.
        message = redact(str(message))
        super().__init__(message)
        self.uri = redact(uri) if uri is not None else None


class NotFoundError(StorageError):
    """The object, file or bucket does not exist."""


class AccessDeniedError(StorageError):
    """Credentials were rejected or lack permission (never retried)."""


class UnsupportedSchemeError(StorageError):
    """The URI scheme is not one of the registered backends' (``storage.BACKENDS``)."""


class UnsafePathError(StorageError):
    """An output path part would escape its base (traversal, absolute path, odd characters)."""


class ObjectTooLargeError(StorageError):
    """The object is larger than the caller's max_bytes."""


class IsAFolderError(StorageError):
    """The URI names a folder, not a file (local paths only: S3 has no folders)."""


class PreconditionFailedError(StorageError):
    """A conditional write or delete did not apply: the object is not (or no longer) the version
    the caller named. After a retried request this can also mean the caller's own first attempt
    went through, so callers that need to know re-read the object (see ``create_exclusive``)."""


class AlreadyExistsError(PreconditionFailedError):
    """``create_exclusive`` found the object already there."""


def too_large(uri: str, size: int, max_bytes: int) -> ObjectTooLargeError:
    return ObjectTooLargeError(f"{uri} is {size} bytes, over the {max_bytes}-byte limit", uri=uri)


def content_type_for(key: str, content_type: str | None) -> str:
    return content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"


def sort_key(key: str) -> bytes:
    # S3 orders keys by UTF-8 bytes; every backend lists in that order.
    return key.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------
# URIs and object information
# --------------------------------------------------------------------------------------------


class ParsedURI(NamedTuple):
    """scheme is a ``storage.BACKENDS`` key ("file", "s3"); bucket is None for local files;
    key_or_path is the object key (may be "" for a whole bucket) or the local filesystem path."""

    scheme: str
    bucket: str | None
    key_or_path: str


class ObjectInfo:
    """One file/object: ``uri``, ``size`` in bytes, ``fingerprint`` identifying the content
    (S3: ETag without quotes; local: sha256 hex of the bytes) and ``mtime`` (epoch seconds).

    A backend whose fingerprint costs a read of every byte (local files) passes ``compute``, a
    picklable zero-argument callable, instead: it runs on first access of ``fingerprint``, so
    listing a large photo folder does not read every byte of it, and the laziness survives
    pickling (Ray ships these to workers).
    """

    __slots__ = ("uri", "size", "mtime", "_fingerprint", "_compute")

    def __init__(self, uri: str, size: int, fingerprint: str | None, mtime: float, *,
                 compute: Callable[[], str] | None = None):
        if fingerprint is None and compute is None:
            raise ValueError("ObjectInfo needs a fingerprint or a function to compute it")
        self.uri = uri
        self.size = size
        self.mtime = mtime
        self._fingerprint = fingerprint
        self._compute = compute

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self._compute()
        return self._fingerprint

    def _astuple(self) -> tuple:
        return (self.uri, self.size, self.fingerprint, self.mtime)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectInfo):
            return NotImplemented
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash((self.uri, self.size, self.mtime))

    def __repr__(self) -> str:
        fp = self._fingerprint if self._fingerprint is not None else "<not yet computed>"
        return f"ObjectInfo(uri={self.uri!r}, size={self.size}, fingerprint={fp!r}, mtime={self.mtime})"

    def __reduce__(self):
        return (_rebuild_object_info, (self.uri, self.size, self._fingerprint, self.mtime, self._compute))


def _rebuild_object_info(uri, size, fingerprint, mtime, compute):
    return ObjectInfo(uri, size, fingerprint, mtime, compute=compute)


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


class Backend(abc.ABC):
    """One storage scheme. ``stylebatch.io.storage`` parses a URI, picks the backend registered for its
    scheme in ``storage.BACKENDS`` and calls one of these methods with the URI as given (for error
    messages and returned URIs) and its ``ParsedURI`` ``loc`` (what to act on). Arguments are
    already checked (``data`` is bytes, ``max_bytes`` is None or >= 0); ``wanted`` filters listed
    names. Failures raise StorageError subclasses: NotFoundError, AccessDeniedError,
    ObjectTooLargeError, PreconditionFailedError / AlreadyExistsError for the conditional calls.

    A backend is stateless apart from caches (one instance per process and class); anything that
    retries does so inside these methods.
    """

    #: Optional: an RE2 regular expression (pyarrow.compute) that only URIs ``parse`` accepts match,
    #: so that ``storage.uri_errors`` can pass a million of them without parsing each.
    plain_form: str | None = None

    @classmethod
    @abc.abstractmethod
    def parse(cls, uri: str, scheme: str, rest: str) -> ParsedURI:
        """Split ``uri`` (``scheme`` + ":" + ``rest``); raise StorageError when malformed."""

    @abc.abstractmethod
    def read_bytes(self, uri: str, loc: ParsedURI, max_bytes: int | None) -> bytes:
        """The whole object; over ``max_bytes`` raises ObjectTooLargeError before reading it all."""

    def read_tail(self, uri: str, loc: ParsedURI, nbytes: int) -> bytes:
        """The last ``nbytes`` of the object (all of it when smaller): a file format's footer."""
        return self.read_bytes(uri, loc, None)[-nbytes:]

    @abc.abstractmethod
    def write_bytes(self, uri: str, loc: ParsedURI, data: bytes, content_type: str | None) -> None:
        """Write the whole object atomically: a reader sees the old or the new bytes, never a part."""

    @abc.abstractmethod
    def stat(self, uri: str, loc: ParsedURI) -> ObjectInfo:
        ...

    def exists(self, uri: str, loc: ParsedURI) -> bool:
        """A file/object (not a folder/prefix) is there; failures other than absence raise."""
        try:
            self.stat(uri, loc)
            return True
        except NotFoundError:
            return False

    @abc.abstractmethod
    def list_objects(self, uri: str, loc: ParsedURI, wanted: Callable[[str], bool]) -> Iterator[ObjectInfo]:
        """Every object under the folder/prefix ``loc``, recursively, in ``sort_key`` order of
        their keys; a missing folder/bucket raises NotFoundError."""

    @abc.abstractmethod
    def list_dir(self, uri: str, loc: ParsedURI) -> tuple[list[str], list[str]]:
        """(file names, folder names) directly under the folder/prefix ``loc``, one level;
        both empty when nothing is there."""

    @abc.abstractmethod
    def delete(self, uri: str, loc: ParsedURI) -> None:
        """Delete one object; absent is not an error."""

    @abc.abstractmethod
    def read_with_fingerprint(self, uri: str, loc: ParsedURI, max_bytes: int | None) -> tuple[bytes, str]:
        """The bytes and the fingerprint (as ``stat`` gives it) of exactly those bytes."""

    @abc.abstractmethod
    def create_exclusive(self, uri: str, loc: ParsedURI, data: bytes, content_type: str | None) -> str:
        """Write only if nothing is there (AlreadyExistsError otherwise); the new fingerprint."""

    @abc.abstractmethod
    def replace_if_match(self, uri: str, loc: ParsedURI, data: bytes, fingerprint: str,
                         content_type: str | None) -> str:
        """Overwrite only the version ``fingerprint`` (PreconditionFailedError otherwise)."""

    @abc.abstractmethod
    def delete_if_match(self, uri: str, loc: ParsedURI, fingerprint: str) -> None:
        """Delete only the version ``fingerprint``; absent is not an error."""

    def canonical(self, loc: ParsedURI) -> ParsedURI:
        """``loc`` with its path in one spelling (local: absolute), to compare locations."""
        return loc

    def absolute(self, uri: str, loc: ParsedURI) -> str:
        """``uri`` in a form that means the same from any working directory."""
        return uri

    def pyarrow_filesystem(self, uri: str, loc: ParsedURI) -> tuple[Any, str]:
        """(pyarrow.fs.FileSystem, path in it) for libraries that need one (Ray Data, pyarrow)."""
        raise StorageError(f"{uri}: no pyarrow filesystem for this storage scheme", uri=uri)
