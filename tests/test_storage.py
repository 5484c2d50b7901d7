from __future__ import annotations

import hashlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stylebatch.io import storage
from stylebatch.io.storage import (
    AccessDeniedError, NotFoundError, ObjectTooLargeError, StorageError, UnsafePathError,
    UnsupportedSchemeError,
)

FAKE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


# ------------------------------------------------------------------------------------------
# URIs
# ------------------------------------------------------------------------------------------


def test_parse_uri_forms(tmp_path):
    assert storage.parse_uri("s3://bucket/a/b.jpg") == ("s3", "bucket", "a/b.jpg")
    assert storage.parse_uri("S3://bucket") == ("s3", "bucket", "")
    assert storage.parse_uri("file:///tmp/a%20b.jpg") == ("file", None, "/tmp/a b.jpg")
    assert storage.parse_uri("file://localhost/tmp/x") == ("file", None, "/tmp/x")
    assert storage.parse_uri("relative/x.jpg") == ("file", None, "relative/x.jpg")
    assert storage.parse_uri(tmp_path / "p.png") == ("file", None, str(tmp_path / "p.png"))
    with pytest.raises(StorageError, match="missing bucket"):
        storage.parse_uri("s3:///key")
    with pytest.raises(StorageError, match="only local files"):
        storage.parse_uri("file://otherhost/x")


@pytest.mark.parametrize(
    "uri,scheme",
    [
        ("http://example.com/a.jpg", "http"),
        ("https://example.com/a.jpg", "https"),
        ("ftp://example.com/a.jpg", "ftp"),
        ("gs://bucket/a.jpg", "gs"),
        ("s3a://bucket/a.jpg", "s3a"),
        ("data:image/png;base64,iVBORw0KGgo=", "data"),
    ],
)
def test_unsupported_scheme(uri, scheme):
    with pytest.raises(UnsupportedSchemeError) as ei:
        storage.parse_uri(uri)
    msg = str(ei.value)
    assert repr(scheme) in msg and "file://" in msg and "s3://" in msg
    with pytest.raises(UnsupportedSchemeError):
        storage.read_bytes(uri)
    with pytest.raises(UnsupportedSchemeError):
        storage.write_bytes(uri, b"x")


def test_join_keeps_form_and_never_replaces_base():
    assert storage.join("s3://b", "x", "y.jpg") == "s3://b/x/y.jpg"
    assert storage.join("s3://b/out/", "/x/") == "s3://b/out/x"
    assert storage.join("/data/out", "a/b", "c.png") == "/data/out/a/b/c.png"
    assert storage.join("file:///data", "c.png") == "file:///data/c.png"
    assert storage.join("/data/out", "/etc/passwd") == "/data/out/etc/passwd"


@pytest.mark.parametrize("base", ["/srv/out", "file:///srv/out", "s3://bucket/out", "s3://bucket"])
def test_output_uri_accepts_safe_parts(base):
    assert storage.output_uri(base, "styled", "img_001.jpg") == f"{base}/styled/img_001.jpg"
    assert storage.output_uri(base, "a/b", "c d%20e.jpg").endswith("/a/b/c d%20e.jpg")
    assert storage.output_uri(base, "100%.jpg").endswith("/100%.jpg")


BAD_PARTS = [
    ("", "is empty"),
    ("../../etc/x", "'..' segment"),
    ("a/../../b", "'..' segment"),
    ("..", "'..' segment"),
    ("./x", "'.' segment"),
    ("/etc/passwd", "absolute path"),
    ("a\\..\\b", "backslash"),
    ("a\x00b", "control character"),
    ("a\nb", "control character"),
    ("a//b", "empty path segment"),
    ("a/", "empty path segment"),
    ("%2e%2e/x", "'..' segment (URL-encoded)"),
    ("%2E%2e", "'..' segment (URL-encoded)"),
    ("%252e%252e/x", "'..' segment (URL-encoded)"),
    ("%2e%2e%2fetc%2fpasswd", "URL-encoded path separator"),
    ("a%2Fb", "URL-encoded path separator"),
    ("a%5cb", "URL-encoded path separator"),
    ("a%255Cb", "URL-encoded path separator"),
    ("%00x", "URL-encoded control character"),
    ("x" * 300, "longer than 255 bytes"),
]


@pytest.mark.parametrize("base", ["/srv/out", "s3://bucket/out"])
@pytest.mark.parametrize("part,why", BAD_PARTS)
def test_output_uri_rejects_unsafe_parts(base, part, why):
    with pytest.raises(UnsafePathError) as ei:
        storage.output_uri(base, "styled", part)
    msg = str(ei.value)
    assert why in msg
    assert repr(part)[:60].rstrip("'") in msg  # names the offending part
    assert isinstance(ei.value, StorageError)


def test_output_uri_rejects_non_string_and_no_parts():
    with pytest.raises(UnsafePathError, match="must be a string"):
        storage.output_uri("/srv/out", None)
    with pytest.raises(UnsafePathError, match="at least one"):
        storage.output_uri("/srv/out")


# ------------------------------------------------------------------------------------------
# Redaction
# ------------------------------------------------------------------------------------------


def test_redact_removes_all_credential_forms(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEJr//////////session-token-value")
    text = (
        f"key={FAKE_KEY_ID} temp=ASIAY34FZKBOKMUTVV7A secret {FAKE_SECRET} "
        "token FwoGZXIvYXdzEJr//////////session-token-value "
        "proxy https://alice:hunter2@proxy.example.com:8080/x "
        "url https://b.s3.amazonaws.com/k.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAXXXX%2F20240101%2Fus-east-1&X-Amz-Security-Token=IQoJb3JpZ2lu"
        "&X-Amz-Signature=0123abcd&width=100 "
        "sas https://acct.blob.core.windows.net/c/b.jpg?sig=abcDEF%3D&token=tok123 "
        "header Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Signature=fe5f80f7"
    )
    out = storage.redact(text)
    for secret in (
        FAKE_KEY_ID, "ASIAY34FZKBOKMUTVV7A", FAKE_SECRET, "session-token-value", "hunter2", "alice:",
        "AKIAXXXX", "IQoJb3JpZ2lu", "0123abcd", "abcDEF", "tok123", "AKIDEXAMPLE", "fe5f80f7",
    ):
        assert secret not in out, secret
    # Non-secret content survives.
    assert "proxy.example.com:8080/x" in out
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in out
    assert "width=100" in out
    assert "https://***@proxy.example.com" in out
    assert "X-Amz-Signature=***" in out


def test_redact_leaves_plain_text_alone(monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    plain = "read s3://bucket/photos/AKIA.jpg failed: NoSuchKey (HTTP 404)"
    assert storage.redact(plain) == plain


def test_error_messages_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    missing = tmp_path / f"{FAKE_KEY_ID}-{FAKE_SECRET.replace('/', '_')}.jpg"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET.replace("/", "_"))
    with pytest.raises(NotFoundError) as ei:
        storage.read_bytes(str(missing))
    assert FAKE_KEY_ID not in str(ei.value)
    assert FAKE_SECRET.replace("/", "_") not in str(ei.value)
    assert "not found" in str(ei.value)
    with pytest.raises(UnsupportedSchemeError) as ei:
        storage.read_bytes("https://user:pa55word@host/x.jpg?X-Amz-Signature=deadbeef")
    assert "pa55word" not in str(ei.value) and "deadbeef" not in str(ei.value)
    # Raising StorageError directly is safe too.
    assert FAKE_KEY_ID not in str(StorageError(f"boom {FAKE_KEY_ID}"))


# ------------------------------------------------------------------------------------------
# Local files
# ------------------------------------------------------------------------------------------


def test_local_round_trip_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "c.bin"
    storage.write_bytes(str(target), b"\x00payload\xff")
    assert target.read_bytes() == b"\x00payload\xff"
    assert storage.read_bytes(str(target)) == b"\x00payload\xff"
    assert storage.read_bytes(f"file://{target}") == b"\x00payload\xff"
    assert storage.exists(str(target)) and not storage.exists(str(tmp_path / "nope"))
    assert not storage.exists(str(tmp_path))  # a folder is not an object
    # No temp files left behind.
    assert sorted(os.listdir(target.parent)) == ["c.bin"]


def test_local_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.jpg"
    target.write_bytes(b"old content")
    real_replace = os.replace
    seen = {}

    def interrupted_replace(src, dst):
        # At the moment of the rename the new bytes are complete in the temp file and the
        # target still holds the old ones.
        seen["tmp"] = open(src, "rb").read()
        seen["target"] = open(dst, "rb").read()
        raise KeyboardInterrupt  # as if the process were killed right here

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(str(target), b"new content, longer")
    monkeypatch.setattr(os, "replace", real_replace)
    assert seen == {"tmp": b"new content, longer", "target": b"old content"}
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["out.jpg"]  # temp file cleaned up
    storage.write_bytes(str(target), b"new")
    assert target.read_bytes() == b"new"


def test_local_stat_fingerprint_tracks_content(tmp_path):
    p = str(tmp_path / "x.bin")
    storage.write_bytes(p, b"aaaa")
    first = storage.stat(p)
    assert first.size == 4
    assert first.fingerprint == hashlib.sha256(b"aaaa").hexdigest()
    assert storage.stat(p).fingerprint == first.fingerprint  # cached path, same answer
    storage.write_bytes(p, b"bbbb")  # same size, likely the same mtime tick
    second = storage.stat(p)
    assert second.fingerprint == hashlib.sha256(b"bbbb").hexdigest()
    assert second.mtime >= first.mtime
    with pytest.raises(NotFoundError, match="not found"):
        storage.stat(str(tmp_path / "missing.bin"))
    with pytest.raises(StorageError, match="not a regular file"):
        storage.stat(str(tmp_path))


def test_local_read_errors(tmp_path):
    with pytest.raises(NotFoundError) as ei:
        storage.read_bytes(str(tmp_path / "nope.jpg"))
    assert str(tmp_path / "nope.jpg") in str(ei.value)
    with pytest.raises(StorageError, match="is a directory"):
        storage.read_bytes(str(tmp_path))
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1000)
    with pytest.raises(ObjectTooLargeError, match="1000 bytes, over the 999-byte limit"):
        storage.read_bytes(str(big), max_bytes=999)
    assert storage.read_bytes(str(big), max_bytes=1000) == b"x" * 1000


def test_local_list_objects_recursive_sorted_filtered(tmp_path):
    files = {
        "b.jpg": b"1",
        "a.JPG": b"22",
        "a/z.png": b"333",
        "a/y.txt": b"no",
        "a-b/c.jpeg": b"4444",
        "deep/er/x.webp": b"55555",
    }
    for rel, data in files.items():
        storage.write_bytes(str(tmp_path / rel), data)
    (tmp_path / ".c.jpg.0123456789ab.tmp").write_bytes(b"in flight")  # our temp-file pattern
    all_infos = list(storage.list_objects(str(tmp_path)))
    rels = [os.path.relpath(i.uri, tmp_path) for i in all_infos]
    # Byte order like S3: "a-b/" < "a.JPG" < "a/" < "b.jpg" < "deep/".
    assert rels == ["a-b/c.jpeg", "a.JPG", "a/y.txt", "a/z.png", "b.jpg", "deep/er/x.webp"]
    images = list(storage.list_objects(str(tmp_path), suffixes=[".jpg", ".png", ".jpeg", ".webp"]))
    assert [os.path.relpath(i.uri, tmp_path) for i in images] == [
        "a-b/c.jpeg", "a.JPG", "a/z.png", "b.jpg", "deep/er/x.webp"
    ]
    by_name = {os.path.relpath(i.uri, tmp_path): i for i in images}
    assert by_name["deep/er/x.webp"].size == 5
    assert by_name["deep/er/x.webp"].fingerprint == hashlib.sha256(b"55555").hexdigest()
    # file:// prefixes give file:// URIs back.
    uris = [i.uri for i in storage.list_objects(f"file://{tmp_path}/a", suffixes=".png")]
    assert uris == [f"file://{tmp_path}/a/z.png"]
    with pytest.raises(NotFoundError):
        list(storage.list_objects(str(tmp_path / "missing")))


def test_local_delete_is_idempotent(tmp_path):
    p = str(tmp_path / "x")
    storage.write_bytes(p, b"1")
    storage.delete(p)
    assert not storage.exists(p)
    storage.delete(p)


def test_local_parquet_round_trip_and_folder(tmp_path):
    table = pa.table({"image_id": ["a", "b"], "n": [1, 2]})
    storage.write_parquet_table(table, str(tmp_path / "m" / "t.parquet"))
    assert storage.read_parquet_table(str(tmp_path / "m" / "t.parquet")).equals(table)
    assert storage.read_parquet_table(str(tmp_path / "m" / "t.parquet"), columns=["n"]).column_names == ["n"]
    # A folder of parts (as Ray Data writes) reads as one table, parts in name order.
    storage.write_parquet_table(pa.table({"image_id": ["c"], "n": [3]}), str(tmp_path / "m" / "u.parquet"))
    both = storage.read_parquet_table(str(tmp_path / "m"))
    assert both.column("image_id").to_pylist() == ["a", "b", "c"]
    (tmp_path / "bad.parquet").write_bytes(b"definitely not parquet")
    with pytest.raises(StorageError, match="not a valid Parquet file"):
        storage.read_parquet_table(str(tmp_path / "bad.parquet"))
    fs, path = storage.pyarrow_filesystem(str(tmp_path / "m" / "t.parquet"))
    assert isinstance(fs, pa.fs.LocalFileSystem) and os.path.isabs(path)
    assert pq.read_table(path, filesystem=fs).equals(table)


def test_pickling_for_ray_workers(tmp_path):
    for err in (
        StorageError("x", uri="s3://b/k"),
        NotFoundError("gone", uri="s3://b/k"),
        AccessDeniedError("no"),
        UnsafePathError("bad"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.uri == err.uri
    storage.write_bytes(str(tmp_path / "f"), b"abc")
    info = next(storage.list_objects(str(tmp_path)))
    back = pickle.loads(pickle.dumps(info))
    assert back.fingerprint == hashlib.sha256(b"abc").hexdigest() == info.fingerprint
    assert back == info
    assert pickle.loads(pickle.dumps(storage.read_bytes)) is storage.read_bytes


def test_import_creates_no_client():
    code = (
        "import sys, stylebatch.io.storage as s\n"
        "assert 'boto3' not in sys.modules, 'boto3 imported at import time'\n"
        "assert not s.s3._CLIENTS\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------
# S3 failures that need no server
# ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def isolated_aws(monkeypatch, tmp_path):
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_retry_window_gives_up_on_dead_endpoint(isolated_aws):
    isolated_aws.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    isolated_aws.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    isolated_aws.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    isolated_aws.setenv("STYLEBATCH_IO_RETRY_SECONDS", "1.5")
    t0 = time.monotonic()
    with pytest.raises(StorageError) as ei:
        storage.read_bytes("s3://bucket/key.jpg")
    elapsed = time.monotonic() - t0
    assert 1.4 <= elapsed < 8, elapsed
    msg = str(ei.value)
    assert "s3://bucket/key.jpg" in msg and "attempts" in msg and "STYLEBATCH_IO_RETRY_SECONDS" in msg
    assert not isinstance(ei.value, (NotFoundError, AccessDeniedError))
    assert FAKE_KEY_ID not in msg and FAKE_SECRET not in msg


def test_missing_credentials_fail_fast_with_clear_message(isolated_aws):
    isolated_aws.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="no AWS credentials"):
        storage.read_bytes("s3://bucket/key.jpg")
    assert time.monotonic() - t0 < 5


class _FakeS3:
    """Stands in for the boto3 client: get_object fails with the queued errors first."""

    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def get_object(self, Bucket, Key):
        import io

        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        body = io.BytesIO(b"finally")
        return {"Body": body, "ContentLength": 7}


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def test_transient_errors_are_retried_and_others_are_not(monkeypatch):
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    monkeypatch.setenv("STYLEBATCH_IO_RETRY_SECONDS", "20")
    monkeypatch.setattr(storage.s3, "_BACKOFF_BASE_S", 0.01)  # same policy, faster test
    fake = _FakeS3([
        _client_error("SlowDown", 503),
        _client_error("InternalError", 500),
        EndpointConnectionError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        _client_error("Throttling", 400),
    ])
    monkeypatch.setattr(storage.s3, "get_s3_client", lambda: fake)
    assert storage.read_bytes("s3://b/k") == b"finally"
    assert fake.calls == 6
    for code, status, exc_type in [
        ("NoSuchKey", 404, NotFoundError),
        ("AccessDenied", 403, AccessDeniedError),
        ("SignatureDoesNotMatch", 403, AccessDeniedError),
        ("InvalidRequest", 400, StorageError),
    ]:
        fake = _FakeS3([_client_error(code, status)])
        monkeypatch.setattr(storage.s3, "get_s3_client", lambda: fake)
        with pytest.raises(exc_type) as ei:
            storage.read_bytes("s3://b/k")
        assert fake.calls == 1, code  # no retry
        assert code in str(ei.value) and "s3://b/k" in str(ei.value)
        if exc_type is StorageError:
            assert not isinstance(ei.value, (NotFoundError, AccessDeniedError))


def test_one_client_per_process_and_config(isolated_aws):
    isolated_aws.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    isolated_aws.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    isolated_aws.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    got = []
    threads = [threading.Thread(target=lambda: got.append(storage.get_s3_client())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(c is got[0] for c in got)
    assert got[0].meta.region_name == "us-east-1"
    assert got[0].meta.endpoint_url == "http://127.0.0.1:1"
    isolated_aws.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")  # new config, new client
    assert storage.get_s3_client() is not got[0]
    assert storage.get_s3_client().meta.endpoint_url == "http://127.0.0.1:2"


def test_bad_retry_env_is_reported(isolated_aws):
    isolated_aws.setenv("STYLEBATCH_IO_RETRY_SECONDS", "soon")
    isolated_aws.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    isolated_aws.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    with pytest.raises(StorageError, match="STYLEBATCH_IO_RETRY_SECONDS must be a number"):
        storage.read_bytes("s3://bucket/key.jpg")


def test_pyarrow_filesystem_s3_config(isolated_aws):
    isolated_aws.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    isolated_aws.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    isolated_aws.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    fs, path = storage.pyarrow_filesystem("s3://bucket/dir/m.parquet")
    assert isinstance(fs, pa.fs.S3FileSystem)
    assert path == "bucket/dir/m.parquet"
    assert fs.region == "us-east-1"  # default when nothing is configured
    isolated_aws.setenv("AWS_REGION", "eu-west-1")
    fs, _ = storage.pyarrow_filesystem("s3://bucket/x")
    assert fs.region == "eu-west-1"


# ------------------------------------------------------------------------------------------
# S3 against a real SeaweedFS server
# ------------------------------------------------------------------------------------------


def test_s3_round_trip_stat_and_content_type(s3_server, s3_prefix):
    uri = f"{s3_prefix}/dir/photo.jpg"
    storage.write_bytes(uri, b"first version")
    assert storage.read_bytes(uri) == b"first version"
    assert storage.exists(uri)
    info = storage.stat(uri)
    assert info.uri == uri and info.size == len(b"first version")
    assert info.fingerprint == hashlib.md5(b"first version").hexdigest()  # single-part ETag
    assert info.mtime > 0
    p = storage.parse_uri(uri)
    head = s3_server.client().head_object(Bucket=p.bucket, Key=p.key_or_path)
    assert head["ContentType"] == "image/jpeg"
    storage.write_bytes(uri, b"second version")
    assert storage.stat(uri).fingerprint == hashlib.md5(b"second version").hexdigest()
    storage.write_bytes(f"{s3_prefix}/blob", b"x", content_type="application/x-custom")
    p = storage.parse_uri(f"{s3_prefix}/blob")
    head = s3_server.client().head_object(Bucket=p.bucket, Key=p.key_or_path)
    assert head["ContentType"] == "application/x-custom"


def test_s3_not_found_is_immediate(s3_prefix, s3_server):
    t0 = time.monotonic()
    with pytest.raises(NotFoundError) as ei:
        storage.read_bytes(f"{s3_prefix}/missing.jpg")
    assert f"{s3_prefix}/missing.jpg" in str(ei.value)
    with pytest.raises(NotFoundError):
        storage.stat(f"{s3_prefix}/missing.jpg")
    with pytest.raises(NotFoundError):
        storage.read_bytes("s3://no-such-bucket-sb/x.jpg")
    with pytest.raises(NotFoundError):
        list(storage.list_objects("s3://no-such-bucket-sb/photos"))
    assert not storage.exists(f"{s3_prefix}/missing.jpg")
    assert time.monotonic() - t0 < 3  # no retries for 404


def test_s3_max_bytes(s3_prefix):
    uri = f"{s3_prefix}/big.bin"
    storage.write_bytes(uri, b"y" * 5000)
    with pytest.raises(ObjectTooLargeError, match="5000 bytes, over the 4096-byte limit"):
        storage.read_bytes(uri, max_bytes=4096)
    assert len(storage.read_bytes(uri, max_bytes=5000)) == 5000


def test_s3_list_objects(s3_prefix):
    keys = ["b.jpg", "a.PNG", "a/z.png", "a/y.txt", "a-b/c.jpeg", "deep/er/x.webp"]
    for k in keys:
        storage.write_bytes(f"{s3_prefix}/photos/{k}", k.encode())
    storage.write_bytes(f"{s3_prefix}/photos2/other.jpg", b"not under photos/")
    infos = list(storage.list_objects(f"{s3_prefix}/photos"))
    in_order = ["a-b/c.jpeg", "a.PNG", "a/y.txt", "a/z.png", "b.jpg", "deep/er/x.webp"]
    assert [i.uri for i in infos] == [f"{s3_prefix}/photos/{k}" for k in in_order]
    for info, key in zip(infos, in_order):
        assert info.fingerprint == hashlib.md5(key.encode()).hexdigest()
        assert info.size == len(key)
    listed = storage.list_objects(f"{s3_prefix}/photos/", suffixes=[".png", ".jpg"])
    images = [i.uri.rsplit("/photos/", 1)[1] for i in listed]
    assert images == ["a.PNG", "a/z.png", "b.jpg"]
    assert list(storage.list_objects(f"{s3_prefix}/nothing-here")) == []


def test_s3_delete(s3_prefix):
    uri = f"{s3_prefix}/gone.txt"
    storage.write_bytes(uri, b"1")
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # idempotent


def test_s3_unsafe_output_paths(s3_prefix):
    assert storage.output_uri(s3_prefix, "styled", "ok.jpg") == f"{s3_prefix}/styled/ok.jpg"
    for bad in ("../escape.jpg", "%2e%2e%2fescape.jpg", "/abs.jpg", "a\\b.jpg"):
        with pytest.raises(UnsafePathError):
            storage.output_uri(s3_prefix, "styled", bad)


def test_s3_parquet_via_storage_and_pyarrow(s3_prefix):
    table = pa.table({"image_id": ["a", "b", "c"], "alpha": [0.1, 0.5, 1.0]})
    storage.write_parquet_table(table, f"{s3_prefix}/m.parquet")
    assert storage.read_parquet_table(f"{s3_prefix}/m.parquet").equals(table)
    # The pyarrow filesystem talks to the same endpoint with the same credentials.
    fs, path = storage.pyarrow_filesystem(f"{s3_prefix}/parts/part-0.parquet")
    pq.write_table(table.slice(0, 2), path, filesystem=fs)
    fs2, path2 = storage.pyarrow_filesystem(f"{s3_prefix}/parts/part-1.parquet")
    pq.write_table(table.slice(2), path2, filesystem=fs2)
    assert pq.read_table(path, filesystem=fs).equals(table.slice(0, 2))
    # A prefix of parts reads as one table.
    assert storage.read_parquet_table(f"{s3_prefix}/parts").equals(table)


def test_s3_access_denied_is_immediate(s3_server, s3_reader_env):
    srv = s3_server
    admin = srv.client()
    admin.put_object(Bucket=srv.readable_bucket, Key="ok.txt", Body=b"readable")
    admin.put_object(Bucket=srv.denied_bucket, Key="secret.txt", Body=b"private")
    assert storage.read_bytes(f"s3://{srv.readable_bucket}/ok.txt") == b"readable"
    t0 = time.monotonic()
    with pytest.raises(AccessDeniedError) as ei:
        storage.read_bytes(f"s3://{srv.denied_bucket}/secret.txt")
    with pytest.raises(AccessDeniedError):
        storage.stat(f"s3://{srv.denied_bucket}/secret.txt")
    with pytest.raises(AccessDeniedError):
        list(storage.list_objects(f"s3://{srv.denied_bucket}/"))
    with pytest.raises(AccessDeniedError):
        storage.write_bytes(f"s3://{srv.readable_bucket}/new.txt", b"read-only identity")
    assert time.monotonic() - t0 < 3  # never retried
    msg = str(ei.value)
    assert f"s3://{srv.denied_bucket}/secret.txt" in msg and "access denied" in msg
    assert srv.reader_secret_key not in msg and srv.reader_access_key not in msg


def test_s3_wrong_secret_is_access_denied(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret-at-all")
    with pytest.raises(AccessDeniedError) as ei:
        storage.read_bytes(f"s3://{s3_server.readable_bucket}/anything")
    assert "not-the-right-secret-at-all" not in str(ei.value)


@pytest.mark.timeout(90)
def test_s3_read_survives_server_restart(s3_server, s3_prefix):
    uri = f"{s3_prefix}/survivor.bin"
    payload = os.urandom(2048)
    storage.write_bytes(uri, payload)
    assert storage.read_bytes(uri) == payload  # warm the client's connection pool

    s3_server.stop(grace=0)  # crash: SIGKILL
    outage_s = 8.0
    errors: list[BaseException] = []

    def restart_later():
        try:
            time.sleep(outage_s)
            s3_server.start()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=restart_later, daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        got = storage.read_bytes(uri)  # default 30 s retry window
        elapsed = time.monotonic() - t0
        storage.write_bytes(f"{s3_prefix}/after.bin", b"writes work again")
    finally:
        t.join(timeout=70)
    assert not errors, errors
    assert got == payload
    assert elapsed >= outage_s - 0.5, elapsed  # it really waited for the outage
    assert storage.read_bytes(f"{s3_prefix}/after.bin") == b"writes work again"
