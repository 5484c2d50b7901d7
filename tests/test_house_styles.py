"""Networks for styles without one, decided per style and trained by the job (pipeline.house_styles)."""
from __future__ import annotations

import json

import duckdb
import pytest

from stylebatch.config import JobConfig
from stylebatch.pipeline import house_styles
from stylebatch.pipeline.plan import build_plan, custom_style_name
from stylebatch.styles.catalog import style_from_image
from stylebatch.training import house_style
from tests.helpers import run_cli, write_manifest, write_photo


def _catalog(tmp_path, counts: dict[str, int]):
    """Painting files and a manifest with ``counts[name]`` rows styled by each (as image URIs)."""
    rows, n = [], 0
    for seed, (name, count) in enumerate(counts.items()):
        painting = write_photo(tmp_path / "styles" / f"{name}.png", 48, 48, 100 + seed, fmt="PNG")
        for _ in range(count):
            rows.append({"image_id": f"p{n}", "uri": str(write_photo(tmp_path / "photos" / f"p{n}.jpg", 32, 32, n)),
                         "style": str(painting)})
            n += 1
    return write_manifest(tmp_path / "m.parquet", rows)


def test_each_style_without_a_network_gets_a_decision(tmp_path):
    manifest = _catalog(tmp_path, {"big": 4, "small": 1})
    cfg = JobConfig(manifest=str(manifest), output=str(tmp_path / "out"), train_min_rows=3, train_steps=7)
    plan = build_plan(cfg)
    big, small = (custom_style_name(str(tmp_path / "styles" / f"{n}.png")) for n in ("big", "small"))
    decisions = {d.style: d for d in house_styles.decide(plan, cfg)}
    assert (decisions[big].action, decisions[big].rows) == ("train", 4)
    assert decisions[big].estimate_s == 7 * house_styles.STEP_SECONDS["cpu"]
    assert decisions[big].network == house_style.cached_network_uri(cfg.output, plan.styles[big].key, 7)
    assert (decisions[small].action, decisions[small].rows) == ("adain", 1)
    assert "under --train-min-rows 3" in decisions[small].line()
    cfg.train_style = "always"
    assert {d.action for d in house_styles.decide(plan, cfg)} == {"train"}
    cfg.train_style = "never"
    assert {d.action for d in house_styles.decide(plan, cfg)} == {"adain"}
    # A network already in the shared cache serves the style, trained by nobody.
    cfg.train_style, cfg.style_cache = "auto", str(tmp_path / "shared-cache")
    cached = house_style.cached_network_uri(cfg.style_cache, plan.styles[small].key, 7)
    (tmp_path / "shared-cache" / "_styles").mkdir(parents=True)
    open(cached, "wb").close()
    decisions = {d.style: d for d in house_styles.decide(plan, cfg)}
    assert (decisions[small].action, decisions[small].network) == ("cached", cached)
    # Presets run their own networks: no decision for them.
    preset_rows = write_manifest(tmp_path / "p.parquet", [{"image_id": "x", "uri": str(tmp_path / "photos" / "p0.jpg"),
                                                           "style": "ink"}])
    assert house_styles.decide(build_plan(JobConfig(manifest=str(preset_rows), output=str(tmp_path / "o2"))),
                               cfg) == []


def test_dry_run_prints_the_decisions_and_trains_nothing(tmp_path):
    manifest = _catalog(tmp_path, {"big": 3})
    proc = run_cli("submit", str(manifest), "--output", str(tmp_path / "out"), "--train-min-rows", "2", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = json.loads(proc.stdout)["style_networks"]
    assert len(lines) == 1 and "3 rows -> train (at least --train-min-rows 2" in lines[0] and "min to train" in lines[0]
    assert not (tmp_path / "out" / "_styles").exists()


@pytest.mark.ray
@pytest.mark.heavy
def test_a_style_over_the_threshold_trains_once_and_later_runs_reuse_it(tmp_path):
    manifest = _catalog(tmp_path, {"brand": 3})
    painting = str(tmp_path / "styles" / "brand.png")
    out = tmp_path / "out"
    args = ("submit", str(manifest), "--style-image", painting, "--output", str(out), "--max-size", "64",
            "--train-min-rows", "3", "--train-steps", "2")
    first = run_cli(*args, timeout=900)
    assert first.returncode == 0, first.stderr
    assert "-> train" in first.stderr and "network trained in" in first.stderr
    network = house_style.cached_network_uri(str(out), style_from_image(painting).key, 2)
    assert (out / "_styles").is_dir() and __import__("os").path.exists(network)
    rows = duckdb.sql(f"select model, status from read_parquet('{out}/_runs/*/results/*.parquet')").fetchall()
    assert rows == [("network", "ok")] * 3
    second = run_cli(*args, timeout=600)
    assert second.returncode == 0 and "-> cached" in second.stderr and "network trained" not in second.stderr
    assert "skipped 3" in second.stderr
    third = run_cli(*args, "--overwrite", timeout=600)
    assert third.returncode == 0 and "-> cached" in third.stderr and "ok 3" in third.stderr


@pytest.mark.ray
@pytest.mark.heavy
def test_a_failed_training_leaves_its_rows_to_adain_with_the_reason(tmp_path):
    manifest = _catalog(tmp_path, {"ok": 1, "bad": 1})
    bad_key = style_from_image(str(tmp_path / "styles" / "bad.png")).key[:24]
    proc = run_cli("submit", str(manifest), "--output", str(tmp_path / "out"), "--max-size", "64",
                   "--train-style", "always", "--train-steps", "2",
                   env={"STYLEBATCH_INJECT_FAULT": f"{bad_key}:raise"}, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "training failed, its rows run AdaIN" in proc.stderr
    rows = dict(duckdb.sql(f"select image_id, model || '|' || coalesce(note, '') from "
                           f"read_parquet('{tmp_path}/out/_runs/*/results/*.parquet')").fetchall())
    assert rows["p0"] == "network|"
    assert rows["p1"].startswith("adain|network training failed (") and "injected fault" in rows["p1"]
