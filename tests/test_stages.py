"""The three stages as plain functions of in-memory batches (no Ray): each hands the next exactly
the declared columns, and a row that fails only fails itself."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from stylebatch.io import results, storage
from stylebatch.config import JobConfig
from stylebatch.models import registry
from stylebatch.pipeline.plan import build_plan
from stylebatch.pipeline.stages import StylizeStage, check_batch, fetch_batch, write_batch
from tests.helpers import write_manifest, write_photo


def _numpy_batch(table: pa.Table) -> dict:
    """What Ray Data's numpy batch format hands a stage."""
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


@pytest.fixture
def planned(tmp_path):
    good = write_photo(tmp_path / "src" / "good.jpg", 40, 56, 1)
    other = write_photo(tmp_path / "src" / "other.png", 32, 32, 2, fmt="PNG")
    (tmp_path / "src" / "bad.jpg").write_bytes(b"<html>404</html>")
    manifest = write_manifest(tmp_path / "m.parquet", [
        {"image_id": "good", "uri": str(good)}, {"image_id": "bad", "uri": str(tmp_path / "src" / "bad.jpg")},
        {"image_id": "other", "uri": str(other)}])
    cfg = JobConfig(manifest=str(manifest), output=str(tmp_path / "out"), max_size=32)
    return cfg, build_plan(cfg)


def test_stages_hand_each_other_the_declared_columns(planned):
    cfg, plan = planned
    batch = _numpy_batch(plan.table)
    check_batch(batch, "plan")

    fetched = fetch_batch(batch, max_size=cfg.max_size, max_pixels=cfg.max_pixels)
    check_batch(fetched, "fetched")
    assert list(fetched["status"]) == ["pending", "error", "pending"]
    assert "looks like HTML" in fetched["error"][1] and fetched["image"][0].shape == (23, 32, 3)

    stage = StylizeStage(model_kind=plan.table.column("model")[0].as_py(), options=cfg.model_options(),
                         styles=plan.styles)
    stylized = stage(fetched)
    check_batch(stylized, "stylized")
    assert stylized["stylized"][0].shape == (23, 32, 3) and list(stylized["attempt"]) == [1, 1, 1]

    rows = write_batch(stylized, out_uri=cfg.output, run_id="r1", fmt="png", quality=90)
    assert set(rows) <= set(results.RESULT_SCHEMA.names)
    assert list(rows["status"]) == ["ok", "error", "ok"]
    written = results.read_results(cfg.output, "r1").to_pylist()
    assert sorted(r["image_id"] for r in written) == ["bad", "good", "other"]
    assert storage.exists(rows["output_uri"][0]) and rows["output_bytes"][0] > 0


def test_check_batch_names_what_is_wrong(planned):
    cfg, plan = planned
    batch = _numpy_batch(plan.table)
    with pytest.raises(ValueError, match=r"fetched batch: missing columns \['error', 'image'"):
        check_batch(batch, "fetched")
    batch["alpha"] = batch["alpha"].astype(object)
    with pytest.raises(ValueError, match="column 'alpha' has dtype kind 'O', expected 'f'"):
        check_batch(batch, "plan")


class _Flaky:
    """Fails any batch holding the image whose top-left pixel is 0, and that image alone."""

    def stylize(self, imgs, style, *, alpha=1.0, preserve_color=False):
        if any(im[0, 0, 0] == 0 for im in imgs):
            raise RuntimeError("cannot stylize this one")
        return [255 - im for im in imgs]


def test_a_failing_image_fails_its_row_and_counts_a_retry(monkeypatch):
    kind = registry.ModelKind("flaky", "fast", lambda style: True, lambda opts: _Flaky(), lambda opts: None)
    monkeypatch.setitem(registry.KINDS, "flaky", kind)
    imgs = [np.full((4, 4, 3), v, np.uint8) for v in (10, 0, 20)]
    n = len(imgs)
    batch = {"image_id": np.array(["a", "b", "c"], object), "uri": np.array(["/a", "/b", "/c"], object),
             "style": np.array(["s"] * n, object), "alpha": np.ones(n), "preserve_color": np.zeros(n, bool),
             "output_uri": np.array(["/o/a", "/o/b", "/o/c"], object), "status": np.array(["pending"] * n, object),
             "error": np.array([""] * n, object), "image": np.array(imgs + [None], object)[:n]}
    out = StylizeStage(model_kind="flaky", options=registry.ModelOptions(), styles={"s": None})(batch)
    assert list(out["status"]) == ["pending", "error", "pending"]
    assert "cannot stylize this one" in out["error"][1]
    assert list(out["attempt"]) == [2, 2, 2]  # the batch failed once; each image then ran alone
    assert np.array_equal(out["stylized"][2], 255 - imgs[2])


def test_an_image_that_cannot_be_encoded_is_an_error_row(planned):
    cfg, plan = planned
    fetched = fetch_batch(_numpy_batch(plan.table), max_size=cfg.max_size, max_pixels=cfg.max_pixels)
    stage = StylizeStage(model_kind=plan.table.column("model")[0].as_py(), options=cfg.model_options(),
                         styles=plan.styles)
    stylized = stage(fetched)
    stylized["stylized"][2] = np.zeros((0, 5, 3), np.uint8)  # nothing to encode
    rows = write_batch(stylized, out_uri=cfg.output, run_id="r1", fmt="webp", quality=80)
    assert list(rows["status"]) == ["ok", "error", "error"]
    assert rows["error"][2].startswith("could not write output")
    assert not storage.exists(rows["output_uri"][2].replace(".jpg", ".webp"))
