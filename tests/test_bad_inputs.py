"""The real job over every awkward input a catalog contains (tests/corpus.py), plus S3 objects the
job may not read or that do not exist: the run finishes, every row gets a result with a message a
catalog owner can act on, good images come out upright at their own size, and nothing is lost.
Unreadable or invalid manifests stop the CLI before any work (exit 2)."""
from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stylebatch.io import results
from tests.corpus import BOMB_SIDE, make_bad_input_corpus
from tests.helpers import photo, run_cli, write_manifest

pytestmark = pytest.mark.ray


def _mean(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, 3).astype(float).mean(0)


def _dominant(rgb: np.ndarray) -> str:
    """'red', 'green' or 'blue' when one channel clearly leads (with --preserve-color the hue of the
    content survives stylization even though the exact values do not)."""
    order = np.argsort(rgb)[::-1]
    if rgb[order[0]] - rgb[order[1]] < 20:
        return "none"
    return ("red", "green", "blue")[order[0]]


def _jpeg(h: int, w: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(h, w, seed)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_bad_input_corpus_through_the_real_job(tmp_path, s3_server):
    cases = make_bad_input_corpus(tmp_path / "corpus")
    assert len(cases) >= 15
    expected = {c.name: c for c in cases}

    # S3 rows, read with the reader identity (Read/List on the readable bucket only).
    admin = s3_server.client()
    prefix = f"bad-inputs-{uuid.uuid4().hex[:8]}"
    admin.put_object(Bucket=s3_server.denied_bucket, Key=f"{prefix}/private.jpg", Body=_jpeg(20, 30, 1))
    admin.put_object(Bucket=s3_server.readable_bucket, Key=f"{prefix}/ok.jpg", Body=_jpeg(20, 30, 2))
    s3_rows = {
        "s3_denied": (f"s3://{s3_server.denied_bucket}/{prefix}/private.jpg", "error", ("denied", "accessdenied")),
        "s3_missing": (f"s3://{s3_server.readable_bucket}/{prefix}/no-such-object.jpg", "error", ("not found",)),
        "s3_ok": (f"s3://{s3_server.readable_bucket}/{prefix}/ok.jpg", "ok", None),
        "file_uri_missing": ((tmp_path / "gone" / "photo.png").as_uri(), "error", ("not found",)),
    }
    rows = [{"image_id": c.name, "uri": c.path} for c in cases]
    rows += [{"image_id": k, "uri": v[0]} for k, v in s3_rows.items()]
    manifest = write_manifest(tmp_path / "manifest.parquet", rows)
    out = tmp_path / "out"

    run = run_cli("submit", str(manifest), "--output", str(out), "--alpha", "0", "--preserve-color",
                  env={"AWS_ACCESS_KEY_ID": s3_server.reader_access_key,
                       "AWS_SECRET_ACCESS_KEY": s3_server.reader_secret_key,
                       "STYLEBATCH_IO_RETRY_SECONDS": "5"}, timeout=400)
    log = run.stdout + run.stderr
    n_ok = sum(c.expect == "ok" for c in cases) + 1
    n_err = len(rows) - n_ok
    # The job finishes; rows that failed make the exit code 1 (not a crash, not a hang).
    assert run.returncode == 1, log
    assert f"{len(rows)} rows  ok {n_ok}  skipped 0  error {n_err}" in run.stdout, log
    assert "Traceback" not in log

    run_id = results.list_runs(str(out))[-1]
    table = results.read_results(str(out), run_id).to_pandas()
    # Every row has exactly one result: nothing lost, nothing duplicated.
    assert len(table) == len(rows)
    assert table.image_id.is_unique
    assert set(table.image_id) == {r["image_id"] for r in rows}
    r = table.set_index("image_id")

    metrics = json.loads((out / "_runs" / run_id / "metrics.json").read_text())
    assert metrics["total_rows"] == len(rows)
    assert metrics["counts"] == {"ok": n_ok, "error": n_err, "skipped": 0}

    styled = out / "cyberpunk"
    for name, case in expected.items():
        row = r.loc[name]
        if case.expect == "ok":
            assert row.status == "ok", (name, row.error)
            assert row.output_uri == str(styled / f"{name}.jpg")
            img = np.asarray(Image.open(row.output_uri).convert("RGB"))
            assert img.shape[:2] == case.size, name  # upright (h, w); tiny images never upscaled
            assert (row.output_height, row.output_width) == case.size, name
            assert (row.input_height, row.input_width) == case.size, name
            assert row.output_bytes > 0 and row.worker
        else:
            assert row.status == "error", name
            assert case.message in row.error, (name, row.error)
            assert "\n" not in row.error and len(row.error) < 400, row.error
            assert not (styled / f"{name}.jpg").exists(), name
            assert row.output_width == 0 and row.output_bytes == 0

    for name, (uri, status, needles) in s3_rows.items():
        row = r.loc[name]
        assert row.status == status, (name, row.error)
        if needles:
            assert any(n in row.error.lower() for n in needles), (name, row.error)
            assert uri.split("://", 1)[1].split("/", 1)[-1] in row.error  # names the object
            assert s3_server.reader_secret_key not in row.error
    assert (r.loc["s3_ok", "output_height"], r.loc["s3_ok", "output_width"]) == (20, 30)

    # The decompression bomb is refused from its header by the pixel cap, never decoded.
    bomb = r.loc["decompression_bomb"]
    assert f"{BOMB_SIDE}x{BOMB_SIDE}" in bomb.error and "megapixel limit" in bomb.error
    assert bomb.input_width == 0 and bomb.read_ms < 30_000

    # EXIF orientation 6: stored 60x40 with red on the left; upright is 40 wide x 60 tall,
    # red on top, blue at the bottom.
    rot = np.asarray(Image.open(styled / "exif_rotated_jpeg.jpg").convert("RGB"))
    assert _dominant(_mean(rot[:15])) == "red" and _dominant(_mean(rot[-15:])) == "blue"
    # Animated images: the first frame (red), not the green or blue ones.
    for name in ("animated_gif", "animated_webp"):
        frame = np.asarray(Image.open(styled / f"{name}.jpg").convert("RGB"))
        assert _dominant(_mean(frame)) == "red", (name, _mean(frame))
    # BMP halves: red left, blue right.
    bmp = np.asarray(Image.open(styled / "bmp.jpg").convert("RGB"))
    assert _dominant(_mean(bmp[:, :4])) == "red" and _dominant(_mean(bmp[:, -4:])) == "blue"
    # 1x1 works end to end (the model needs a minimum size; the output keeps the input's).
    assert np.asarray(Image.open(styled / "one_pixel.jpg")).shape[:2] == (1, 1)

    # Only the good rows produced files.
    assert sorted(p.stem for p in styled.iterdir()) == sorted(
        [c.name for c in cases if c.expect == "ok"] + ["s3_ok"])


def _no_output(out: Path) -> None:
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


def test_unreadable_manifest_is_refused(tmp_path):
    bad = tmp_path / "catalog.parquet"
    bad.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    run = run_cli("submit", str(bad), "--output", str(out))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "cannot read manifest" in run.stderr and "not a valid Parquet file" in run.stderr
    assert str(bad) in run.stderr
    assert "Traceback" not in run.stderr
    _no_output(out)


@pytest.mark.parametrize("rows, needles", [
    ([{"image_id": "shoe", "uri": "/data/a.jpg"}, {"image_id": "bag", "uri": "/data/b.jpg"},
      {"image_id": "shoe", "uri": "/data/c.jpg"}],
     ["duplicate image_id", "'shoe' in rows 0, 2"]),
    ([{"image_id": "shoe"}, {"image_id": "bag"}], ["missing required column 'uri'", "columns present: image_id"]),
    ([{"uri": "/data/a.jpg"}], ["missing required column 'image_id'"]),
])
def test_invalid_manifest_is_refused_before_any_work(tmp_path, rows, needles):
    manifest = pd.DataFrame(rows)
    path = tmp_path / "manifest.parquet"
    manifest.to_parquet(path)
    out = tmp_path / "out"
    # --strict: a repeated id is otherwise a row-level error (the first row runs; test_pipeline)
    run = run_cli("submit", str(path), "--output", str(out), "--strict")
    assert run.returncode == 2, run.stdout + run.stderr
    for needle in needles:
        assert needle in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    _no_output(out)
