"""End to end against a real S3-compatible server (SeaweedFS): S3 manifest + S3 images -> S3 outputs.
The jobs run on the session's shared Ray with the server's credentials (conftest.ray_shared_s3)."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from stylebatch.io import images, results, storage
from tests.helpers import photo, run_cli

pytestmark = pytest.mark.ray


def _put_photo(uri: str, h: int, w: int, seed: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(photo(h, w, seed)).save(buf, format="JPEG", quality=95)
    storage.write_bytes(uri, buf.getvalue())


def test_s3_catalog_to_s3_output_with_rerun_and_change(s3_server, s3_prefix, ray_shared_s3):
    on_shared_ray = {"RAY_ADDRESS": ray_shared_s3.address}
    src = f"{s3_prefix}/catalog"
    sizes = {"shoes/red": (48, 64), "shoes/blue": (64, 40), "bags/tote": (56, 56)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        _put_photo(f"{src}/{name}.jpg", h, w, i)
    storage.write_bytes(f"{src}/notes.txt", b"not an image: ignored by manifest build")
    manifest = f"{s3_prefix}/manifest.parquet"
    out = f"{s3_prefix}/styled"

    built = run_cli("manifest", "build", src, "-o", manifest)
    assert built.returncode == 0, built.stderr
    table = storage.read_parquet_table(manifest)
    assert sorted(table.column("image_id").to_pylist()) == ["bags__tote", "shoes__blue", "shoes__red"]

    first = run_cli("submit", manifest, "--output", out, "--style", "ukiyo", "--max-size", "64", env=on_shared_ray)
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = results.list_runs(out)[-1]
    rows = results.read_results(out, run_id).to_pandas().set_index("image_id")
    assert (rows.status == "ok").all(), rows.error.tolist()
    for image_id, name in (("shoes__red", "shoes/red"), ("shoes__blue", "shoes/blue"), ("bags__tote", "bags/tote")):
        out_uri = f"{out}/ukiyo/{image_id}.jpg"
        assert rows.loc[image_id, "output_uri"] == out_uri
        img = images.decode_image(storage.read_bytes(out_uri))
        assert img.shape[:2] == sizes[name]
        assert rows.loc[image_id, "source_fingerprint"] == storage.stat(f"{src}/{name}.jpg").fingerprint
    metrics = json.loads(storage.read_bytes(results.metrics_uri(out, run_id)))
    assert metrics["counts"]["ok"] == 3

    second = run_cli("submit", manifest, "--output", out, "--style", "ukiyo", "--max-size", "64", env=on_shared_ray)
    assert second.returncode == 0, second.stderr
    rows2 = results.read_results(out, results.list_runs(out)[-1]).to_pandas()
    assert (rows2.status == "skipped").all()

    _put_photo(f"{src}/shoes/red.jpg", 48, 64, 42)  # new ETag
    third = run_cli("submit", manifest, "--output", out, "--style", "ukiyo", "--max-size", "64", env=on_shared_ray)
    assert third.returncode == 0, third.stderr
    rows3 = results.read_results(out, results.list_runs(out)[-1]).to_pandas().set_index("image_id")
    assert rows3.loc["shoes__red", "status"] == "ok"
    assert set(rows3[rows3.status == "skipped"].index) == {"shoes__blue", "bags__tote"}
    keys = sorted(o.uri for o in storage.list_objects(f"{out}/ukiyo"))
    assert keys == sorted(f"{out}/ukiyo/{i}.jpg" for i in rows.index)  # overwritten, never duplicated
