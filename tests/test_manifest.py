from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stylebatch.io import storage
from stylebatch.io.images import encode_image
from stylebatch.io.manifest import ManifestError, build_manifest, image_id_for, read_manifest, validate_manifest

STYLES = ["mosaic", "candy", "udnie"]


def _table(**cols) -> pa.Table:
    return pa.table(cols)


def _problems(table: pa.Table, **kw) -> list[str]:
    with pytest.raises(ManifestError) as ei:
        validate_manifest(table, **kw)
    err = ei.value
    # The message lists every problem.
    for p in err.problems:
        assert p in str(err)
    return err.problems


def _one(table: pa.Table, **kw) -> str:
    problems = _problems(table, **kw)
    assert len(problems) == 1, problems
    return problems[0]


# ------------------------------------------------------------------------------------------
# validate_manifest
# ------------------------------------------------------------------------------------------


def test_valid_manifest_passes():
    t = _table(
        image_id=["a", "b", "c"],
        uri=["/data/a.jpg", "file:///data/b.png", "s3://bucket/c.webp"],
        style=["mosaic", None, "candy"],
        alpha=[0.0, None, 1.0],
        quality=["fast", None, "premium"],
    )
    assert validate_manifest(t, known_styles=STYLES) is None
    assert validate_manifest(t.select(["image_id", "uri"])) is None


def test_missing_required_columns():
    msg = _one(_table(image_id=["a"], path=["/x.jpg"]))
    assert "missing required column 'uri'" in msg and "columns present: image_id, path" in msg
    msg = _one(_table(other=[1]))
    assert "'image_id', 'uri'" in msg


def test_null_and_empty_values_name_rows():
    t = _table(image_id=["a", None, "", "d"], uri=["/a.jpg", "/b.jpg", "/c.jpg", "  "])
    problems = _problems(t)
    assert any("missing or empty image_id in 2 rows: row 1; row 2" in p for p in problems)
    assert any("missing or empty uri in 1 row: row 3 (image_id 'd')" in p for p in problems)


def test_duplicate_ids_named_with_rows():
    t = _table(image_id=["a", "b", "a", "c", "b", "a"], uri=[f"/{i}.jpg" for i in range(6)])
    msg = _one(t)
    assert "duplicate image_id (2 ids repeated)" in msg
    assert "'a' in rows 0, 2, 5" in msg and "'b' in rows 1, 4" in msg


def test_unknown_style_lists_available_styles():
    t = _table(image_id=["a", "b"], uri=["/a.jpg", "/b.jpg"], style=["mosaic", "starry"])
    msg = _one(t, known_styles=STYLES)
    assert "unknown style in 1 row: row 1 (image_id 'b', style 'starry')" in msg
    assert "available styles: candy, mosaic, udnie" in msg
    validate_manifest(t)  # styles not checked when the caller does not know them


def test_alpha_out_of_range_and_nan():
    t = _table(image_id=["a", "b", "c", "d"], uri=["/a", "/b", "/c", "/d"],
               alpha=[0.5, 1.5, -0.1, float("nan")])
    msg = _one(t)
    assert msg.startswith("alpha must be a number between 0 and 1 in 3 rows")
    assert "row 1 (image_id 'b', alpha 1.5)" in msg and "row 2 (image_id 'c', alpha -0.1)" in msg
    assert "row 3 (image_id 'd', alpha nan)" in msg


def test_alpha_non_numeric():
    t = _table(image_id=["a", "b"], uri=["/a", "/b"], alpha=["0.5", "strong"])
    msg = _one(t)
    assert "alpha is not a number in 1 row: row 1 (image_id 'b', alpha 'strong')" in msg
    msg = _one(_table(image_id=["a"], uri=["/a"], alpha=["0.5"]))
    assert "must be stored as numbers" in msg
    validate_manifest(_table(image_id=["a"], uri=["/a"], alpha=pa.array([1], pa.int64())))


def test_quality_values():
    t = _table(image_id=["a", "b", "c"], uri=["/a", "/b", "/c"], quality=["fast", "Premium", "ultra"])
    msg = _one(t)
    assert "quality must be one of fast, premium in 2 rows" in msg
    assert "quality 'Premium'" in msg and "quality 'ultra'" in msg


@pytest.mark.parametrize(
    "bad_id,why",
    [
        ("../../etc/x", "'..' segment"),
        ("/etc/passwd", "absolute path"),
        ("%2e%2e%2fx", "URL-encoded"),
        ("%252E%252E/x", "'..' segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "control character"),
        ("..", "'..' segment"),
    ],
)
def test_unsafe_image_ids(bad_id, why):
    t = _table(image_id=["good", bad_id], uri=["/a.jpg", "/b.jpg"])
    msg = _one(t)
    assert "unsafe image_id" in msg and "row 1" in msg and why in msg


def test_unsupported_uri_scheme_is_named_and_redacted():
    t = _table(
        image_id=["a", "b", "c"],
        uri=["s3://ok/a.jpg", "https://user:hunter2@cdn.example.com/b.jpg?X-Amz-Signature=cafe",
             "gs://x/c.jpg"],
    )
    msg = _one(t)
    assert "unsupported uri (supported: local paths, file://, s3://) in 2 rows" in msg
    assert "row 1 (image_id 'b'" in msg and "scheme 'https'" in msg
    assert "row 2 (image_id 'c'" in msg and "scheme 'gs'" in msg
    assert "hunter2" not in msg and "cafe" not in msg


def test_all_problems_collected_into_one_error():
    t = _table(
        image_id=["a", "a", "../x", None],
        uri=["/a.jpg", "ftp://h/b.jpg", None, "/d.jpg"],
        style=["nope", None, None, None],
        alpha=[2.0, None, None, None],
        quality=["slow", None, None, None],
    )
    problems = _problems(t, known_styles=STYLES)
    kinds = ["missing or empty image_id", "duplicate image_id", "unsafe image_id", "missing or empty uri",
             "unsupported uri", "unknown style", "alpha must be", "quality must be"]
    for kind in kinds:
        assert sum(kind in p for p in problems) == 1, (kind, problems)
    assert len(problems) == len(kinds)
    assert f"has {len(kinds)} problems" in str(ManifestError(problems))


def test_long_lists_are_capped():
    n = 25
    t = _table(image_id=[f"id{i}" for i in range(n)], uri=[None] * n)
    msg = _one(t)
    assert "in 25 rows" in msg and "row 9 (image_id 'id9')" in msg
    assert "row 10 " not in msg and "... and 15 more" in msg


def test_wrong_column_types_reported():
    t = _table(image_id=pa.array([1.5, 2.5]), uri=pa.array([b"/a", b"/b"]))
    problems = _problems(t)
    assert any("column 'image_id' must contain strings, got double" in p for p in problems)
    assert any("column 'uri' must contain strings, got binary" in p for p in problems)


def test_manifest_error_pickles():
    err = ManifestError(["first", "second"], uri="s3://b/m.parquet")
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == ["first", "second"] and str(back) == str(err)
    assert "s3://b/m.parquet has 2 problems" in str(back)


# ------------------------------------------------------------------------------------------
# read_manifest
# ------------------------------------------------------------------------------------------


def test_read_manifest_keeps_known_columns(tmp_path):
    path = str(tmp_path / "m.parquet")
    pq.write_table(
        pa.table({
            "notes": ["x", "y"],
            "uri": ["/a.jpg", "/b.jpg"],
            "image_id": pa.array(["a", "b"]).dictionary_encode(),
            "alpha": pa.array([0, 1], pa.int32()),
        }),
        path,
    )
    t = read_manifest(path)
    assert t.column_names == ["image_id", "uri", "alpha"]
    assert t.column("image_id").type == pa.string()
    assert t.column("alpha").to_pylist() == [0.0, 1.0]
    validate_manifest(t)


def test_read_manifest_errors_name_the_uri(tmp_path):
    missing = str(tmp_path / "missing.parquet")
    with pytest.raises(ManifestError) as ei:
        read_manifest(missing)
    assert missing in str(ei.value) and "not found" in str(ei.value)
    junk = tmp_path / "junk.parquet"
    junk.write_text("image_id,uri\na,/a.jpg\n")
    with pytest.raises(ManifestError) as ei:
        read_manifest(str(junk))
    assert str(junk) in str(ei.value) and "not a valid Parquet file" in str(ei.value)
    with pytest.raises(ManifestError, match="unsupported URI scheme 'http'"):
        read_manifest("http://example.com/m.parquet")


def test_read_manifest_from_s3(s3_prefix):
    storage.write_parquet_table(pa.table({"image_id": ["a"], "uri": ["s3://x/a.jpg"], "extra": [1]}),
                                f"{s3_prefix}/m.parquet")
    t = read_manifest(f"{s3_prefix}/m.parquet")
    assert t.to_pydict() == {"image_id": ["a"], "uri": ["s3://x/a.jpg"]}


# ------------------------------------------------------------------------------------------
# build_manifest
# ------------------------------------------------------------------------------------------

TREE = {
    "shoes/red/01.JPG": "jpeg",
    "shoes/red/02.png": "png",
    "shoes/blue/01.jpeg": "jpeg",
    "hat.webp": "webp",
    "hat.png": "png",  # collides with hat.webp on the extension-less id
    "scan.TIFF": None,
    "notes.txt": None,
    "shoes/readme.md": None,
    ".thumbnails/hat.jpg": "jpeg",
    "shoes/._01.jpg": None,
}
EXPECTED = [  # (relative path, id), in key order
    ("hat.png", "hat.png"),
    ("hat.webp", "hat.webp"),
    ("scan.TIFF", "scan"),
    ("shoes/blue/01.jpeg", "shoes__blue__01"),
    ("shoes/red/01.JPG", "shoes__red__01"),
    ("shoes/red/02.png", "shoes__red__02"),
]


def _tree_bytes() -> dict[str, bytes]:
    img = np.full((4, 4, 3), 200, np.uint8)
    out = {}
    for rel, fmt in TREE.items():
        out[rel] = encode_image(img, fmt) if fmt else b"not an image but named like one" if rel.endswith(
            (".jpg", ".TIFF")) else b"text"
    return out


def _make_tree(root) -> None:
    for rel, data in _tree_bytes().items():
        storage.write_bytes(os.path.join(root, rel), data)


def test_image_id_for():
    assert image_id_for("shoes/red/01.JPG") == "shoes__red__01"
    assert image_id_for("top.png") == "top"
    assert image_id_for("a.b/c.tar.jpg") == "a.b__c.tar"


def test_build_manifest_from_folder(tmp_path):
    src = tmp_path / "catalog"
    _make_tree(src)
    out = str(tmp_path / "out" / "manifest.parquet")
    assert build_manifest(str(src), out) == len(EXPECTED)
    t = read_manifest(out)
    assert t.column("image_id").to_pylist() == [i for _, i in EXPECTED]
    assert t.column("uri").to_pylist() == [str(src / rel) for rel, _ in EXPECTED]
    validate_manifest(t)
    # URIs are absolute and readable even from another working directory.
    for uri in t.column("uri").to_pylist():
        assert os.path.isabs(uri) and storage.exists(uri)


def test_build_manifest_ids_are_stable(tmp_path, monkeypatch):
    a = tmp_path / "a"
    _make_tree(a)
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b)
    build_manifest(str(a), str(tmp_path / "m1.parquet"))
    build_manifest(str(a), str(tmp_path / "m2.parquet"))
    monkeypatch.chdir(tmp_path / "elsewhere")
    build_manifest("copy/", str(tmp_path / "m3.parquet"))  # relative root, trailing slash
    build_manifest(f"file://{b}", str(tmp_path / "m4.parquet"))
    ids = [read_manifest(str(tmp_path / f"m{i}.parquet")).column("image_id").to_pylist()
           for i in (1, 2, 3, 4)]
    assert ids[0] == ids[1] == ids[2] == ids[3] == [i for _, i in EXPECTED]
    assert read_manifest(str(tmp_path / "m3.parquet")).column("uri").to_pylist()[0] == str(b / "hat.png")
    assert read_manifest(str(tmp_path / "m4.parquet")).column("uri").to_pylist()[0] == f"file://{b}/hat.png"


def test_build_manifest_sanitizes_unsafe_file_names(tmp_path):
    src = tmp_path / "src"
    png = encode_image(np.zeros((2, 2, 3), np.uint8), "png")
    for name in ("50%2foff.png", "back\\slash.png", "plain.png"):
        storage.write_bytes(str(src / name), png)
    out = str(tmp_path / "m.parquet")
    assert build_manifest(str(src), out) == 3
    t = read_manifest(out)
    validate_manifest(t)
    assert t.column("image_id").to_pylist() == ["50_2foff", "back_slash", "plain"]


def test_build_manifest_empty_or_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures")
    with pytest.raises(ManifestError, match="no images found under .*empty.*looked for: .jpg"):
        build_manifest(str(tmp_path / "empty"), str(tmp_path / "m.parquet"))
    assert not (tmp_path / "m.parquet").exists()
    with pytest.raises(ManifestError, match="cannot list images under .*nowhere.*not found"):
        build_manifest(str(tmp_path / "nowhere"), str(tmp_path / "m.parquet"))


def test_build_manifest_from_s3_prefix(tmp_path, s3_prefix):
    for rel, data in _tree_bytes().items():
        storage.write_bytes(f"{s3_prefix}/catalog/{rel}", data)
    storage.write_bytes(f"{s3_prefix}/catalog-other/extra.jpg", b"outside the prefix")
    out = f"{s3_prefix}/manifests/m.parquet"
    assert build_manifest(f"{s3_prefix}/catalog", out) == len(EXPECTED)
    t = read_manifest(out)
    assert t.column("image_id").to_pylist() == [i for _, i in EXPECTED]
    assert t.column("uri").to_pylist() == [f"{s3_prefix}/catalog/{rel}" for rel, _ in EXPECTED]
    validate_manifest(t)
    # Same ids as a local build of the same tree.
    _make_tree(tmp_path / "local")
    build_manifest(str(tmp_path / "local"), str(tmp_path / "local.parquet"))
    assert read_manifest(str(tmp_path / "local.parquet")).column("image_id").to_pylist() == t.column(
        "image_id").to_pylist()
    with pytest.raises(ManifestError, match="no images found"):
        build_manifest(f"{s3_prefix}/nothing", f"{s3_prefix}/m2.parquet")
