"""Results stay a few files per run: per-batch parts are folded into compacted files at the end of
a run, and a compaction killed at any moment never shows a row twice or loses one."""
from __future__ import annotations

import os

import pytest

from stylebatch.io import results, storage


def _write_parts(out: str, run: str, batches: int, per: int = 8) -> set[str]:
    ids = set()
    for b in range(batches):
        rows = [{"image_id": f"{b}-{i}", "uri": "/src.jpg", "style": "s", "quality": "fast",
                 "output_uri": f"{out}/s/{b}-{i}.jpg", "status": "ok", "source_fingerprint": "f",
                 "params_key": "p"} for i in range(per)]
        results.write_results_part(out, run, rows, part_id=f"batch{b:04d}")
        ids |= {r["image_id"] for r in rows}
    return ids


def _ids(out: str, run: str) -> list[str]:
    return results.read_results(out, run, columns=["image_id"]).column("image_id").to_pylist()


def _files(out: str, run: str) -> list[str]:
    return sorted(os.path.basename(o.uri) for o in storage.list_objects(results.results_dir(out, run)))


@pytest.mark.parametrize("rows_per_file, n_files", [(1_000_000, 1), (100, 4)])
def test_parts_fold_into_few_files_with_every_row_once(tmp_path, rows_per_file, n_files):
    out = str(tmp_path / "out")
    ids = _write_parts(out, "r1", 40)          # 320 rows in 40 parts
    written = results.compact_run(out, "r1", rows_per_file=rows_per_file)
    assert len(written) == n_files and len(_files(out, "r1")) == n_files
    assert all(f.startswith("results-") for f in _files(out, "r1"))
    got = _ids(out, "r1")
    assert len(got) == len(ids) and set(got) == ids
    assert results.compact_run(out, "r1") == []  # nothing left to fold


def test_compaction_killed_while_writing_then_finished(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    ids = _write_parts(out, "r1", 40)
    real_write = storage.write_bytes
    calls = []

    def dies_on_second(uri, data, **kw):
        calls.append(uri)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_write(uri, data, **kw)

    monkeypatch.setattr(storage, "write_bytes", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        results.compact_run(out, "r1", rows_per_file=100)
    monkeypatch.setattr(storage, "write_bytes", real_write)
    files = _files(out, "r1")
    assert sum(f.startswith("results-") for f in files) == 1 and sum(f.startswith("part-") for f in files) == 40
    got = _ids(out, "r1")
    assert len(got) == len(ids) and set(got) == ids   # the first file's parts are skipped, not read twice
    assert set(results.completed_index(out, use_snapshot=False)) == {f"{out}/s/{i}.jpg" for i in ids}

    results.compact_run(out, "r1", rows_per_file=100)  # the next run's end finishes it
    assert all(f.startswith("results-") for f in _files(out, "r1"))
    got = _ids(out, "r1")
    assert len(got) == len(ids) and set(got) == ids


def test_compaction_killed_while_deleting_then_finished(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    ids = _write_parts(out, "r1", 12)
    real_delete = storage.delete
    deleted = []

    def dies_after_five(uri):
        if len(deleted) == 5:
            raise KeyboardInterrupt("killed")
        deleted.append(uri)
        real_delete(uri)

    monkeypatch.setattr(storage, "delete", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        results.compact_run(out, "r1")
    monkeypatch.setattr(storage, "delete", real_delete)
    assert sum(f.startswith("part-") for f in _files(out, "r1")) == 7
    got = _ids(out, "r1")
    assert len(got) == len(ids) and set(got) == ids
    assert results.compact_run(out, "r1") == []         # only stale parts were left: deleted
    assert [f for f in _files(out, "r1") if f.startswith("part-")] == []
    assert sorted(_ids(out, "r1")) == sorted(ids)


def test_fold_finished_runs_compacts_killed_runs_and_snapshots_them(tmp_path):
    out = str(tmp_path / "out")
    killed = _write_parts(out, "20261201T000000Z-aaaa", 5)       # died before its end
    finished = _write_parts(out, "20261201T010000Z-bbbb", 7, per=3)
    results.fold_finished_runs(out)
    for run in results.list_runs(out):
        assert all(f.startswith("results-") for f in _files(out, run))
    index = results.completed_index(out)
    assert set(index) == {f"{out}/s/{i}.jpg" for i in killed | finished}
    assert results.read_index_snapshot(out)[1] == results.list_runs(out)


def test_compaction_on_s3(s3_server, s3_prefix):
    ids = _write_parts(s3_prefix, "r1", 30)
    assert len(results.compact_run(s3_prefix, "r1", rows_per_file=100)) == 3
    files = _files(s3_prefix, "r1")
    assert len(files) == 3 and all(f.startswith("results-") for f in files)
    got = _ids(s3_prefix, "r1")
    assert len(got) == len(ids) and set(got) == ids
