"""The nightly entrypoint: only new or changed images are restyled, last_success.json tracks clean runs.

The end-to-end test runs its nights on the session's shared local Ray (conftest.ray_shared; restyle
reuses an initialised Ray), so none of them pays for starting one. The fast tests check input
handling without Ray.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import nightly as nightly_job
from stylebatch import nightly
from stylebatch.io import results, storage

OPTIONS = dict(style="cyberpunk", max_size=64, batch_size=4, device="cpu")


def _write_png(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    tmp = f"{path}.new"
    Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, path)  # how a sync tool lands an edited file: a new inode, new bytes


def _counts(result) -> dict[str, int]:
    c = result.summary.metrics["counts"]
    return {s: int(c.get(s, 0)) for s in ("ok", "skipped", "error")}


def _statuses(out: str, run_id: str) -> dict[str, str]:
    table = results.read_results(out, run_id, columns=["image_id", "status"])
    return dict(zip(table.column("image_id").to_pylist(), table.column("status").to_pylist()))


@pytest.fixture
def ray_joined(ray_shared):
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_shared.address, logging_level="WARNING")
    yield
    ray.shutdown()


def test_nightly_restyles_only_new_and_changed(tmp_path, ray_joined, capsys):
    catalog, out = tmp_path / "catalog", str(tmp_path / "styled")
    catalog.mkdir()
    for seed, name in enumerate("abc"):
        _write_png(catalog / f"{name}.png", seed)

    # Night 1: everything is new.
    first = nightly.run_nightly(source=str(catalog), output=out, **OPTIONS)
    run1 = first.summary.run_id
    assert _counts(first) == {"ok": 3, "skipped": 0, "error": 0}
    assert _statuses(out, run1) == {"a": "ok", "b": "ok", "c": "ok"}
    assert first.manifest == nightly.manifest_uri(out, run1)
    assert pq.read_table(first.manifest).num_rows == 3
    b_output = tmp_path / "styled" / "cyberpunk" / "b.jpg"
    b_before = b_output.read_bytes()
    record = json.loads((tmp_path / "styled" / "_nightly" / "last_success.json").read_text())
    assert record["run_id"] == run1 and record["previous_run_id"] is None
    assert record["counts"] == {"ok": 3, "error": 0, "skipped": 0}

    # Night 2: nothing changed, nothing is redone.
    second = nightly.run_nightly(source=str(catalog), output=out, **OPTIONS)
    assert _counts(second) == {"ok": 0, "skipped": 3, "error": 0}
    assert second.previous_success["run_id"] == run1
    assert nightly.read_last_success(out)["run_id"] == second.summary.run_id

    # Night 3: one image edited, one added; exactly those two are restyled.
    _write_png(catalog / "b.png", 100)
    _write_png(catalog / "d.png", 101)
    third = nightly.run_nightly(source=str(catalog), output=out, **OPTIONS)
    run3 = third.summary.run_id
    assert _counts(third) == {"ok": 2, "skipped": 2, "error": 0}
    assert _statuses(out, run3) == {"a": "skipped", "b": "ok", "c": "skipped", "d": "ok"}
    assert b_output.read_bytes() != b_before
    assert (tmp_path / "styled" / "cyberpunk" / "d.jpg").is_file()
    record = nightly.read_last_success(out)
    assert record["run_id"] == run3 and record["previous_run_id"] == second.summary.run_id
    assert record["counts"] == {"ok": 2, "error": 0, "skipped": 2} and record["total_rows"] == 4
    assert record["source"] == str(catalog)
    assert record["manifest"] == nightly.manifest_uri(out, run3)

    # Night 4, through the job entrypoint: a corrupt upload fails its row, the job exits 1
    # and last_success.json still names night 3.
    (catalog / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    capsys.readouterr()
    code = nightly_job.main(["--source", str(catalog), "--output", out, "--style", "cyberpunk",
                             "--max-size", "64", "--batch-size", "4", "--device", "cpu"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "ok 0  skipped 4  error 1" in printed
    run4 = results.list_runs(out)[-1]
    assert _statuses(out, run4)["e"] == "error"
    assert nightly.read_last_success(out)["run_id"] == run3


def test_source_and_manifest_are_exclusive(tmp_path, capsys):
    with pytest.raises(ValueError, match="exactly one"):
        nightly.run_nightly(output=str(tmp_path / "out"), **OPTIONS)
    with pytest.raises(ValueError, match="exactly one"):
        nightly.run_nightly(output=str(tmp_path / "out"), source=str(tmp_path), manifest="m.parquet", **OPTIONS)
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit 2
        nightly_job.main(["--source", str(tmp_path), "--manifest", "m.parquet", "--output", "o"])
    assert exc.value.code == 2


def test_output_inside_source_is_refused_before_any_work(tmp_path, capsys):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    _write_png(catalog / "a.png", 0)
    code = nightly_job.main(["--source", str(catalog), "--output", str(catalog / "styled")])
    assert code == 2
    assert "inside --source" in capsys.readouterr().err
    assert not (catalog / "styled").exists()
    # Prefix siblings are not "inside": /x/catalog2 is not under /x/catalog.
    assert not storage.is_within(str(tmp_path / "catalog2"), str(catalog))
    assert storage.is_within("s3://b/catalog/styled", "s3://b/catalog/")
    assert not storage.is_within("s3://other/catalog/styled", "s3://b/catalog")


def test_bad_options_exit_2_without_scanning(tmp_path, capsys):
    code = nightly_job.main(["--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o"),
                             "--alpha", "1.5"])
    assert code == 2
    assert "--alpha" in capsys.readouterr().err
    code = nightly_job.main(["--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "cannot list images" in capsys.readouterr().err


def test_run_id_becomes_the_manifest_name(tmp_path):
    assert nightly.manifest_uri("s3://b/styled", "nightly-1").endswith("/_nightly/manifests/nightly-1.parquet")
    with pytest.raises(ValueError):
        nightly.manifest_uri("s3://b/styled", "../escape")
    assert nightly.read_last_success(str(tmp_path)) is None
