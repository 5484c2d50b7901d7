"""Planning on the driver (no Ray): what each manifest row becomes before any work."""
from __future__ import annotations

import pytest

from stylebatch.config import JobConfig
from stylebatch.io.manifest import ManifestError
from stylebatch.pipeline.plan import build_plan
from stylebatch.styles.catalog import StyleError
from tests.helpers import write_manifest, write_photo


def _cfg(tmp_path, manifest, **kw):
    return JobConfig(manifest=str(manifest), output=str(tmp_path / "out"), max_size=64, **kw)


def test_rows_that_cannot_run_are_planned_as_errors(tmp_path):
    good = write_photo(tmp_path / "g.jpg", 32, 32, 7)
    manifest = write_manifest(tmp_path / "m.parquet", [
        {"image_id": "g", "uri": str(good), "style": None, "alpha": None},
        {"image_id": "../../etc/x", "uri": str(good), "style": None, "alpha": None},
        {"image_id": "n", "uri": None, "style": None, "alpha": None},
        {"image_id": "a7", "uri": str(good), "style": None, "alpha": 7.0},
        {"image_id": "s", "uri": str(good), "style": "no-such-style", "alpha": None},
        {"image_id": "g", "uri": str(good), "style": None, "alpha": None},
    ])
    plan = build_plan(_cfg(tmp_path, manifest))
    rows = plan.table.to_pylist()
    errors = [r["plan_error"] for r in rows]
    assert errors[0] == "" and rows[0]["output_uri"].endswith("cyberpunk/g.jpg") and rows[0]["model"]
    assert "unsafe image_id" in errors[1] and "'..'" in errors[1]
    assert "missing or empty uri" in errors[2]
    assert "alpha 7.0" in errors[3] and "between 0 and 1" in errors[3]
    assert "unknown style 'no-such-style'" in errors[4] and "cyberpunk" in errors[4]
    assert "duplicate image_id 'g' (first in row 0)" in errors[5]
    # A row that cannot run never gets an output key or a model.
    assert all(r["output_uri"] is None and r["model"] == "" for r in rows[1:])
    assert plan.counts["invalid"] == 5 and plan.counts["fast"] == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rows, message", [
    ([{"image_id": "a"}], "uri"),
    ([{"image_id": "a", "uri": "/x.jpg"}, {"image_id": "a", "uri": "/y.jpg"}], "duplicate"),
    ([{"image_id": "a", "uri": None}], "uri"),
    ([{"image_id": "../../etc/x", "uri": "/x.jpg"}], "../../etc/x"),
    ([{"image_id": "a", "uri": "/x.jpg", "style": "no-such-style"}], "cyberpunk"),
])
def test_strict_validation_errors_stop_before_any_work(tmp_path, rows, message):
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    with pytest.raises((ManifestError, StyleError)) as exc:
        build_plan(_cfg(tmp_path, manifest, strict=True))
    assert message in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_unknown_default_style_lists_available(tmp_path):
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "a", "uri": "/x.jpg"}])
    with pytest.raises((ManifestError, StyleError)) as exc:
        build_plan(_cfg(tmp_path, manifest, style="vaporwave-9000"))
    assert "vaporwave-9000" in str(exc.value) and "ukiyo" in str(exc.value)


def test_a_rows_style_may_be_an_image_uri(tmp_path):
    from PIL import Image

    from stylebatch.pipeline.plan import custom_style_name
    from tests.helpers import photo, write_manifest, write_photo

    painting = write_photo(tmp_path / "styles" / "painting.png", 64, 64, 9, fmt="PNG")
    (tmp_path / "styles" / "notes.jpg").write_text("this is text, not a picture")
    Image.fromarray(photo(1, 1, 3)).save(tmp_path / "styles" / "dot.png")
    rows = [{"image_id": f"p{i}", "uri": str(write_photo(tmp_path / f"p{i}.jpg", 32, 32, i)), "style": s}
            for i, s in enumerate([str(painting), f"file://{painting}", "ink", str(tmp_path / "styles" / "notes.jpg"),
                                   str(tmp_path / "styles" / "dot.png"), str(tmp_path / "styles" / "gone.jpg")])]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    plan = build_plan(JobConfig(manifest=str(manifest), output=str(tmp_path / "out")))
    table = plan.table.to_pylist()
    assert table[0]["style"] == custom_style_name(str(painting)) and table[0]["model"] == "adain"
    assert table[0]["output_uri"].startswith(str(tmp_path / "out" / custom_style_name(str(painting))))
    assert table[1]["style"] == custom_style_name(f"file://{painting}") and table[1]["model"] == "adain"
    assert table[2]["style"] == "ink" and table[2]["model"] == "network"
    assert "cannot decode" in table[3]["plan_error"] and table[3]["output_uri"] is None
    assert table[4]["model"] == "adain" and not table[4]["plan_error"]
    assert "cannot read style image" in table[5]["plan_error"]
    assert plan.styles[table[0]["style"]].images[0].shape == (64, 64, 3)
