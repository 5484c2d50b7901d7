"""Every byte stylebatch reads or writes goes through here: local paths, file:// and s3://.

Design notes:
* S3 uses boto3 with the standard AWS configuration (env vars, profiles, AWS_ENDPOINT_URL).
  Clients are created lazily, one per process and configuration, never at import time,
  so the module's functions can be shipped to Ray workers by reference.
* Transient S3 failures are retried here (not by botocore) so that the whole retry window is
  one wall-clock budget (STYLEBATCH_IO_RETRY_SECONDS, default 30 s) that outlives a server
  restart, while 403/404 fail immediately.
* Every error message is passed through :func:`redact`; errors raised from S3 failures are
  raised ``from None`` so a traceback never re-exposes the unredacted original.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import logging
import mimetypes
import os
import random
import re
import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable, Iterable, Iterator, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = [
    "SUPPORTED_SCHEMES",
    "StorageError",
    "NotFoundError",
    "AccessDeniedError",
    "UnsupportedSchemeError",
    "UnsafePathError",
    "ObjectTooLargeError",
    "PreconditionFailedError",
    "AlreadyExistsError",
    "ParsedURI",
    "ObjectInfo",
    "parse_uri",
    "read_bytes",
    "write_bytes",
    "exists",
    "stat",
    "list_objects",
    "join",
    "output_uri",
    "delete",
    "read_with_fingerprint",
    "create_exclusive",
    "replace_if_match",
    "delete_if_match",
    "redact",
    "get_s3_client",
    "pyarrow_filesystem",
    "read_parquet_table",
    "write_parquet_table",
]

log = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("file", "s3")

RETRY_SECONDS_ENV = "STYLEBATCH_IO_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
DEFAULT_REGION = "us-east-1"

# Short connect timeout: a dead endpoint should fail one attempt fast and let the retry loop
# decide; the read timeout is per socket read, not per object.
_CONNECT_TIMEOUT_S = 3.0
_READ_TIMEOUT_S = 30.0
_BACKOFF_BASE_S = 0.25
_BACKOFF_CAP_S = 4.0


# --------------------------------------------------------------------------------------------
# Errors and redaction
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
    """The URI scheme is not one of SUPPORTED_SCHEMES."""


class UnsafePathError(StorageError):
    """An output path part would escape its base (traversal, absolute path, odd characters)."""


class ObjectTooLargeError(StorageError):
    """The object is larger than the caller's max_bytes."""


class PreconditionFailedError(StorageError):
    """A conditional write or delete did not apply: the object is not (or no longer) the version
    the caller named. After a retried request this can also mean the caller's own first attempt
    went through, so callers that need to know re-read the object (see :func:`create_exclusive`)."""


class AlreadyExistsError(PreconditionFailedError):
    """:func:`create_exclusive` found the object already there."""


# AWS key-id prefixes (long-term AKIA, temporary ASIA, and the other documented unique-id
# prefixes) followed by 16 upper-case base32 characters.
# The key may follow a percent-escape ("%3DAKIA..." in a URL-encoded query), where \b sees no boundary.
_AWS_KEY_ID_RE = re.compile(
    r"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{2}))"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"
)
# "AKIA...:secret@host" without a scheme (e.g. echoed back as an invalid bucket name): once the key id
# is "***", the text up to "@" is the secret.
_REDACTED_USERINFO_RE = re.compile(r"\*\*\*:[^/\s@?#'\"]*@")
# scheme://user:password@host -> scheme://***@host
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@:?#]+:[^/\s@?#]*@")
# Query-string / header style credentials: name=value.
_SECRET_PARAM_NAMES = (
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "X-Goog-Credential",
    "AWSAccessKeyId",
    "Signature",
    "Credential",
    "sig",
    "signature",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "security_token",
    "session_token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "key",
)
# Also in URL-encoded form (botocore echoes request URLs with ?, & and = as %3F, %26, %3D).
_SECRET_PARAM_RE = re.compile(
    r"(?i)((?:^|[?&;,\s]|%3F|%26|%3B)(?:" + "|".join(re.escape(n) for n in _SECRET_PARAM_NAMES)
    + r")(?:=|%3D))(?:(?!%26|%3B)[^&;,\s#'\"<>])+"
)
_SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# Real secrets are 40+ characters; dummy ones like "test" (common in local S3 setups) would
# otherwise turn every "test" in a path into "***".
_MIN_ENV_SECRET_LEN = 8


def redact(text: str) -> str:
    """Return ``text`` with credentials replaced by ``***``.

    Removes AWS access key ids (AKIA.../ASIA...), the values of AWS_SECRET_ACCESS_KEY /
    AWS_SESSION_TOKEN when set (8+ characters), ``user:password@`` in URIs and
    credential-bearing parameters (X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token,
    token=, sig=, Signature=, password=, ...).
    """
    if not isinstance(text, str):
        text = str(text)
    for var in _SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= _MIN_ENV_SECRET_LEN and value in text:
            text = text.replace(value, "***")
    text = _AWS_KEY_ID_RE.sub("***", text)
    text = _REDACTED_USERINFO_RE.sub("***@", text)
    text = _USERINFO_RE.sub(r"\1***@", text)
    text = _SECRET_PARAM_RE.sub(r"\1***", text)
    return text


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------


class ParsedURI(NamedTuple):
    """scheme is "file" or "s3"; bucket is None for local files; key_or_path is the S3 key
    (may be "" for a whole bucket) or the local filesystem path."""

    scheme: str
    bucket: str | None
    key_or_path: str


class ObjectInfo:
    """One file/object: ``uri``, ``size`` in bytes, ``fingerprint`` identifying the content
    (S3: ETag without quotes; local: sha256 hex of the bytes) and ``mtime`` (epoch seconds).

    For local files listed by :func:`list_objects` the sha256 is computed on first access of
    ``fingerprint`` (and cached per process on path, size, mtime, ctime and inode), so listing a large photo
    folder does not read every byte of it.
    """

    __slots__ = ("uri", "size", "mtime", "_fingerprint", "_local_path")

    def __init__(
        self, uri: str, size: int, fingerprint: str | None, mtime: float, *, local_path: str | None = None
    ):
        if fingerprint is None and local_path is None:
            raise ValueError("ObjectInfo needs a fingerprint or a local_path to compute it from")
        self.uri = uri
        self.size = size
        self.mtime = mtime
        self._fingerprint = fingerprint
        self._local_path = local_path

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            try:
                self._fingerprint = _sha256_file(self._local_path, os.stat(self._local_path))
            except OSError as exc:
                raise _local_error(self.uri, "fingerprint", exc) from None
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
        # Keep laziness across pickling (Ray ships these to workers).
        return (_rebuild_object_info, (self.uri, self.size, self._fingerprint, self.mtime, self._local_path))


def _rebuild_object_info(uri, size, fingerprint, mtime, local_path):
    return ObjectInfo(uri, size, fingerprint, mtime, local_path=local_path)


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def parse_uri(uri: str | os.PathLike) -> ParsedURI:
    """Split a URI into (scheme, bucket, key_or_path).

    Accepts bare local paths, ``file:///abs/path`` (or ``file:/abs/path``) and
    ``s3://bucket/key``. Anything that starts with another ``scheme:`` (http, ftp, gs, data, ...)
    raises UnsupportedSchemeError; a local file whose name contains a colon must be written
    as ``./name:with:colon``.
    """
    if type(uri) is not str and isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise StorageError(f"URI must be a string, got {type(uri).__name__}")
    if not uri:
        raise StorageError("empty URI")
    m = _SCHEME_RE.match(uri)
    if not m:
        return ParsedURI("file", None, uri)
    scheme = m.group(1).lower()
    rest = uri[m.end():]
    if scheme == "s3":
        if not rest.startswith("//"):
            raise StorageError(f"malformed S3 URI {uri!r}: expected s3://bucket/key", uri=uri)
        bucket, _, key = rest[2:].partition("/")
        if not bucket:
            raise StorageError(f"malformed S3 URI {uri!r}: missing bucket name", uri=uri)
        if "@" in bucket:
            # Never hand "user:password@bucket" to boto3: its error would echo the password.
            raise StorageError(f"malformed S3 URI {uri!r}: credentials (user:password@) do not belong in an S3 "
                               "URI; use AWS credentials (environment variables or a profile)", uri=uri)
        return ParsedURI("s3", bucket, key)
    if scheme == "file":
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
    raise UnsupportedSchemeError(
        f"unsupported URI scheme {scheme!r} in {uri!r}; supported: "
        + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        + " or a local path",
        uri=uri,
    )


def _s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


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


# --------------------------------------------------------------------------------------------
# S3 client, error classification and retries
# --------------------------------------------------------------------------------------------

_CLIENT_LOCK = threading.Lock()
_CLIENTS: dict[tuple, Any] = {}
_CLIENT_ENV_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def _client_key() -> tuple:
    # Keyed on pid (a forked child must not share the parent's connection pool) and on the AWS
    # environment, so a changed endpoint/credential takes effect without a restart.
    return (os.getpid(),) + tuple(os.environ.get(v) for v in _CLIENT_ENV_VARS)


def get_s3_client():
    """The process-wide boto3 S3 client for the current AWS configuration (thread-safe, lazy)."""
    key = _client_key()
    client = _CLIENTS.get(key)
    if client is not None:
        return client
    with _CLIENT_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            region = session.region_name or DEFAULT_REGION
            config = Config(
                connect_timeout=_CONNECT_TIMEOUT_S,
                read_timeout=_READ_TIMEOUT_S,
                # One botocore attempt: our own loop owns the retry budget.
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=32,
            )
            client = session.client("s3", region_name=region, config=config)
            if len(_CLIENTS) > 8:  # stale configurations from env changes; drop them
                _CLIENTS.clear()
            _CLIENTS[key] = client
    return client


def _retry_seconds() -> float:
    raw = os.environ.get(RETRY_SECONDS_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_RETRY_SECONDS
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise StorageError(f"{RETRY_SECONDS_ENV} must be a number of seconds, got {raw!r}") from None


_NOT_FOUND_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload"}
_DENIED_CODES = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "InvalidObjectState",
}
_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "PriorRequestNotComplete",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "EC2ThrottledException",
}


def _classify(exc: BaseException) -> str:
    """'not_found', 'denied', 'transient' or 'fatal'."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in _NOT_FOUND_CODES or status == 404:
            return "not_found"
        if code in _DENIED_CODES or status in (401, 403):
            return "denied"
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return "transient"
        return "fatal"
    if isinstance(
        exc,
        (
            bex.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
            bex.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ...
            bex.ResponseStreamingError,  # body cut off mid-read
            bex.IncompleteReadError,
        ),
    ):
        return "transient"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    return "fatal"


def _describe(exc: BaseException) -> str:
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {}) or {}
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = err.get("Code", "?")
        msg = err.get("Message") or ""
        return f"{code} (HTTP {status})" + (f": {msg}" if msg and msg != code else "")
    if isinstance(exc, bex.NoCredentialsError):
        return "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
    return f"{type(exc).__name__}: {exc}"


T = TypeVar("T")


def _s3_call(uri: str, action: str, fn: Callable[[Any], T]) -> T:
    """Run ``fn(client)`` with the retry policy; map failures to StorageError subclasses."""
    budget = _retry_seconds()
    start = time.monotonic()
    deadline = start + budget
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(get_s3_client())
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as StorageError
            kind = _classify(exc)
            what = _describe(exc)
            if kind == "not_found":
                raise NotFoundError(f"{action} {uri}: not found ({what})", uri=uri) from None
            if kind == "denied":
                raise AccessDeniedError(f"{action} {uri}: access denied ({what})", uri=uri) from None
            if kind != "transient":
                raise StorageError(f"{action} {uri} failed: {what}", uri=uri) from None
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                raise StorageError(
                    f"{action} {uri} failed after {attempt} attempts over {now - start:.1f}s "
                    f"(retry window {budget:g}s, set {RETRY_SECONDS_ENV} to change): {what}",
                    uri=uri,
                ) from None
            # Exponential backoff with jitter so many workers do not hammer a recovering server
            # in lockstep.
            delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * (2 ** (attempt - 1)))
            delay = random.uniform(delay / 2, delay)
            log.warning(
                "%s",
                redact(f"{action} {uri}: transient failure (attempt {attempt}), "
                       f"retrying in {delay:.2f}s: {what}"),
            )
            time.sleep(min(delay, remaining))


# --------------------------------------------------------------------------------------------
# Local helpers
# --------------------------------------------------------------------------------------------


def _local_error(uri: str, action: str, exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{action} {uri}: not found ({reason})", uri=uri)
    if isinstance(exc, PermissionError):
        return AccessDeniedError(f"{action} {uri}: access denied ({reason})", uri=uri)
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"{action} {uri}: is a directory", uri=uri)
    return StorageError(f"{action} {uri} failed: {reason}", uri=uri)


def _too_large(uri: str, size: int, max_bytes: int) -> ObjectTooLargeError:
    return ObjectTooLargeError(f"{uri} is {size} bytes, over the {max_bytes}-byte limit", uri=uri)


_TMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def _tmp_name(name: str) -> str:
    # Hidden and recognisable, so listings skip in-flight files (see _TMP_RE).
    return f".{name}.{uuid.uuid4().hex[:12]}.tmp"


def _atomic_write_local(path: str, data: bytes | memoryview) -> None:
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


# --------------------------------------------------------------------------------------------
# Public I/O
# --------------------------------------------------------------------------------------------


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """Read a whole object. With ``max_bytes``, larger objects raise ObjectTooLargeError
    (a StorageError) before their content is downloaded/read."""
    p = parse_uri(uri)
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    if p.scheme == "file":
        try:
            with open(p.key_or_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise _too_large(uri, size, max_bytes)
                # Read one byte past the limit: the file may grow between fstat and read.
                data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise _local_error(uri, "read", exc) from None
        if max_bytes is not None and len(data) > max_bytes:
            raise _too_large(uri, len(data), max_bytes)
        return data

    def _get(client):
        resp = client.get_object(Bucket=p.bucket, Key=p.key_or_path)
        body = resp["Body"]
        try:
            size = resp.get("ContentLength")
            if max_bytes is not None and size is not None and size > max_bytes:
                raise _too_large(uri, size, max_bytes)
            data = body.read() if max_bytes is None else body.read(max_bytes + 1)
        finally:
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise _too_large(uri, len(data), max_bytes)
        return data

    return _s3_call(uri, "read", _get)


def write_bytes(uri: str, data: bytes, *, content_type: str | None = None) -> None:
    """Write a whole object. Local writes create parent folders and are atomic (temp file in the
    same folder + os.replace); S3 puts are atomic by nature. ``content_type`` defaults to a guess
    from the extension (S3 only)."""
    p = parse_uri(uri)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if p.scheme == "file":
        try:
            _atomic_write_local(p.key_or_path, data)
        except OSError as exc:
            raise _local_error(uri, "write", exc) from None
        return
    if not p.key_or_path or p.key_or_path.endswith("/"):
        raise StorageError(f"write {uri}: S3 URI must name an object key, not a bucket/prefix", uri=uri)
    ctype = content_type or mimetypes.guess_type(p.key_or_path)[0] or "application/octet-stream"
    payload = bytes(data)

    def _put(client):
        client.put_object(Bucket=p.bucket, Key=p.key_or_path, Body=payload, ContentType=ctype)

    _s3_call(uri, "write", _put)


def stat(uri: str) -> ObjectInfo:
    """Size, content fingerprint and mtime of one object (NotFoundError if absent)."""
    p = parse_uri(uri)
    if p.scheme == "file":
        path = p.key_or_path
        try:
            st = os.stat(path)
            if not os.path.isfile(path):
                raise StorageError(f"stat {uri}: not a regular file", uri=uri)
            digest = _sha256_file(os.path.abspath(path), st)
        except OSError as exc:
            raise _local_error(uri, "stat", exc) from None
        return ObjectInfo(uri, st.st_size, digest, st.st_mtime)

    def _head(client):
        return client.head_object(Bucket=p.bucket, Key=p.key_or_path)

    if not p.key_or_path:
        raise StorageError(f"stat {uri}: S3 URI must name an object key", uri=uri)
    resp = _s3_call(uri, "stat", _head)
    modified = resp.get("LastModified")
    return ObjectInfo(
        uri=uri,
        size=int(resp.get("ContentLength", 0)),
        fingerprint=str(resp.get("ETag", "")).strip('"'),
        mtime=modified.timestamp() if modified is not None else 0.0,
    )


def exists(uri: str) -> bool:
    """True if a file/object exists at ``uri`` (directories and bare S3 prefixes do not count).
    Access denied and other failures raise rather than answer False."""
    p = parse_uri(uri)
    if p.scheme == "file":
        return os.path.isfile(p.key_or_path)
    if not p.key_or_path:
        return False
    try:
        stat(uri)
        return True
    except NotFoundError:
        return False


def _normalize_suffixes(suffixes: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if suffixes is None:
        return None
    if isinstance(suffixes, str):
        suffixes = [suffixes]
    return tuple(s.lower() for s in suffixes)


def _sort_key(key: str) -> bytes:
    # S3 orders keys by UTF-8 bytes; sort local listings the same way.
    return key.encode("utf-8", "surrogateescape")


def list_objects(prefix_uri: str, *, suffixes: Iterable[str] | None = None) -> Iterator[ObjectInfo]:
    """All objects under a folder/prefix, recursively, sorted by key.

    The prefix is treated as a folder ("s3://b/photos" lists "photos/..." but not "photos2/...").
    ``suffixes`` filters by name ending, case-insensitively (e.g. [".jpg", ".png"]). Local
    fingerprints are computed on first access (see ObjectInfo). Our own in-flight temp files
    are skipped. A missing local folder or S3 bucket raises NotFoundError; an empty prefix
    yields nothing.
    """
    p = parse_uri(prefix_uri)
    sfx = _normalize_suffixes(suffixes)

    def wanted(name: str) -> bool:
        return sfx is None or name.lower().endswith(sfx)

    if p.scheme == "file":
        root = p.key_or_path
        if not os.path.exists(root):
            raise NotFoundError(f"list {prefix_uri}: not found", uri=prefix_uri)
        if not os.path.isdir(root):
            raise StorageError(f"list {prefix_uri}: not a directory", uri=prefix_uri)
        rels: list[str] = []

        def _onerror(exc: OSError) -> None:
            raise _local_error(prefix_uri, "list", exc)

        for dirpath, _dirnames, filenames in os.walk(root, onerror=_onerror, followlinks=False):
            reldir = os.path.relpath(dirpath, root)
            for name in filenames:
                if _TMP_RE.match(name) or not wanted(name):
                    continue
                full = os.path.join(dirpath, name)
                if not os.path.isfile(full):
                    continue
                rels.append(name if reldir == "." else f"{reldir.replace(os.sep, '/')}/{name}")
        rels.sort(key=_sort_key)
        for rel in rels:
            full = os.path.join(root, *rel.split("/"))
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue  # deleted while listing
            except OSError as exc:
                raise _local_error(join(prefix_uri, rel), "list", exc) from None
            yield ObjectInfo(
                join(prefix_uri, rel), st.st_size, None, st.st_mtime, local_path=os.path.abspath(full)
            )
        return

    bucket = p.bucket
    prefix = p.key_or_path
    if prefix and not prefix.endswith("/"):
        prefix += "/"

    def _list(client) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []) or []:
                key = obj["Key"]
                if key.endswith("/") or not wanted(key):
                    continue
                modified = obj.get("LastModified")
                out.append(
                    ObjectInfo(
                        uri=_s3_uri(bucket, key),
                        size=int(obj.get("Size", 0)),
                        fingerprint=str(obj.get("ETag", "")).strip('"'),
                        mtime=modified.timestamp() if modified is not None else 0.0,
                    )
                )
        return out

    # Whole listing inside one retried call: a page failing mid-way restarts cleanly.
    items = _s3_call(prefix_uri, "list", _list)
    items.sort(key=lambda o: _sort_key(o.uri))
    yield from items


def delete(uri: str) -> None:
    """Delete one file/object. Idempotent: deleting something absent is not an error."""
    p = parse_uri(uri)
    if p.scheme == "file":
        try:
            os.remove(p.key_or_path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _local_error(uri, "delete", exc) from None
        return
    if not p.key_or_path:
        raise StorageError(f"delete {uri}: S3 URI must name an object key", uri=uri)

    def _del(client):
        client.delete_object(Bucket=p.bucket, Key=p.key_or_path)

    try:
        _s3_call(uri, "delete", _del)
    except NotFoundError:
        return


# --------------------------------------------------------------------------------------------
# Conditional writes (for leases and other single-writer objects)
# --------------------------------------------------------------------------------------------
#
# S3: PutObject with If-None-Match: * (create only if absent) and If-Match: <etag> (replace only
# that version), DeleteObject with If-Match: <etag>. AWS S3 honours all three (conditional writes
# since 2024, conditional deletes on general purpose buckets since 2025); SeaweedFS 4.48 honours
# all three too, atomically under concurrent requests (412 PreconditionFailed to the losers),
# but answers 412 rather than AWS's 404 to If-Match on an absent key.
# Local: the object is always complete when visible (written to a temp file, then os.link'ed to
# its name, which fails when the name exists), and every conditional operation runs under an
# flock on a hidden sidecar file ".<name>.lock" next to it, so compare-and-swap is atomic between
# processes of this module. Fingerprints are the same as stat()'s: the ETag on S3, sha256 locally.
#
# A retried request (after a timeout, say) may find its own first attempt already applied and
# answer PreconditionFailedError; callers that must know put something identifying in the body
# and re-read (stylebatch.lease does).

_LOCK_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
_LINK_UNSUPPORTED = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS)
_warned_no_lock: set[str] = set()


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


def _sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _condition_kind(exc: BaseException) -> str | None:
    """'failed' (412), 'conflict' (409 ConditionalRequestConflict: a concurrent conditional
    request won), 'absent' (NoSuchKey), 'unsupported' (501 NotImplemented) or None."""
    from botocore import exceptions as bex

    if not isinstance(exc, bex.ClientError):
        return None
    code = str((exc.response.get("Error", {}) or {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code == "PreconditionFailed" or status == 412:
        return "failed"
    if code == "ConditionalRequestConflict":
        return "conflict"
    if code == "NoSuchKey":
        return "absent"
    if code == "NotImplemented" or status == 501:
        return "unsupported"
    return None


def _s3_key(uri: str, action: str) -> ParsedURI:
    p = parse_uri(uri)
    if not p.key_or_path or p.key_or_path.endswith("/"):
        raise StorageError(f"{action} {uri}: S3 URI must name an object key, not a bucket/prefix", uri=uri)
    return p


def read_with_fingerprint(uri: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
    """The bytes of one object and the fingerprint of exactly those bytes (what
    :func:`replace_if_match` and :func:`delete_if_match` expect), from one read."""
    p = parse_uri(uri)
    if p.scheme == "file":
        data = read_bytes(uri, max_bytes=max_bytes)
        return data, _sha256_bytes(data)
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    _s3_key(uri, "read")

    def _get(client):
        resp = client.get_object(Bucket=p.bucket, Key=p.key_or_path)
        body = resp["Body"]
        try:
            size = resp.get("ContentLength")
            if max_bytes is not None and size is not None and size > max_bytes:
                raise _too_large(uri, size, max_bytes)
            data = body.read() if max_bytes is None else body.read(max_bytes + 1)
        finally:
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise _too_large(uri, len(data), max_bytes)
        return data, str(resp.get("ETag", "")).strip('"')

    return _s3_call(uri, "read", _get)


def create_exclusive(uri: str, data: bytes, *, content_type: str | None = None) -> str:
    """Write ``data`` only if nothing exists at ``uri``; return the new object's fingerprint.

    Raises AlreadyExistsError (a StorageError) when the object exists, also when it was created
    a moment ago by a concurrent caller: of any number of simultaneous creators exactly one
    succeeds. Local: temp file + os.link (fails if the name exists), parent folders created.
    S3: PutObject with If-None-Match: * (a 412 or 409 answer means someone else's object is there
    or is being written).
    """
    p = parse_uri(uri)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    payload = bytes(data)
    if p.scheme == "file":
        path = p.key_or_path
        try:
            with _LocalLock(path):
                parent = os.path.dirname(os.path.abspath(path))
                tmp = os.path.join(parent, _tmp_name(os.path.basename(path)))
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                try:
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(payload)
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
            raise _local_error(uri, "create", exc) from None
        return _sha256_bytes(payload)

    _s3_key(uri, "create")
    ctype = content_type or mimetypes.guess_type(p.key_or_path)[0] or "application/octet-stream"

    def _put(client):
        try:
            resp = client.put_object(Bucket=p.bucket, Key=p.key_or_path, Body=payload, ContentType=ctype,
                                     IfNoneMatch="*")
        except Exception as exc:  # noqa: BLE001 - conditional answers mapped, the rest to _s3_call
            kind = _condition_kind(exc)
            if kind in ("failed", "conflict"):
                raise AlreadyExistsError(f"create {uri}: already exists ({_describe(exc)})", uri=uri) from None
            if kind == "unsupported":
                raise StorageError(f"create {uri}: the S3 server does not support conditional writes "
                                   f"(If-None-Match) ({_describe(exc)})", uri=uri) from None
            raise
        return str(resp.get("ETag", "")).strip('"')

    etag = _s3_call(uri, "create", _put)
    return etag or stat(uri).fingerprint


def replace_if_match(uri: str, data: bytes, fingerprint: str, *, content_type: str | None = None) -> str:
    """Overwrite the object with ``data`` only if its current fingerprint is ``fingerprint``
    (compare-and-swap); return the new fingerprint.

    Raises PreconditionFailedError when the object changed or no longer exists. Local: compare
    and atomic replace under the sidecar lock. S3: PutObject with If-Match: "<etag>".
    """
    p = parse_uri(uri)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    payload = bytes(data)
    if p.scheme == "file":
        path = p.key_or_path
        try:
            with _LocalLock(path):
                try:
                    with open(path, "rb") as fh:
                        current = _sha256_bytes(fh.read())
                except FileNotFoundError:
                    raise PreconditionFailedError(f"replace {uri}: no longer exists", uri=uri) from None
                if current != fingerprint:
                    raise PreconditionFailedError(f"replace {uri}: changed since it was read", uri=uri)
                _atomic_write_local(path, payload)
        except OSError as exc:
            raise _local_error(uri, "replace", exc) from None
        return _sha256_bytes(payload)

    _s3_key(uri, "replace")
    ctype = content_type or mimetypes.guess_type(p.key_or_path)[0] or "application/octet-stream"

    def _put(client):
        try:
            resp = client.put_object(Bucket=p.bucket, Key=p.key_or_path, Body=payload, ContentType=ctype,
                                     IfMatch=f'"{fingerprint}"')
        except Exception as exc:  # noqa: BLE001
            kind = _condition_kind(exc)
            if kind in ("failed", "conflict"):
                raise PreconditionFailedError(f"replace {uri}: changed since it was read ({_describe(exc)})",
                                              uri=uri) from None
            if kind == "absent":
                raise PreconditionFailedError(f"replace {uri}: no longer exists", uri=uri) from None
            if kind == "unsupported":
                raise StorageError(f"replace {uri}: the S3 server does not support conditional writes "
                                   f"(If-Match) ({_describe(exc)})", uri=uri) from None
            raise
        return str(resp.get("ETag", "")).strip('"')

    etag = _s3_call(uri, "replace", _put)
    return etag or stat(uri).fingerprint


def delete_if_match(uri: str, fingerprint: str) -> None:
    """Delete the object only if its current fingerprint is ``fingerprint``; an absent object is
    not an error. Raises PreconditionFailedError when it changed. S3: DeleteObject with
    If-Match: "<etag>"; a server that answers 501 to it gets a compare (stat) then a plain delete.
    """
    p = parse_uri(uri)
    if p.scheme == "file":
        path = p.key_or_path
        if not os.path.lexists(path):
            return
        try:
            with _LocalLock(path):
                try:
                    with open(path, "rb") as fh:
                        current = _sha256_bytes(fh.read())
                except FileNotFoundError:
                    return
                if current != fingerprint:
                    raise PreconditionFailedError(f"delete {uri}: changed since it was read", uri=uri)
                os.remove(path)
        except OSError as exc:
            raise _local_error(uri, "delete", exc) from None
        return

    _s3_key(uri, "delete")

    def _del(client):
        try:
            client.delete_object(Bucket=p.bucket, Key=p.key_or_path, IfMatch=f'"{fingerprint}"')
        except Exception as exc:  # noqa: BLE001
            kind = _condition_kind(exc)
            if kind in ("failed", "conflict"):
                raise PreconditionFailedError(f"delete {uri}: changed since it was read ({_describe(exc)})",
                                              uri=uri) from None
            if kind == "absent":
                return True
            if kind == "unsupported":
                return False
            raise
        return True

    try:
        done = _s3_call(uri, "delete", _del)
    except NotFoundError:
        return
    except PreconditionFailedError:
        # SeaweedFS answers 412, not 404, to If-Match on an absent key.
        try:
            stat(uri)
        except NotFoundError:
            return
        raise
    if not done:
        try:
            current = stat(uri).fingerprint
        except NotFoundError:
            return
        if current != fingerprint:
            raise PreconditionFailedError(f"delete {uri}: changed since it was read", uri=uri)
        delete(uri)


# --------------------------------------------------------------------------------------------
# pyarrow / Parquet
# --------------------------------------------------------------------------------------------


def _endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region_from_env() -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    try:
        import boto3

        return boto3.session.Session().region_name or DEFAULT_REGION
    except Exception:  # noqa: BLE001 - a broken profile should not stop local defaults
        return DEFAULT_REGION


def pyarrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and in-filesystem path for ``uri`` (for pyarrow / Ray Data I/O).

    Local -> (LocalFileSystem, absolute path). S3 -> (S3FileSystem configured from the same
    environment as boto3: AWS_ENDPOINT_URL[_S3] incl. http/https scheme, region, keys from env
    when set, otherwise the AWS default credential chain), "bucket/key").
    """
    p = parse_uri(uri)
    if p.scheme == "file":
        return pafs.LocalFileSystem(), os.path.abspath(p.key_or_path)
    kwargs: dict[str, Any] = {
        "region": _region_from_env(),
        "connect_timeout": _CONNECT_TIMEOUT_S,
        "request_timeout": _READ_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=10),
    }
    endpoint = _endpoint_from_env()
    if endpoint:
        parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        kwargs["scheme"] = parsed.scheme or "https"
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
    access = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        kwargs["access_key"] = access
        kwargs["secret_key"] = secret
        token = os.environ.get("AWS_SESSION_TOKEN")
        if token:
            kwargs["session_token"] = token
    fs = pafs.S3FileSystem(**kwargs)
    return fs, f"{p.bucket}/{p.key_or_path}".rstrip("/")


def _table_from_bytes(uri: str, data: bytes, columns: list[str] | None) -> pa.Table:
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise StorageError(f"read {uri}: not a valid Parquet file ({exc})", uri=uri) from None


def read_parquet_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file, or every ``*.parquet`` file under a local folder / S3 prefix
    (as written by Ray Data), into a single table. Goes through read_bytes, so errors and
    retries are the same as for any other object."""
    p = parse_uri(uri)
    if p.scheme == "file" and os.path.isdir(p.key_or_path):
        parts = [o.uri for o in list_objects(uri, suffixes=[".parquet"])]
        if not parts:
            raise NotFoundError(f"read {uri}: folder contains no .parquet files", uri=uri)
    else:
        try:
            return _table_from_bytes(uri, read_bytes(uri), columns)
        except NotFoundError:
            if p.scheme != "s3" or not p.key_or_path:
                raise
            parts = [o.uri for o in list_objects(uri, suffixes=[".parquet"])]
            if not parts:
                raise
    tables = [_table_from_bytes(part, read_bytes(part), columns) for part in parts]
    return pa.concat_tables(tables, promote_options="default")


def write_parquet_table(table: pa.Table, uri: str) -> None:
    """Write ``table`` as one Parquet file (atomic locally; an S3 put is atomic anyway)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    write_bytes(uri, sink.getvalue(), content_type="application/vnd.apache.parquet")
