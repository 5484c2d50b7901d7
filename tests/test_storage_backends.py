"""Storage backends behind one interface: the registry (a new scheme is one Backend subclass and one
BACKENDS entry, and every module then works on it), and the functions results and friends use
(list_dir, read_parquet_metadata, iter_parquet_tables, is_within, uri_errors) on disk and on S3."""
from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stylebatch.io import manifest, results, storage
from stylebatch.io.storage import Backend, ObjectInfo, ParsedURI


class MemBackend(Backend):
    """``mem://bucket/key``: objects in a dict (what a test needs to stand in for gs://)."""

    objects: dict[tuple[str, str], bytes] = {}

    @classmethod
    def parse(cls, uri, scheme, rest):
        if not rest.startswith("//") or not rest[2:].partition("/")[0]:
            raise storage.StorageError(f"malformed mem URI {uri!r}", uri=uri)
        bucket, _, key = rest[2:].partition("/")
        return ParsedURI(scheme, bucket, key)

    def _get(self, uri, loc):
        try:
            return self.objects[(loc.bucket, loc.key_or_path)]
        except KeyError:
            raise storage.NotFoundError(f"read {uri}: not found", uri=uri) from None

    @staticmethod
    def _fp(data):
        return hashlib.md5(data).hexdigest()

    def read_bytes(self, uri, loc, max_bytes):
        data = self._get(uri, loc)
        if max_bytes is not None and len(data) > max_bytes:
            raise storage.ObjectTooLargeError(f"{uri} is too large", uri=uri)
        return data

    def write_bytes(self, uri, loc, data, content_type):
        self.objects[(loc.bucket, loc.key_or_path)] = bytes(data)

    def stat(self, uri, loc):
        data = self._get(uri, loc)
        return ObjectInfo(uri, len(data), self._fp(data), 0.0)

    def _under(self, loc):
        prefix = loc.key_or_path.rstrip("/") + "/" if loc.key_or_path else ""
        return prefix, sorted(k for b, k in self.objects if b == loc.bucket and k.startswith(prefix))

    def list_objects(self, uri, loc, wanted):
        prefix, keys = self._under(loc)
        for key in keys:
            if wanted(key):
                data = self.objects[(loc.bucket, key)]
                yield ObjectInfo(f"mem://{loc.bucket}/{key}", len(data), self._fp(data), 0.0)

    def list_dir(self, uri, loc):
        prefix, keys = self._under(loc)
        rels = [k[len(prefix):] for k in keys]
        return (sorted(r for r in rels if "/" not in r), sorted({r.split("/")[0] for r in rels if "/" in r}))

    def delete(self, uri, loc):
        self.objects.pop((loc.bucket, loc.key_or_path), None)

    def read_with_fingerprint(self, uri, loc, max_bytes):
        data = self.read_bytes(uri, loc, max_bytes)
        return data, self._fp(data)

    def create_exclusive(self, uri, loc, data, content_type):
        if (loc.bucket, loc.key_or_path) in self.objects:
            raise storage.AlreadyExistsError(f"create {uri}: already exists", uri=uri)
        self.write_bytes(uri, loc, data, content_type)
        return self._fp(data)

    def replace_if_match(self, uri, loc, data, fingerprint, content_type):
        current = self.objects.get((loc.bucket, loc.key_or_path))
        if current is None or self._fp(current) != fingerprint:
            raise storage.PreconditionFailedError(f"replace {uri}: changed", uri=uri)
        self.write_bytes(uri, loc, data, content_type)
        return self._fp(data)

    def delete_if_match(self, uri, loc, fingerprint):
        current = self.objects.get((loc.bucket, loc.key_or_path))
        if current is not None and self._fp(current) != fingerprint:
            raise storage.PreconditionFailedError(f"delete {uri}: changed", uri=uri)
        self.delete(uri, loc)


@pytest.fixture
def mem(monkeypatch):
    monkeypatch.setattr(MemBackend, "objects", {})
    monkeypatch.setitem(storage.BACKENDS, "mem", MemBackend)
    return MemBackend.objects


def test_schemes_are_listed_once_in_the_registry(mem):
    assert tuple(storage.BACKENDS) == ("file", "s3", "mem")
    assert storage.supported_locations() == "local paths, file://, s3://, mem://"
    with pytest.raises(storage.UnsupportedSchemeError, match=r"supported: file://, s3://, mem:// or a local path"):
        storage.parse_uri("gs://bucket/x")
    check = manifest.check_manifest(pa.table({"image_id": ["a", "b"], "uri": ["mem://b/a.jpg", "gs://b/b.jpg"]}))
    assert list(check.row_errors) == [1]
    assert "supported: local paths, file://, s3://, mem://" in check.row_errors[1]
    assert "unsupported uri (supported: local paths, file://, s3://, mem://) in 1 row" in "\n".join(check.problems())


def test_a_new_backend_serves_every_public_function(mem):
    base = "mem://bucket/photos"
    storage.write_bytes(storage.output_uri(base, "a.jpg"), b"aaa")
    storage.write_bytes(storage.join(base, "sub", "b.png"), b"bb")
    storage.write_bytes("mem://bucket/photos2/c.jpg", b"c")  # a sibling prefix, not inside
    assert storage.read_bytes(f"{base}/a.jpg") == b"aaa"
    with pytest.raises(storage.ObjectTooLargeError):
        storage.read_bytes(f"{base}/a.jpg", max_bytes=2)
    assert storage.exists(f"{base}/a.jpg") and not storage.exists(f"{base}/zzz.jpg")
    assert storage.stat(f"{base}/sub/b.png").size == 2
    assert [o.uri for o in storage.list_objects(base)] == [f"{base}/a.jpg", f"{base}/sub/b.png"]
    assert [o.uri for o in storage.list_objects(base, suffixes=[".PNG"])] == [f"{base}/sub/b.png"]
    assert storage.list_dir(base) == (["a.jpg"], ["sub"])
    assert storage.is_within(f"{base}/sub", base) and not storage.is_within("mem://bucket/photos2", base)
    assert not storage.is_within(f"{base}/sub", "s3://bucket/photos")
    with pytest.raises(storage.UnsafePathError):
        storage.output_uri(base, "../escape.jpg")

    data, fp = storage.read_with_fingerprint(f"{base}/a.jpg")
    assert storage.replace_if_match(f"{base}/a.jpg", b"new", fp) != fp
    with pytest.raises(storage.PreconditionFailedError):
        storage.delete_if_match(f"{base}/a.jpg", fp)
    with pytest.raises(storage.AlreadyExistsError):
        storage.create_exclusive(f"{base}/a.jpg", b"x")
    storage.delete(f"{base}/a.jpg")
    storage.delete(f"{base}/a.jpg")  # idempotent
    assert not storage.exists(f"{base}/a.jpg")

    table = pa.table({"n": [1, 2, 3]}).replace_schema_metadata({b"k": b"v"})
    storage.write_parquet_table(table, f"{base}/t.parquet")
    assert storage.read_parquet_table(f"{base}/t.parquet").column("n").to_pylist() == [1, 2, 3]
    assert storage.read_parquet_metadata(f"{base}/t.parquet").metadata[b"k"] == b"v"  # read_tail's default


def test_results_run_on_a_new_backend_unchanged(mem):
    """results has no scheme knowledge: parts, listing, compaction and the index work on mem://."""
    out, run = "mem://bucket/out", "20260101T000000Z-abcd"
    for p in range(3):
        rows = [{"image_id": f"{p}{i}", "uri": f"/src/{p}{i}.jpg", "output_uri": f"{out}/s/{p}{i}.jpg",
                 "status": "ok" if i else "error", "source_fingerprint": "f", "params_key": "k"} for i in range(4)]
        results.write_results_part(out, run, rows, part_id=f"p{p}")
    assert results.list_runs(out) == [run]
    assert results.read_results(out, run).num_rows == 12
    assert len(results.completed_index(out, use_snapshot=False)) == 9
    assert len(results.compact_run(out, run, rows_per_file=5)) == 2
    assert storage.list_dir(results.results_dir(out, run))[0][0].startswith(results.COMPACTED_PREFIX)
    assert sorted(results.read_results(out, run, columns=["image_id"]).column("image_id").to_pylist()) == \
        sorted(f"{p}{i}" for p in range(3) for i in range(4))
    results.refresh_index_snapshot(out)
    index, runs = results.read_index_snapshot(out)
    assert runs == [run] and len(index) == 9


# ------------------------------------------------------------------------------------------
# The functions results uses, on disk
# ------------------------------------------------------------------------------------------


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_local_list_dir(tmp_path):
    assert storage.list_dir(str(tmp_path / "missing")) == ([], [])
    storage.write_bytes(str(tmp_path / "b.parquet"), b"1")
    storage.write_bytes(str(tmp_path / "a" / "x"), b"1")
    (tmp_path / ".b.parquet.0123456789ab.tmp").write_bytes(b"in flight")
    assert storage.list_dir(str(tmp_path)) == (["b.parquet"], ["a"])
    assert storage.list_dir(f"file://{tmp_path}/") == (["b.parquet"], ["a"])


def test_parquet_metadata_from_the_footer_alone(tmp_path, monkeypatch):
    big = {b"stylebatch.folded": json.dumps([f"part-{i:06d}.parquet" for i in range(20000)]).encode()}
    uri = str(tmp_path / "c.parquet")
    storage.write_bytes(uri, _parquet(pa.table({"n": list(range(1000))}).replace_schema_metadata(big)))
    reads = []
    real = storage.LocalBackend.read_tail
    monkeypatch.setattr(storage.LocalBackend, "read_tail", lambda self, u, loc, n: reads.append(n) or real(self, u, loc, n))
    meta = storage.read_parquet_metadata(uri)
    assert meta.num_rows == 1000 and meta.metadata[b"stylebatch.folded"] == big[b"stylebatch.folded"]
    assert len(reads) == 2 and reads[1] > reads[0]  # the footer is larger than the first guess
    storage.write_bytes(str(tmp_path / "bad.parquet"), b"not parquet at all")
    with pytest.raises(storage.StorageError, match="not a valid Parquet file"):
        storage.read_parquet_metadata(str(tmp_path / "bad.parquet"))


def test_iter_parquet_tables_in_order_with_schema_columns_and_filter(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.parquet, "_PARQUET_CHUNK", 3)  # several chunks, fetched ahead
    schema = pa.schema([("i", pa.int64()), ("s", pa.string()), ("extra", pa.float64())])
    uris = []
    for i in range(8):
        cols = {"i": [i, i + 100], "s": ["keep", "drop"]}
        if i % 2:
            cols["extra"] = [0.5, 1.5]  # older files lack this column
        uris.append(str(tmp_path / f"part-{i}.parquet"))
        storage.write_bytes(uris[-1], _parquet(pa.table(cols)))
    tables = list(storage.iter_parquet_tables(uris, schema=schema))
    assert [t.column("i").to_pylist() for t in tables] == [[i, i + 100] for i in range(8)]
    assert tables[0].column("extra").null_count == 2 and tables[1].column("extra").to_pylist() == [0.5, 1.5]
    picked = list(storage.iter_parquet_tables(uris, schema=schema, columns=["i", "extra"],
                                              filter=pc.field("s") == "keep"))
    assert [t.column_names for t in picked] == [["i", "extra"]] * 8
    assert [t.column("i").to_pylist() for t in picked] == [[i] for i in range(8)]
    assert [t.num_rows for t in storage.iter_parquet_tables(uris[:2])] == [2, 2]  # no schema: as written
    storage.write_bytes(uris[4], b"garbage")
    with pytest.raises(storage.StorageError, match="part-4.parquet: not a valid Parquet file"):
        list(storage.iter_parquet_tables(uris, schema=schema))
    with pytest.raises(storage.NotFoundError):
        list(storage.iter_parquet_tables([str(tmp_path / "gone.parquet")] + uris, schema=schema))


def test_locations_compared_and_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("photos") == str(tmp_path / "photos")
    assert storage.absolute("file:///x/y") == "file:///x/y" and storage.absolute("s3://b/k") == "s3://b/k"
    assert storage.is_within("photos/out", str(tmp_path / "photos"))
    assert storage.is_within(f"file://{tmp_path}/photos/out", "photos")
    assert not storage.is_within(str(tmp_path / "photos2"), "photos")
    assert storage.is_within("s3://b/any", "s3://b") and not storage.is_within("s3://b/x", "s3://c/x")
    assert storage.is_relative("a/b.jpg") and storage.is_relative("./a:b.jpg")
    assert not storage.is_relative("/a/b.jpg") and not storage.is_relative("s3://b/a.jpg")


def test_uri_errors_match_parse_uri():
    uris = ["/a", "rel/x", "", None, "s3://b/k", "S3://b", "s3:///k", "s3://u:p@b/k", "file:///x",
            "file://localhost/x", "file://host/x", "file:/x", "file:x", "http://x", "data:x", "gs://b/c"]
    errors = storage.uri_errors(uris)
    for i, uri in enumerate(uris):
        if uri is None:
            assert i not in errors
            continue
        try:
            storage.parse_uri(uri)
            assert i not in errors, uri
        except storage.StorageError as exc:
            assert type(errors[i]) is type(exc) and str(errors[i]) == str(exc), uri


# ------------------------------------------------------------------------------------------
# ... and on S3
# ------------------------------------------------------------------------------------------


def test_s3_list_dir_footer_and_parts(s3_prefix):
    assert storage.list_dir(f"{s3_prefix}/nothing") == ([], [])
    table = pa.table({"n": list(range(50))}).replace_schema_metadata({b"k": b"v" * 100_000})  # footer > 64 KiB
    storage.write_bytes(f"{s3_prefix}/r/a.parquet", _parquet(table))
    storage.write_bytes(f"{s3_prefix}/r/b.parquet", _parquet(table.slice(10)))
    storage.write_bytes(f"{s3_prefix}/r/run1/x", b"1")
    storage.write_bytes(f"{s3_prefix}/r2/y", b"1")  # a sibling prefix
    assert storage.list_dir(f"{s3_prefix}/r") == (["a.parquet", "b.parquet"], ["run1"])
    assert storage.list_dir(f"{s3_prefix}/r/") == (["a.parquet", "b.parquet"], ["run1"])
    meta = storage.read_parquet_metadata(f"{s3_prefix}/r/a.parquet")
    assert meta.num_rows == 50 and meta.metadata[b"k"] == b"v" * 100_000
    got = list(storage.iter_parquet_tables([f"{s3_prefix}/r/b.parquet", f"{s3_prefix}/r/a.parquet"],
                                           schema=pa.schema([("n", pa.int64())])))
    assert [t.num_rows for t in got] == [40, 50]
    storage.write_bytes(f"{s3_prefix}/empty", b"")
    assert storage.S3Backend().read_tail(f"{s3_prefix}/empty", storage.parse_uri(f"{s3_prefix}/empty"), 10) == b""
