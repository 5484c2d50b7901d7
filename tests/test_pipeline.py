"""End to end on a real local Ray: local files -> local outputs, results, metrics, reruns.

Every job here, in this process or through the CLI, runs on the session's shared local Ray
(conftest.ray_shared): what is tested is the job, not Ray's start."""
from __future__ import annotations

import json
import os

import duckdb
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stylebatch.io import images, results
from stylebatch.config import JobConfig
from stylebatch.pipeline.driver import restyle
from tests.helpers import photo, run_cli, write_manifest, write_photo

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_local(ray_shared):
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_shared.address, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def cli(ray_shared):
    """run_cli with the CLI's jobs on the shared Ray."""
    return lambda *args, **kw: run_cli(*args, env={"RAY_ADDRESS": ray_shared.address}, **kw)


@pytest.fixture
def catalog(tmp_path):
    src = tmp_path / "src"
    paths = {
        "wide": write_photo(src / "wide.jpg", 48, 96, 1),
        "tall": write_photo(src / "tall.png", 80, 40, 2, fmt="PNG"),
        "square": write_photo(src / "square.jpg", 64, 64, 3),
    }
    Image.fromarray(photo(40, 56, 4)[..., 0]).save(src / "gray.png")
    paths["gray"] = src / "gray.png"
    (src / "broken.jpg").write_bytes(b"<html><body>404 Not Found</body></html>")
    paths["broken"] = src / "broken.jpg"
    rows = [{"image_id": k, "uri": str(v)} for k, v in paths.items()]
    return tmp_path, write_manifest(tmp_path / "manifest.parquet", rows), paths


def _cfg(tmp_path, manifest, **kw):
    kw.setdefault("max_size", 64)
    return JobConfig(manifest=str(manifest), output=str(tmp_path / "out"), **kw)


def test_local_job_writes_outputs_results_and_metrics(ray_local, catalog):
    tmp_path, manifest, paths = catalog
    summary = restyle(_cfg(tmp_path, manifest))
    out = tmp_path / "out"

    table = results.read_results(str(out), summary.run_id).to_pandas().set_index("image_id")
    assert sorted(table.index) == sorted(paths)
    assert table.loc["broken", "status"] == "error"
    assert "HTML" in table.loc["broken", "error"]
    ok = table[table.status == "ok"]
    assert len(ok) == 4
    # Aspect kept, longer side capped at max_size (64), never upscaled.
    expected = {"wide": (32, 64), "tall": (64, 32), "square": (64, 64), "gray": (40, 56)}
    for image_id, (h, w) in expected.items():
        path = out / "cyberpunk" / f"{image_id}.jpg"
        assert table.loc[image_id, "output_uri"] == str(path)
        img = np.asarray(Image.open(path))
        assert img.shape == (h, w, 3)
        assert (table.loc[image_id, "output_height"], table.loc[image_id, "output_width"]) == (h, w)
        src = images.resize_to_max(images.decode_image(paths[image_id].read_bytes()), 64)
        # Stylized, not copied: pixels move well away from the source.
        assert np.abs(img.astype(float) - src.astype(float)).mean() > 10
    assert (ok.model_ms > 0).all() and (ok.read_ms > 0).all() and (ok.write_ms > 0).all()
    assert not (out / "cyberpunk" / "broken.jpg").exists()

    metrics = json.loads((out / "_runs" / summary.run_id / "metrics.json").read_text())
    assert metrics["counts"] == {"ok": 4, "error": 1, "skipped": 0}
    assert metrics["total_rows"] == 5 and metrics["images_per_s"] > 0
    assert metrics["latency_ms"]["p95"] >= metrics["latency_ms"]["p50"] > 0
    assert metrics["config"]["style"] == "cyberpunk" and "torch" in metrics["versions"]

    run_dir = out / "_runs" / summary.run_id / "results"
    assert len(pd.read_parquet(run_dir)) == 5
    counts = dict(duckdb.sql(f"select status, count(*) from read_parquet('{run_dir}/*.parquet') group by 1").fetchall())
    assert counts == {"ok": 4, "error": 1}
    assert summary.failed == 1


def test_rerun_skips_done_rows_and_redoes_changed_sources(ray_local, catalog):
    tmp_path, manifest, paths = catalog
    cfg = _cfg(tmp_path, manifest)
    restyle(cfg)
    out = tmp_path / "out" / "cyberpunk"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}

    second = restyle(_cfg(tmp_path, manifest))
    r2 = results.read_results(cfg.output, second.run_id).to_pandas().set_index("image_id")
    assert set(r2[r2.status == "skipped"].index) == {"wide", "tall", "square", "gray"}
    assert r2.loc["broken", "status"] == "error"  # errors are retried, never silently skipped
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before

    write_photo(paths["square"], 64, 64, 99)  # the catalog changed one image
    third = restyle(_cfg(tmp_path, manifest))
    r3 = results.read_results(cfg.output, third.run_id).to_pandas().set_index("image_id")
    assert r3.loc["square", "status"] == "ok"
    assert set(r3[r3.status == "skipped"].index) == {"wide", "tall", "gray"}
    assert (out / "square.jpg").read_bytes() != before["square.jpg"][1]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # overwritten, nothing added

    forced = restyle(_cfg(tmp_path, manifest, overwrite=True))
    assert results.read_metrics(cfg.output, forced.run_id)["counts"]["ok"] == 4


def test_changed_parameters_redo_rows(ray_local, catalog):
    tmp_path, manifest, _ = catalog
    restyle(_cfg(tmp_path, manifest))
    again = restyle(_cfg(tmp_path, manifest, alpha=0.5))
    assert results.read_metrics(str(tmp_path / "out"), again.run_id)["counts"]["ok"] == 4


def test_per_row_style_alpha_and_premium_routing(ray_local, tmp_path):
    a = write_photo(tmp_path / "a.jpg", 40, 40, 5)
    b = write_photo(tmp_path / "b.jpg", 40, 40, 5)
    c = write_photo(tmp_path / "c.jpg", 40, 40, 5)
    manifest = write_manifest(tmp_path / "m.parquet", [
        {"image_id": "a", "uri": str(a), "style": "pop", "alpha": None, "quality": None},
        {"image_id": "b", "uri": str(b), "style": None, "alpha": 0.0, "quality": "fast"},
        {"image_id": "c", "uri": str(c), "style": None, "alpha": None, "quality": "premium"},
    ])
    # Premium starts from the photo: 3 L-BFGS iterations move a 40 px image by ~2 grey levels, 10 by ~19.
    summary = restyle(_cfg(tmp_path, manifest, premium_iterations=10))
    r = results.read_results(summary.output, summary.run_id).to_pandas().set_index("image_id")
    assert (r.status == "ok").all(), r.error.tolist()
    assert r.loc["a", "style"] == "pop" and r.loc["a", "output_uri"].endswith("/pop/a.jpg")
    assert r.loc["c", "quality"] == "premium" and r.loc["b", "quality"] == "fast"
    outs = {k: np.asarray(Image.open(r.loc[k, "output_uri"])).astype(float) for k in "abc"}
    # alpha 0 from the manifest reached the model: a preset's network blends with the photo, so
    # the output is the photo (AdaIN's alpha 0 would be its decoder's reconstruction instead).
    photo_b = np.asarray(Image.open(b).convert("RGB")).astype(float)
    recon_err = np.abs(outs["b"] - photo_b).mean()  # JPEG noise only
    assert recon_err < 6
    assert np.abs(outs["a"] - outs["b"]).mean() > 2 * recon_err
    assert np.abs(outs["c"] - outs["b"]).mean() > 2 * recon_err
    metrics = results.read_metrics(summary.output, summary.run_id)
    assert metrics["per_quality"]["premium"]["ok"] == 1 and metrics["per_quality"]["fast"]["ok"] == 2


def test_cli_dry_run_and_exit_codes(tmp_path, cli):
    good = write_photo(tmp_path / "g.jpg", 32, 32, 7)
    manifest = write_manifest(tmp_path / "m.parquet", [{"image_id": "g", "uri": str(good)},
                                                        {"image_id": "missing", "uri": str(tmp_path / "nope.jpg")}])
    out = tmp_path / "out"
    dry = cli("submit", str(manifest), "--output", str(out), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["rows"] == 2 and not out.exists()

    bad = write_manifest(tmp_path / "bad.parquet", [{"image_id": "g", "uri": str(good), "quality": "ultra"}])
    refused = cli("submit", str(bad), "--output", str(out), "--strict")
    assert refused.returncode == 2 and "ultra" in refused.stderr and not out.exists()
    structural = write_manifest(tmp_path / "structural.parquet", [{"image_id": "g"}])
    refused = cli("submit", str(structural), "--output", str(out))
    assert refused.returncode == 2 and "missing required column 'uri'" in refused.stderr and not out.exists()

    run = cli("submit", str(manifest), "--output", str(out), "--max-size", "32")
    assert run.returncode == 1, run.stdout + run.stderr  # one row failed
    assert "ok 1" in run.stdout and "error 1" in run.stdout and "missing" in run.stdout
    assert (out / "cyberpunk" / "g.jpg").exists()
    # A clean run prints nothing a user would read as a failure: no ERROR line from Ray's core
    # worker (ray#57733, filtered by stylebatch.pipeline.lognoise) and no deprecation warnings.
    noise = [ln for ln in run.stderr.splitlines() if "core_worker" in ln or "Warning" in ln or " E " in ln[:40]]
    assert not noise, noise

    rep = cli("report", "latest", "--output", str(out))
    assert rep.returncode == 0 and "error" in rep.stdout
    run_id = results.list_runs(str(out))[-1]
    assert (out / "_runs" / run_id / "contact_sheet.jpg").exists()
    assert f"html report: {out / '_runs' / run_id / 'report.html'}" in rep.stdout
    assert 'class="pair"' in (out / "_runs" / run_id / "report.html").read_text()


def test_800_rows_leave_a_few_results_files(ray_local, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    base = photo(12, 12, 5)
    rows = []
    for i in range(800):
        path = src / f"{i}.png"
        Image.fromarray(np.roll(base, i, axis=1)).save(path)
        rows.append({"image_id": f"img{i:04d}", "uri": str(path)})
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    # 50-image model batches: 16 committed parts to fold (the default 8 would make 100, each costing
    # three Ray tasks, with nothing more to check).
    summary = restyle(_cfg(tmp_path, manifest, max_size=12, batch_size=50))
    assert summary.metrics["counts"] == {"ok": 800, "error": 0, "skipped": 0}
    files = os.listdir(tmp_path / "out" / "_runs" / summary.run_id / "results")
    assert 1 <= len(files) <= 4 and all(f.startswith("results-") for f in files), files
    table = results.read_results(summary.output, summary.run_id)
    assert table.num_rows == 800 and len(set(table.column("image_id").to_pylist())) == 800
    # DuckDB over the folder's files gives the same rows (no part is left to count twice).
    con = duckdb.connect()
    glob_ = str(tmp_path / "out" / "_runs" / summary.run_id / "results" / "*.parquet")
    assert con.execute(f"select count(*), count(distinct image_id) from read_parquet('{glob_}')").fetchone() == (800, 800)


def test_two_runs_on_one_output_started_together_one_proceeds(tmp_path, ray_shared):
    import subprocess
    import sys

    rows = [{"image_id": f"p{i}", "uri": str(write_photo(tmp_path / "src" / f"p{i}.jpg", 24, 24, i))} for i in range(4)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "stylebatch.cli", "submit", str(manifest), "--output", str(out), "--max-size", "24"]
    env = {**os.environ, "RAY_ADDRESS": ray_shared.address}
    procs = [subprocess.Popen(cmd + ["--run-id", f"run{k}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for k in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], [o[1][-2000:] for o in outs]
    loser = next(o for p, o in zip(procs, outs) if p.returncode == 3)
    winner = f"run{[p.returncode for p in procs].index(0)}"
    assert f"run {winner} (host" in loser[1] and "--wait" in loser[1], loser[1]
    assert results.list_runs(str(out)) == [winner]  # the loser wrote nothing
    assert not (out / "_runs" / "_lease.json").exists()  # released at the end


def test_bad_rows_fail_alone_and_strict_refuses_the_manifest(tmp_path, cli):
    good = [{"image_id": f"g{i}", "uri": str(write_photo(tmp_path / "src" / f"g{i}.jpg", 24, 24, i)), "alpha": None,
             "style": None} for i in range(3)]
    bad = [{"image_id": "../../etc/evil", "uri": good[0]["uri"], "alpha": None, "style": None},
           {"image_id": "nouri", "uri": None, "alpha": None, "style": None},
           {"image_id": "alpha7", "uri": good[1]["uri"], "alpha": 7.0, "style": None},
           {"image_id": "nostyle", "uri": good[2]["uri"], "alpha": None, "style": "no-such-style"}]
    manifest = write_manifest(tmp_path / "m.parquet", good + bad)
    out = tmp_path / "out"

    strict = cli("submit", str(manifest), "--output", str(out), "--max-size", "24", "--strict")
    assert strict.returncode == 2, strict.stderr
    for needle in ("unsafe image_id", "missing or empty uri", "alpha", "unknown style"):
        assert needle in strict.stderr, needle
    assert not out.exists()  # nothing written, not even the lease

    run = cli("submit", str(manifest), "--output", str(out), "--max-size", "24")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "4 that cannot run" in run.stderr
    rows = {r["image_id"]: r for r in results.read_results(str(out), results.list_runs(str(out))[-1]).to_pylist()}
    assert sorted(rows) == sorted(r["image_id"] for r in good + bad)
    assert all(rows[r["image_id"]]["status"] == "ok" for r in good)
    expected = {"../../etc/evil": "unsafe image_id", "nouri": "missing or empty uri", "alpha7": "between 0 and 1",
                "nostyle": "unknown style 'no-such-style'"}
    for image_id, message in expected.items():
        assert rows[image_id]["status"] == "error" and message in rows[image_id]["error"], rows[image_id]
    assert sorted(p.name for p in (out / "cyberpunk").iterdir()) == ["g0.jpg", "g1.jpg", "g2.jpg"]
