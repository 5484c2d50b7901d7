"""S3 (``s3://bucket/key``) through boto3, with the standard AWS configuration (environment
variables, profiles, ``AWS_ENDPOINT_URL``).

* Clients are created lazily, one per process and configuration, never at import time, so
  storage's functions can be shipped to Ray workers by reference.
* Transient failures are retried here (not by botocore) so that the whole retry window is one
  wall-clock budget (STYLEBATCH_IO_RETRY_SECONDS, default 30 s) that outlives a server restart,
  while 403/404 fail immediately.
* Errors raised from S3 failures are raised ``from None`` so a traceback never re-exposes the
  unredacted original.
* Conditional requests: PutObject with If-None-Match: * (create only if absent) and If-Match:
  <etag> (replace only that version), DeleteObject with If-Match: <etag>. AWS S3 honours all three
  (conditional writes since 2024, conditional deletes on general purpose buckets since 2025);
  SeaweedFS 4.48 honours all three too, atomically under concurrent requests (412
  PreconditionFailed to the losers), but answers 412 rather than AWS's 404 to If-Match on an
  absent key. A retried request (after a timeout, say) may find its own first attempt already
  applied and answer PreconditionFailedError; callers that must know put something identifying in
  the body and re-read (stylebatch.io.lease does).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator, TypeVar

import pyarrow.fs as pafs

from stylebatch.io.redact import redact
from stylebatch.io.storage.base import (
    AccessDeniedError,
    AlreadyExistsError,
    Backend,
    NotFoundError,
    ObjectInfo,
    ParsedURI,
    PreconditionFailedError,
    StorageError,
    content_type_for,
    sort_key,
    too_large,
)

log = logging.getLogger("stylebatch.io.storage")

RETRY_SECONDS_ENV = "STYLEBATCH_IO_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
DEFAULT_REGION = "us-east-1"

# Short connect timeout: a dead endpoint should fail one attempt fast and let the retry loop
# decide; the read timeout is per socket read, not per object.
_CONNECT_TIMEOUT_S = 3.0
_READ_TIMEOUT_S = 30.0
_BACKOFF_BASE_S = 0.25
_BACKOFF_CAP_S = 4.0


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


def _error_code(exc: BaseException) -> str:
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        return str((exc.response.get("Error", {}) or {}).get("Code", ""))
    return ""


def _etag(resp: dict) -> str:
    return str(resp.get("ETag", "")).strip('"')


def _mtime(modified) -> float:
    return modified.timestamp() if modified is not None else 0.0


def _object_key(uri: str, loc: ParsedURI, action: str) -> str:
    if not loc.key_or_path or loc.key_or_path.endswith("/"):
        raise StorageError(f"{action} {uri}: S3 URI must name an object key, not a bucket/prefix", uri=uri)
    return loc.key_or_path


def _folder_prefix(loc: ParsedURI) -> str:
    # A prefix is a folder: "photos" lists "photos/..." but not "photos2/...".
    prefix = loc.key_or_path
    return prefix + "/" if prefix and not prefix.endswith("/") else prefix


class S3Backend(Backend):
    plain_form = r"^s3://[^/@]+(/|$)"

    @classmethod
    def parse(cls, uri: str, scheme: str, rest: str) -> ParsedURI:
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

    def _get(self, uri: str, loc: ParsedURI, max_bytes: int | None) -> tuple[bytes, str]:
        def _get(client):
            resp = client.get_object(Bucket=loc.bucket, Key=loc.key_or_path)
            body = resp["Body"]
            try:
                size = resp.get("ContentLength")
                if max_bytes is not None and size is not None and size > max_bytes:
                    raise too_large(uri, size, max_bytes)
                data = body.read() if max_bytes is None else body.read(max_bytes + 1)
            finally:
                body.close()
            if max_bytes is not None and len(data) > max_bytes:
                raise too_large(uri, len(data), max_bytes)
            return data, _etag(resp)

        return _s3_call(uri, "read", _get)

    def read_bytes(self, uri: str, loc: ParsedURI, max_bytes: int | None) -> bytes:
        return self._get(uri, loc, max_bytes)[0]

    def read_with_fingerprint(self, uri: str, loc: ParsedURI, max_bytes: int | None) -> tuple[bytes, str]:
        _object_key(uri, loc, "read")
        return self._get(uri, loc, max_bytes)

    def read_tail(self, uri: str, loc: ParsedURI, nbytes: int) -> bytes:
        def _get(client):
            try:
                resp = client.get_object(Bucket=loc.bucket, Key=loc.key_or_path, Range=f"bytes=-{nbytes}")
            except Exception as exc:  # noqa: BLE001 - an empty object has no range; the rest to _s3_call
                if _error_code(exc) == "InvalidRange":
                    return b""
                raise
            body = resp["Body"]
            try:
                data = body.read()
            finally:
                body.close()
            return data[-nbytes:]

        return _s3_call(uri, "read", _get)

    def write_bytes(self, uri: str, loc: ParsedURI, data: bytes, content_type: str | None) -> None:
        key = _object_key(uri, loc, "write")
        ctype = content_type_for(key, content_type)

        def _put(client):
            client.put_object(Bucket=loc.bucket, Key=key, Body=data, ContentType=ctype)

        _s3_call(uri, "write", _put)

    def stat(self, uri: str, loc: ParsedURI) -> ObjectInfo:
        if not loc.key_or_path:
            raise StorageError(f"stat {uri}: S3 URI must name an object key", uri=uri)
        resp = _s3_call(uri, "stat", lambda client: client.head_object(Bucket=loc.bucket, Key=loc.key_or_path))
        return ObjectInfo(uri=uri, size=int(resp.get("ContentLength", 0)), fingerprint=_etag(resp),
                          mtime=_mtime(resp.get("LastModified")))

    def exists(self, uri: str, loc: ParsedURI) -> bool:
        return bool(loc.key_or_path) and super().exists(uri, loc)

    def list_objects(self, uri: str, loc: ParsedURI, wanted: Callable[[str], bool]) -> Iterator[ObjectInfo]:
        bucket, prefix = loc.bucket, _folder_prefix(loc)

        def _list(client) -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []) or []:
                    key = obj["Key"]
                    if key.endswith("/") or not wanted(key):
                        continue
                    out.append(ObjectInfo(uri=f"s3://{bucket}/{key}", size=int(obj.get("Size", 0)),
                                          fingerprint=_etag(obj), mtime=_mtime(obj.get("LastModified"))))
            return out

        # Whole listing inside one retried call: a page failing mid-way restarts cleanly.
        items = _s3_call(uri, "list", _list)
        items.sort(key=lambda o: sort_key(o.uri))
        return iter(items)

    def list_dir(self, uri: str, loc: ParsedURI) -> tuple[list[str], list[str]]:
        bucket, prefix = loc.bucket, _folder_prefix(loc)

        def _list(client) -> tuple[list[str], list[str]]:
            files: list[str] = []
            folders: list[str] = []
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                for obj in page.get("Contents", []) or []:
                    name = obj["Key"][len(prefix):]
                    if name and not name.endswith("/"):
                        files.append(name)
                for sub in page.get("CommonPrefixes", []) or []:
                    name = sub["Prefix"][len(prefix):].rstrip("/")
                    if name:
                        folders.append(name)
            return files, folders

        try:
            files, folders = _s3_call(uri, "list", _list)
        except NotFoundError:  # no such bucket: nothing there
            return [], []
        return sorted(files, key=sort_key), sorted(folders, key=sort_key)

    def delete(self, uri: str, loc: ParsedURI) -> None:
        if not loc.key_or_path:
            raise StorageError(f"delete {uri}: S3 URI must name an object key", uri=uri)
        try:
            _s3_call(uri, "delete", lambda client: client.delete_object(Bucket=loc.bucket, Key=loc.key_or_path))
        except NotFoundError:
            return

    def _put_if(self, uri: str, loc: ParsedURI, data: bytes, content_type: str | None, action: str,
                condition: tuple[str, str], refused: Callable[[str], PreconditionFailedError]) -> str:
        """PutObject with one conditional header (name, value); a 412/409 answer raises
        ``refused(detail)``."""
        header, value = condition
        key = _object_key(uri, loc, action)
        ctype = content_type_for(key, content_type)

        def _put(client):
            try:
                resp = client.put_object(Bucket=loc.bucket, Key=key, Body=data, ContentType=ctype,
                                         **{header.replace("-", ""): value})  # If-Match -> IfMatch
            except Exception as exc:  # noqa: BLE001 - conditional answers mapped, the rest to _s3_call
                kind = _condition_kind(exc)
                if kind in ("failed", "conflict"):
                    raise refused(_describe(exc)) from None
                if kind == "absent":
                    raise PreconditionFailedError(f"{action} {uri}: no longer exists", uri=uri) from None
                if kind == "unsupported":
                    raise StorageError(f"{action} {uri}: the S3 server does not support conditional writes "
                                       f"({header}) ({_describe(exc)})", uri=uri) from None
                raise
            return _etag(resp)

        return _s3_call(uri, action, _put) or self.stat(uri, loc).fingerprint

    def create_exclusive(self, uri: str, loc: ParsedURI, data: bytes, content_type: str | None) -> str:
        return self._put_if(uri, loc, data, content_type, "create", ("If-None-Match", "*"),
                            lambda why: AlreadyExistsError(f"create {uri}: already exists ({why})", uri=uri))

    def replace_if_match(self, uri: str, loc: ParsedURI, data: bytes, fingerprint: str,
                         content_type: str | None) -> str:
        return self._put_if(uri, loc, data, content_type, "replace", ("If-Match", f'"{fingerprint}"'),
                            lambda why: PreconditionFailedError(f"replace {uri}: changed since it was read ({why})",
                                                                uri=uri))

    def delete_if_match(self, uri: str, loc: ParsedURI, fingerprint: str) -> None:
        key = _object_key(uri, loc, "delete")

        def _del(client):
            try:
                client.delete_object(Bucket=loc.bucket, Key=key, IfMatch=f'"{fingerprint}"')
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
            if not self.exists(uri, loc):
                return
            raise
        if not done:  # the server ignores conditional deletes: compare, then delete
            try:
                current = self.stat(uri, loc).fingerprint
            except NotFoundError:
                return
            if current != fingerprint:
                raise PreconditionFailedError(f"delete {uri}: changed since it was read", uri=uri)
            self.delete(uri, loc)

    def pyarrow_filesystem(self, uri: str, loc: ParsedURI) -> tuple[pafs.FileSystem, str]:
        """S3FileSystem configured from the same environment as boto3: AWS_ENDPOINT_URL[_S3] incl.
        http/https scheme, region, keys from env when set, otherwise the AWS default credential
        chain; the path is "bucket/key". (Its reads retry with pyarrow's policy, not this module's:
        stylebatch's own reads go through ``read_bytes``.)"""
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
        return pafs.S3FileSystem(**kwargs), f"{loc.bucket}/{loc.key_or_path}".rstrip("/")
