"""Memory planned from picture sizes: actor and fetch reservations, and a row error for a picture no node holds."""
from __future__ import annotations

import numpy as np

from stylebatch.config import JobConfig
from stylebatch.models import registry
from stylebatch.pipeline.memory import HEADROOM, job_pixels, plan_memory, too_large
from stylebatch.pipeline.stages import fetch_batch
from tests.helpers import write_photo

GIB = 2**30


def test_an_actor_reserves_what_the_largest_admitted_picture_needs():
    small = plan_memory("network", JobConfig(manifest="m", max_size=512), node_bytes=16 * GIB)
    big = plan_memory("network", JobConfig(manifest="m", max_size=None), node_bytes=64 * GIB)
    assert job_pixels(JobConfig(manifest="m", max_size=512)) == 512 * 512
    assert small.pixel_limit == 512 * 512 and small.actor_bytes < big.actor_bytes
    assert big.actor_bytes == int(registry.KINDS["network"].memory.bytes_for(64_000_000) * HEADROOM)
    # A tiling kind's need grows with the picture's buffers only: 24 MP fits a few GiB.
    assert registry.KINDS["network"].memory.bytes_for(24_000_000) < 4 * GIB


def test_a_small_node_caps_the_reservation_and_the_pictures_it_takes():
    plan = plan_memory("gatys", JobConfig(manifest="m", max_size=None), node_bytes=8 * GIB)
    assert plan.actor_bytes == 8 * GIB
    need = registry.KINDS["gatys"].memory
    assert 0 < plan.pixel_limit < 64_000_000
    assert need.bytes_for(plan.pixel_limit) * HEADROOM <= 8 * GIB < need.bytes_for(plan.pixel_limit + 10_000) * HEADROOM
    assert too_large(plan, 100, 100) == ""
    message = too_large(plan, 3000, 4000)
    assert "12 MP" in message and "gatys" in message and "8.0 GiB" in message and "--max-size" in message


def test_fetch_fails_only_the_row_too_large_for_any_node(tmp_path):
    small = write_photo(tmp_path / "small.jpg", 40, 60, 1)
    large = write_photo(tmp_path / "large.jpg", 400, 600, 2)
    plan = plan_memory("gatys", JobConfig(manifest="m", max_size=None), node_bytes=0)
    plan = plan.__class__(plan.kind, plan.actor_bytes, 50_000, 8 * GIB, plan.fetch_bytes)
    batch = {"image_id": np.array(["s", "l"], dtype=object), "uri": np.array([str(small), str(large)], dtype=object),
             "done_fingerprint": np.array(["", ""], dtype=object), "output_uri": np.array(["o1", "o2"], dtype=object)}
    out = fetch_batch(batch, max_size=None, max_pixels=64_000_000, memory=plan)
    assert list(out["status"]) == ["pending", "error"]
    assert "600x400" in out["error"][1] and out["image"][0].shape == (40, 60, 3) and out["image"][1].size == 0
