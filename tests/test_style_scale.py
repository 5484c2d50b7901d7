"""--style-scale: the model runs at the picture's size divided by the scale, the output comes back full size."""
from __future__ import annotations

import numpy as np
import pytest

from stylebatch.config import JobConfig
from stylebatch.io import images
from stylebatch.pipeline.plan import build_plan
from tests.helpers import photo, write_manifest, write_photo


def test_the_model_sees_the_working_size_and_the_output_has_the_pictures():
    seen = []

    def model(xs):
        seen.extend(x.shape for x in xs)
        return [np.full_like(x, 200) for x in xs]

    imgs = [photo(120, 200, 1), photo(64, 48, 2)]
    out = images.stylize_at_scale(model, imgs, 4.0)
    assert seen == [(30, 50, 3), (16, 12, 3)]
    assert [o.shape for o in out] == [(120, 200, 3), (64, 48, 3)] and all((o == 200).all() for o in out)
    seen.clear()
    assert images.stylize_at_scale(model, imgs, 1.0)[0].shape == (120, 200, 3) and seen[0] == (120, 200, 3)
    seen.clear()
    images.stylize_at_scale(model, imgs[:1], 0.5)  # finer marks: the model runs larger
    assert seen == [(240, 400, 3)]


def test_the_scale_is_checked_and_changes_the_rows_parameters(tmp_path):
    with pytest.raises(ValueError, match="--style-scale"):
        JobConfig(manifest="m", style_scale=0).validate()
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "a", "uri": str(write_photo(tmp_path / "a.jpg", 32, 32, 1))}])

    def key(**kw):
        return build_plan(JobConfig(manifest=str(manifest), output=str(tmp_path / "out"), **kw)).table.column(
            "params_key")[0].as_py()

    assert key() == key(style_scale=1.0) != key(style_scale=2.0)
