import datetime as dt
import json
import os
import re

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stylebatch.reports import contact_sheet as CS
from stylebatch.io import results as R
from stylebatch.io.results import (
    RESULT_SCHEMA, STATUSES, RunMetrics, coerce_results, completed_index, list_runs, make_run_id,
    read_metrics, read_results, refresh_index_snapshot, run_dir, write_index_snapshot,
    write_metrics, write_results_part,
)
from stylebatch.reports.contact_sheet import contact_sheet
from stylebatch.reports.report import report
from stylebatch.reports.run import Run
from stylebatch.reports.summary import summary_text

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 21, 22, 0, 0, tzinfo=UTC)


def row(i, status="ok", *, run_id=None, out=None, fp=None, params="p1", style="cyberpunk", quality="fast", t=0, **kw):
    r = {
        "image_id": f"img-{i}",
        "uri": f"s3://in/img-{i}.jpg",
        "style": style,
        "quality": quality,
        "output_uri": out or f"/out/{style}/img-{i}.jpg",
        "status": status,
        "error": "boom: decode failed" if status == "error" else None,
        "input_width": 640,
        "input_height": 480,
        "output_width": 512 if status == "ok" else None,
        "output_height": 384 if status == "ok" else None,
        "input_bytes": 1000,
        "output_bytes": 500 if status == "ok" else None,
        "source_fingerprint": fp or f"fp-{i}",
        "params_key": params,
        "read_ms": 10.0,
        "model_ms": 80.0,
        "write_ms": 10.0,
        "attempt": 1,
        "run_id": run_id,
        "finished_at": T0 + dt.timedelta(seconds=t),
    }
    r.update(kw)
    return r


def test_statuses_and_schema():
    assert STATUSES == ("ok", "error", "skipped")
    assert RESULT_SCHEMA.field("finished_at").type == pa.timestamp("ms", tz="UTC")
    assert RESULT_SCHEMA.field("input_width").type == pa.int32()
    assert RESULT_SCHEMA.field("output_bytes").type == pa.int64()
    assert RESULT_SCHEMA.field("model_ms").type == pa.float64()
    assert len(RESULT_SCHEMA) == 24
    assert RESULT_SCHEMA.field("model").type == pa.string()
    assert RESULT_SCHEMA.field("worker").type == pa.string()


def test_run_ids_are_sortable_and_safe():
    a = make_run_id(dt.datetime(2026, 11, 21, 22, 15, 0, tzinfo=UTC))
    b = make_run_id(dt.datetime(2026, 11, 21, 22, 15, 1, tzinfo=UTC))
    assert re.fullmatch(r"20261121T221500Z-[0-9a-f]{4}", a)
    assert a < b
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", make_run_id())
    assert run_dir("/data/out", a) == f"/data/out/_runs/{a}"
    assert run_dir("s3://b/out/", "r1") == "s3://b/out/_runs/r1"
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="invalid run id"):
            run_dir("/out", bad)


def test_coercion_of_python_rows():
    rows = [
        {
            "image_id": 7,  # ints become strings
            "uri": "/in/7.png",
            "output_uri": "/out/7.jpg",
            "status": "ok",
            "input_width": np.int64(640),
            "read_ms": 3,  # int -> float64
            "finished_at": dt.datetime(2026, 1, 2, 3, 4, 5, 678901),  # naive = UTC
            "extra_column": "dropped",
        },
        {"image_id": "x", "status": "skipped", "finished_at": "2026-01-02T03:04:05Z", "attempt": 2},
    ]
    t = coerce_results(rows, run_id="r1")
    assert t.schema.equals(RESULT_SCHEMA)
    d = t.to_pylist()
    assert d[0]["image_id"] == "7" and d[0]["input_width"] == 640 and d[0]["read_ms"] == 3.0
    assert d[0]["finished_at"] == dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert d[1]["finished_at"] == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert [x["run_id"] for x in d] == ["r1", "r1"]
    assert [x["attempt"] for x in d] == [1, 2]  # default attempt is 1
    assert d[1]["output_uri"] is None and d[1]["error"] is None
    assert "extra_column" not in t.column_names


def test_coercion_of_arrow_and_pandas():
    table = pa.table(
        {
            "image_id": ["a"],
            "output_uri": ["/o/a.jpg"],
            "status": ["ok"],
            "input_width": pa.array([10], pa.int64()),
            "output_bytes": pa.array([5], pa.int32()),
            "finished_at": pa.array([dt.datetime(2026, 5, 1, 12)], pa.timestamp("us")),
        }
    )
    t = coerce_results(table, run_id="r2")
    assert t.schema.equals(RESULT_SCHEMA)
    assert t.column("finished_at")[0].as_py() == dt.datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert t.column("run_id").to_pylist() == ["r2"]
    df = pd.DataFrame([row(1, run_id="r3"), row(2, "error", run_id="r3")])
    t2 = coerce_results(df)
    assert t2.schema.equals(RESULT_SCHEMA) and t2.column("status").to_pylist() == ["ok", "error"]


@pytest.mark.parametrize(
    "rows, match",
    [
        ([row(1, "done")], r"invalid status value\(s\) 'done'"),
        ([row(1, None)], r"invalid status"),
        ([row(1, output_uri=None)], r"status 'ok' have no output_uri"),
        ([row(1, input_width="wide")], r"column 'input_width'"),
        ([row(1, finished_at="yesterday")], r"column 'finished_at'"),
        ([row(1, run_id="other")], r"run\(s\) \['other'\]"),
    ],
)
def test_coercion_rejects_bad_rows(rows, match):
    with pytest.raises(ValueError, match=match):
        coerce_results(rows, run_id="r1")


def test_parts_round_trip(tmp_path):
    out = str(tmp_path / "out")
    rid = "20261121T220000Z-aaaa"
    p1 = write_results_part(out, rid, [row(1), row(2, "error")])
    p2 = write_results_part(out, rid, coerce_results([row(3, "skipped")], run_id=rid))
    for p in (p1, p2):
        assert re.fullmatch(re.escape(f"{out}/_runs/{rid}/results/") + r"part-[0-9a-f]{32}\.parquet", p)
        assert os.path.isfile(p)
    # No temp files are left next to the parts.
    assert sorted(os.listdir(os.path.dirname(p1))) == sorted(os.path.basename(p) for p in (p1, p2))
    t = read_results(out, rid)
    assert t.schema.equals(RESULT_SCHEMA)
    got = sorted(t.to_pylist(), key=lambda r: r["image_id"])
    assert [r["image_id"] for r in got] == ["img-1", "img-2", "img-3"]
    assert [r["status"] for r in got] == ["ok", "error", "skipped"]
    assert got[0]["output_width"] == 512 and got[0]["output_bytes"] == 500
    assert got[1]["error"] == "boom: decode failed"
    assert all(r["run_id"] == rid for r in got)
    assert got[0]["finished_at"] == T0
    empty = read_results(out, "20261121T230000Z-none")
    assert empty.num_rows == 0 and empty.schema.equals(RESULT_SCHEMA)


def test_read_results_conforms_narrow_old_parts(tmp_path):
    out = str(tmp_path)
    rid = "r-old"
    d = tmp_path / "_runs" / rid / "results"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["a"], "status": ["ok"], "output_uri": ["/o/a"], "input_width": pa.array([3], pa.int64())}), d / "part-0.parquet")
    (d / "notes.txt").write_text("ignored")
    t = read_results(out, rid)
    assert t.schema.equals(RESULT_SCHEMA)
    assert t.to_pylist()[0]["input_width"] == 3 and t.to_pylist()[0]["params_key"] is None


def test_list_runs_sorted_and_ignores_other_entries(tmp_path):
    out = str(tmp_path)
    for rid in ("20261121T220500Z-bbbb", "20261121T220000Z-aaaa", "20261122T000000Z-cccc"):
        write_results_part(out, rid, [row(1)])
    write_index_snapshot(out, {}, [])
    (tmp_path / "_runs" / ".tmpdir").mkdir()
    assert list_runs(out) == ["20261121T220000Z-aaaa", "20261121T220500Z-bbbb", "20261122T000000Z-cccc"]
    assert list_runs(str(tmp_path / "nothing-here")) == []


def _three_runs(out):
    a, b, c = "20261121T220000Z-aaaa", "20261121T230000Z-bbbb", "20261122T000000Z-cccc"
    write_results_part(out, a, [row(1, fp="A1", params="p1"), row(2, fp="A2"), row(5, fp="A5")])
    write_results_part(out, a, [row(3, "error", fp="A3")])
    # run b: img-1 redone with new params twice (later finish wins), img-2 failed
    write_results_part(out, b, [row(1, fp="B1", params="p2", t=5), row(2, "error", fp="B2"), row(4, "skipped", fp="B4")])
    write_results_part(out, b, [row(1, fp="B1", params="p3", t=9, attempt=2)])
    return a, b, c


def test_completed_index_latest_ok_and_ignores_errors(tmp_path):
    out = str(tmp_path)
    _three_runs(out)
    idx = completed_index(out)
    assert idx == {
        "/out/cyberpunk/img-1.jpg": ("B1", "p3"),
        "/out/cyberpunk/img-2.jpg": ("A2", "p1"),  # later error does not erase the earlier ok
        "/out/cyberpunk/img-5.jpg": ("A5", "p1"),
    }


def test_snapshot_plus_newer_runs_equals_full_scan(tmp_path):
    out = str(tmp_path)
    a, b, c = _three_runs(out)
    uri = write_index_snapshot(out, completed_index(out), list_runs(out))
    assert uri == f"{out}/_runs/_index.parquet" and os.path.isfile(uri)
    write_results_part(out, c, [row(2, fp="C2", params="p9"), row(6, fp="C6"), row(5, "error")])
    full = completed_index(out, use_snapshot=False)
    assert completed_index(out) == full
    assert full["/out/cyberpunk/img-2.jpg"] == ("C2", "p9") and full["/out/cyberpunk/img-6.jpg"] == ("C6", "p1")

    # Prove the snapshot is really used: runs it covers are not re-read.
    for rid in (a, b):
        for name in os.listdir(f"{out}/_runs/{rid}/results"):
            os.remove(f"{out}/_runs/{rid}/results/{name}")
    assert completed_index(out) == full
    assert completed_index(out, use_snapshot=False) == {
        "/out/cyberpunk/img-2.jpg": ("C2", "p9"),
        "/out/cyberpunk/img-6.jpg": ("C6", "p1"),
    }


def test_refresh_snapshot_and_damaged_snapshot(tmp_path):
    out = str(tmp_path)
    a, b, c = _three_runs(out)
    write_results_part(out, c, [row(7, fp="C7")])
    refresh_index_snapshot(out, exclude_runs=[c])
    snap_index, runs = R.read_index_snapshot(out)
    assert runs == [a, b] and "/out/cyberpunk/img-7.jpg" not in snap_index
    assert completed_index(out) == completed_index(out, use_snapshot=False)
    with open(f"{out}/_runs/_index.parquet", "wb") as fh:
        fh.write(b"garbage")
    assert completed_index(out) == completed_index(out, use_snapshot=False)


def _metric_rows():
    return [
        row(1, read_ms=10.0, model_ms=80.0, write_ms=10.0),  # 100
        row(2, read_ms=50.0, model_ms=100.0, write_ms=50.0, quality="premium"),  # 200
        row(3, read_ms=100.0, model_ms=150.0, write_ms=50.0, style="ink"),  # 300
        row(4, read_ms=0.0, model_ms=400.0, write_ms=None),  # 400: missing part counts as 0
        row(5, "error", read_ms=5.0, model_ms=None, write_ms=None),
        row(6, "skipped", quality="premium", input_bytes=None),
    ]


def test_run_metrics_numbers():
    rows = _metric_rows()
    m = RunMetrics(run_id="r1", started_at=T0)
    m.add(rows[:2])  # list of dicts
    m.add(coerce_results(rows[2:4], run_id="r1"))  # arrow table
    tail = coerce_results(rows[4:], run_id="r1").to_pandas()
    m.add({k: tail[k].to_numpy() for k in tail.columns})  # Ray numpy batch
    res = m.finish(2.0, config={"batch_size": 8}, versions={"torch": "x"})
    assert res["run_id"] == "r1" and res["started_at"] == "2026-11-21T22:00:00Z"
    assert res["finished_at"].endswith("Z")
    assert res["total_rows"] == 6
    assert res["counts"] == {"ok": 4, "error": 1, "skipped": 1}
    assert res["images_per_s"] == pytest.approx(2.0)
    assert res["wall_s"] == 2.0
    lat = res["latency_ms"]
    assert lat["p50"] == pytest.approx(250.0)
    assert lat["p95"] == pytest.approx(385.0)
    assert lat["max"] == pytest.approx(400.0)
    assert res["per_quality"] == {"fast": {"ok": 3, "error": 1, "skipped": 0}, "premium": {"ok": 1, "error": 0, "skipped": 1}}
    assert res["per_style"]["ink"] == {"ok": 1, "error": 0, "skipped": 0}
    assert res["bytes_in"] == 5000 and res["bytes_out"] == 2000
    assert res["errors_sample"] == [{"image_id": "img-5", "error": "boom: decode failed"}]
    assert res["config"] == {"batch_size": 8} and res["versions"] == {"torch": "x"}
    with pytest.raises(ValueError, match="invalid status"):
        m.add([{"status": "weird"}])


def test_metrics_json_round_trip(tmp_path):
    out = str(tmp_path)
    m = RunMetrics("r1").add(_metric_rows())
    res = m.finish(0.0, {"np": np.int64(3)}, R.collect_versions())
    assert res["images_per_s"] is None  # no division by a zero wall time
    uri = write_metrics(out, "r1", res)
    assert uri == f"{out}/_runs/r1/metrics.json"
    text = open(uri).read()
    assert text.startswith("{\n  ") and json.loads(text)["counts"]["ok"] == 4
    back = read_metrics(out, "r1")
    assert back["config"] == {"np": 3} and "python" in back["versions"] and back["latency_ms"]["max"] == 400.0


def test_pandas_and_duckdb_read_results(tmp_path):
    out = str(tmp_path)
    rid = "20261121T220000Z-aaaa"
    rows = _metric_rows()
    write_results_part(out, rid, rows[:3])
    write_results_part(out, rid, rows[3:])
    rdir = run_dir(out, rid)
    df = pd.read_parquet(rdir + "/results")
    assert len(df) == 6 and sorted(df["image_id"]) == [f"img-{i}" for i in range(1, 7)]
    assert str(df["finished_at"].dt.tz) == "UTC"
    assert df["input_width"].dtype == np.int32
    got = duckdb.sql(f"select status, count(*) from read_parquet('{rdir}/results/*.parquet') group by 1 order by 1").fetchall()
    assert got == [("error", 1), ("ok", 4), ("skipped", 1)]


def test_summary_text(tmp_path):
    out = str(tmp_path)
    rid = "r1"
    write_results_part(out, rid, _metric_rows())
    text = summary_text(Run(out, rid))
    assert "rows: 6  ok: 4  error: 1  skipped: 1" in text
    assert "throughput: n/a" in text
    assert "p50 250.0 ms" in text and "max 400.0 ms" in text
    assert re.search(r"cyberpunk\s+3\s+1\s+1\s+5", text)
    assert re.search(r"ink\s+1\s+0\s+0\s+1", text)
    assert "img-5: boom: decode failed" in text
    write_metrics(out, rid, RunMetrics(rid).add(_metric_rows()).finish(4.0, {}, {}))
    assert "throughput: 1.00 images/s" in summary_text(Run(out, rid))


def test_contact_sheet_layout_and_pixels():
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    wide = np.full((16, 64, 3), 200, np.uint8)  # fitted to 32x8, centred
    grey = np.full((10, 10), 90, np.uint8)  # greyscale accepted, upscaled to 32x32
    imgs = [("red", red), ("", wide), ("grey", grey), ("r2", red), ("r3", red)]
    sheet = contact_sheet(imgs, thumb=32, columns=3)
    pad, lab = CS.CONTACT_PAD, CS.CONTACT_LABEL_H
    assert sheet.shape == (2 * (32 + lab) + 3 * pad, 3 * 32 + 4 * pad, 3) and sheet.dtype == np.uint8

    def tile(i):
        r, c = divmod(i, 3)
        x0, y0 = pad + c * (32 + pad), pad + r * (32 + lab + pad)
        return sheet[y0 : y0 + 32, x0 : x0 + 32], sheet[y0 + 32 : y0 + 32 + lab, x0 : x0 + 32]

    img0, label0 = tile(0)
    assert (img0 == (255, 0, 0)).all()
    assert label0.max() > 150  # text was drawn
    img1, label1 = tile(1)
    assert (img1[16, :] == 200).all()  # the wide image's middle row
    assert (img1[:10] == CS.CONTACT_BG).all() and (img1[-10:] == CS.CONTACT_BG).all()
    assert (label1 == CS.CONTACT_BG).all()  # empty label draws nothing
    img2, _ = tile(2)
    assert (img2 == 90).all()
    # the sixth cell of the 3x2 grid is empty background
    r, c = divmod(5, 3)
    x0, y0 = pad + c * (32 + pad), pad + r * (32 + lab + pad)
    assert (sheet[y0 : y0 + 32 + lab, x0 : x0 + 32] == CS.CONTACT_BG).all()
    with pytest.raises(ValueError):
        contact_sheet([])
    with pytest.raises(ValueError, match="uint8"):
        contact_sheet([("f", np.zeros((4, 4, 3), np.float32))])


def test_report_writes_contact_sheet(tmp_path):
    out = str(tmp_path / "out")
    rid = "20261121T220000Z-aaaa"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    rows = []
    for i, col in enumerate(colours):
        p = tmp_path / "out" / "cyberpunk" / f"img-{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 64, 3), col, np.uint8)).save(p)
        rows.append(row(i, out=str(p)))
    rows.append(row(8, out=str(tmp_path / "out" / "vanished.jpg")))  # unreadable: skipped
    rows.append(row(9, "error"))
    write_results_part(out, rid, rows)
    text, uri, _ = report(out, rid, sample=12, thumb=64, columns=2)
    assert "ok: 4" in text and "error: 1" in text
    assert uri == f"{run_dir(out, rid)}/contact_sheet.jpg"
    sheet = np.asarray(Image.open(uri).convert("RGB")).astype(int)
    pad, lab = CS.CONTACT_PAD, CS.CONTACT_LABEL_H
    assert sheet.shape == (2 * (64 + lab) + 3 * pad, 2 * 64 + 3 * pad, 3)
    # Tiles are in image-id order: red, green, blue; centre pixels survive JPEG.
    centres = [(pad + 32, pad + 32), (pad + 32, 2 * pad + 64 + 32), (2 * pad + 64 + lab + 32, pad + 32)]
    for (y, x), col in zip(centres, colours):
        assert np.abs(sheet[y, x] - np.array(col)).max() < 40, (y, x, sheet[y, x], col)

    empty_rid = "20261121T230000Z-bbbb"
    write_results_part(out, empty_rid, [row(1, "error")])
    text, uri, _ = report(out, empty_rid)
    assert uri is None and "error: 1" in text


def test_results_written_before_the_model_column_still_read(tmp_path):
    import pyarrow.parquet as pq

    from stylebatch.io import results as res

    out = tmp_path / "out"
    rows = coerce_results([{"image_id": "a", "uri": "a.jpg", "style": "ink", "quality": "fast", "model": "network",
                            "output_uri": "o/a.jpg", "status": "ok", "run_id": "r1"}])
    assert rows.column("model").to_pylist() == ["network"]
    folder = out / "_runs" / "r1" / "results"
    folder.mkdir(parents=True)
    pq.write_table(rows.drop_columns(["model"]), folder / "part-old.parquet")  # a file from before the column
    table = res.read_results(str(out), "r1")
    assert table.num_rows == 1 and table.column("model").to_pylist() == [None]
    assert table.column("image_id").to_pylist() == ["a"]
