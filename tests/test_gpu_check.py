"""jobs/gpu_check.py: refuses without a GPU; its job and bare-loop steps work (run here on the CPU)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jobs import gpu_check


def test_without_a_gpu_it_says_so_and_exits_non_zero(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.heavy
def test_a_published_kind_runs_through_submit_and_the_bare_loop(tmp_path):
    manifest, catalog = gpu_check._write_inputs(tmp_path, photos_n=2)
    job = gpu_check._job("fast-neural-style", manifest, catalog, tmp_path / "out", device="cpu")
    assert "error" not in job, job
    assert job["ok"] == 2 and job["images_per_s"] > 0
    outputs = sorted((tmp_path / "out" / "candy").glob("*.jpg"))
    assert len(outputs) == 2 and np.asarray(Image.open(outputs[0])).std() > 0
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "photos").glob("*.jpg"))]
    assert gpu_check._bare("fast-neural-style", catalog, photos, device="cpu") > 0
