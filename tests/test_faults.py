"""Faults injected into real runs: a worker node lost, the driver SIGKILLed, the S3 server down,
poisoned images. Each test breaks something mid-run and then checks what the job left behind:
the output files and the per-row result rows (one per manifest row, none duplicated or dropped).

Timing: results are committed one part per 16-row plan block, and the fast model needs ~10 ms for
a small image, so a fast run commits all its parts at once at the end. Tests that must act
*between* two commits run premium rows with a few Gatys iterations (~0.3-0.5 s per image here).

Isolation: every Ray started here gets a private RAY_TMPDIR. Ray writes the address of the last
cluster it started to ``$RAY_TMPDIR/ray/ray_current_cluster`` and a plain ``ray.init()`` joins it,
so without this a CLI run could join another test's cluster (or theirs join ours).
"""
from __future__ import annotations

import glob
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stylebatch.io import images, results, storage
from stylebatch.config import JobConfig
from stylebatch.pipeline.driver import restyle
from tests.helpers import ROOT, photo, write_manifest, write_photo

pytestmark = pytest.mark.ray

H, W = 40, 48                      # source size; --max-size 48 keeps it as is
SLOW_ARGS = ["--quality", "premium", "--premium-iterations", "8"]
PART_GLOB = "_runs/*/results/part-*.parquet"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

@pytest.fixture
def ray_tmp():
    # Short: Ray's unix socket paths live under it (108-byte limit).
    path = tempfile.mkdtemp(prefix="sbf", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(ray_tmp: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmp
    env.update(extra)
    return env


def _local_rows(tmp_path: Path, n: int, name=lambda i: f"img{i:02d}") -> list[dict]:
    return [{"image_id": name(i), "uri": str(write_photo(tmp_path / "src" / f"{name(i)}.jpg", H, W, i))}
            for i in range(n)]


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(H, W, seed)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _manifest_bytes(rows: list[dict]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"image_id": [r["image_id"] for r in rows], "uri": [r["uri"] for r in rows]}), sink)
    return sink.getvalue().to_pybytes()


def _wait_for(predicate, timeout: float, what: str, proc: "_Cli | None" = None, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.proc.returncode}) before {what}:\n{proc.output()[-4000:]}")
        if time.monotonic() > deadline:
            tail = f":\n{proc.output()[-4000:]}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)


def _note(what: str) -> None:
    """A timestamped progress line (shown with -s, or on failure): when each fault fired."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def _proc_stat(pid: int):
    """(state, ppid, session id) from /proc, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[3])


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes in session ``sid``: the CLI and everything it started,
    including Ray processes re-parented to init after the CLI died."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            st = _proc_stat(int(entry))
            if st and st[2] == sid and st[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


class _Cli:
    """``python -m stylebatch.cli ...`` in the background, in its own session (so the driver and
    the local Ray it starts can be killed as one), with stdout/stderr collected as they come."""

    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen([sys.executable, "-m", "stylebatch.cli", *args], cwd=str(ROOT), env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._pump, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _pump(stream, buf: list[str]) -> None:
        for line in stream:
            buf.append(line)

    def err_text(self) -> str:
        return "".join(self.stderr)

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"run did not finish within {timeout}s:\n{self.output()[-4000:]}") from None
        for t in self._readers:
            t.join(timeout=10)
        return rc

    def kill_group(self, timeout: float = 60.0) -> None:
        """SIGKILL the driver and every process of its session (local Ray: GCS, raylet, workers),
        then wait until none is left; only processes this run started are touched."""
        sid = self.proc.pid
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + timeout
        while True:
            left = _session_members(sid)
            if not left:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of the killed run still alive: {left}")
            for pid in left:  # anything that changed its process group but kept the session
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for t in self._readers:
            t.join(timeout=10)


def _run_cli(args: list[str], env: dict, timeout: float = 400) -> "_Cli":
    """Like helpers.run_cli, but a run that hangs is killed with all of its Ray processes."""
    cli = _Cli(args, env)
    cli.wait(timeout)
    return cli


def _results_by_id(out: str, run_id: str):
    table = results.read_results(out, run_id).to_pandas()
    assert table.image_id.is_unique, table.image_id.value_counts().head()
    return table.set_index("image_id")


def _check_output(uri: str) -> None:
    img = images.decode_image(storage.read_bytes(uri))
    assert img.shape == (H, W, 3), (uri, img.shape)


# --------------------------------------------------------------------------------------------
# 1. a worker node dies mid-run
# --------------------------------------------------------------------------------------------

@pytest.fixture
def ray_cluster(ray_tmp, monkeypatch):
    """Head (1 CPU) + 2 worker nodes (1 CPU each) in this process; the driver is connected."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)  # the cluster's address file lands here, not in /tmp/ray
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster = None
    try:
        # A dead node is noticed after 3 failed health checks a second apart instead of Ray's 5
        # three seconds apart (a killed raylet fails each check at once; a live but busy one still
        # has the default 10 s to answer each).
        fast_death = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                                "_system_config": fast_death})
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes(timeout=120)
        ray.init(address=cluster.address, logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def _node_running(cluster, pid: int):
    """The cluster node whose raylet is an ancestor of ``pid`` (Ray workers are raylet children)."""
    from ray._private import ray_constants

    raylets = {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: n
               for n in cluster.list_all_nodes()}
    while pid > 1:
        if pid in raylets:
            return raylets[pid]
        st = _proc_stat(pid)
        if st is None:
            return None
        pid = st[1]
    return None


def test_worker_node_killed_mid_run(ray_cluster, tmp_path):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cluster = ray_cluster
    rows = _local_rows(tmp_path, 24)  # two plan blocks: 16 + 8 rows
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"

    # Another tenant holds 0.4 of the head's CPU, so the model actor (1 CPU) can only start on a
    # worker node: the node this test kills.
    class Tenant:
        def ping(self):
            return True

    head = ray.get_runtime_context().get_node_id()
    tenant = ray.remote(Tenant).options(
        num_cpus=0.4, scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
    assert ray.get(tenant.ping.remote(), timeout=120)

    # One model actor: after the first commit it is busy with the other block when its node dies.
    cfg = JobConfig(manifest=str(manifest), output=str(out), max_size=48, quality="premium",
                    premium_iterations=8, ray_address=cluster.address, max_actors=1)
    box: dict = {}

    def job():
        try:
            box["summary"] = restyle(cfg)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            box["error"] = exc

    runner = threading.Thread(target=job, daemon=True)
    runner.start()
    _wait_for(lambda: glob.glob(str(out / PART_GLOB)) or not runner.is_alive(), 240, "the first results part")
    assert "error" not in box, box.get("error")
    assert runner.is_alive(), "the job finished before a node could be removed"

    first_part = glob.glob(str(out / PART_GLOB))[0]
    actor_pid = int(pq.read_table(first_part).column("worker")[0].as_py().rsplit(":", 1)[1])
    victim = _node_running(cluster, actor_pid)
    assert victim is not None and victim in cluster.worker_nodes, "the model actor is not on a worker node"
    cluster.remove_node(victim, allow_graceful=False)
    removed_at = time.monotonic()
    _note(f"removed the worker node running the model actor (pid {actor_pid})")

    runner.join(timeout=400)
    assert not runner.is_alive(), "the job hung after losing a worker node"
    assert "error" not in box, "".join(traceback.format_exception(box["error"]))
    summary = box["summary"]

    table = _results_by_id(str(out), summary.run_id)
    assert sorted(table.index) == [r["image_id"] for r in rows]
    assert (table.status == "ok").all(), table[table.status != "ok"].error.to_dict()
    # The rows after the first commit were finished by a model actor started after the loss.
    assert any(not w.endswith(f":{actor_pid}") for w in table.worker), \
        f"no row was processed after the node removal ({time.monotonic() - removed_at:.0f}s before the end)"
    assert summary.metrics["config"]["pool"]["actors"] == 1
    for image_id, row in table.iterrows():
        assert row.output_uri == str(out / "cyberpunk" / f"{image_id}.jpg")
        _check_output(row.output_uri)
    assert sorted(os.listdir(out / "cyberpunk")) == sorted(f"{r['image_id']}.jpg" for r in rows)
    assert summary.metrics["counts"] == {"ok": 24, "error": 0, "skipped": 0}


# --------------------------------------------------------------------------------------------
# 2. the driver is SIGKILLed, then the same command is run again
# --------------------------------------------------------------------------------------------

def test_driver_killed_then_rerun_redoes_only_uncommitted_rows(tmp_path, ray_tmp):
    rows = _local_rows(tmp_path, 30)
    ids = {r["image_id"] for r in rows}
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    args = ["submit", str(manifest), "--output", str(out), "--max-size", "48", *SLOW_ARGS]

    first = _Cli(args, _env(ray_tmp))
    try:
        _wait_for(lambda: glob.glob(str(out / PART_GLOB)), 300, "the first results part", first)
    finally:
        first.kill_group()
    assert first.proc.returncode == -signal.SIGKILL

    [run1] = results.list_runs(str(out))
    assert not (out / "_runs" / run1 / "metrics.json").exists()  # it really died mid-run
    r1 = results.read_results(str(out), run1).to_pandas()
    committed = set(r1[r1.status == "ok"].image_id)
    assert r1.image_id.is_unique and (r1.status == "ok").all(), r1[["image_id", "status", "error"]]
    assert 0 < len(committed) < len(ids), committed

    second = _run_cli(args, _env(ray_tmp))
    assert second.proc.returncode == 0, second.output()
    run2 = [r for r in results.list_runs(str(out)) if r != run1]
    assert len(run2) == 1
    r2 = _results_by_id(str(out), run2[0])
    assert set(r2.index) == ids
    assert set(r2[r2.status == "skipped"].index) == committed  # finished before the kill: not redone
    assert set(r2[r2.status == "ok"].index) == ids - committed
    assert not (r2.status == "error").any()

    oks = list(r1[r1.status == "ok"].image_id) + list(r2[r2.status == "ok"].index)
    assert sorted(oks) == sorted(ids)  # every image exactly one ok row over both runs

    listed = sorted(os.path.basename(o.uri) for o in storage.list_objects(str(out / "cyberpunk")))
    assert listed == sorted(f"{i}.jpg" for i in ids)  # no extras, none missing
    for i in ids:
        _check_output(str(out / "cyberpunk" / f"{i}.jpg"))
    metrics = results.read_metrics(str(out), run2[0])
    assert metrics["counts"] == {"ok": len(ids - committed), "error": 0, "skipped": len(committed)}
    # The end of run 2 compacted both runs' per-batch parts (the killed run's too): a few files
    # each, every row still there exactly once.
    for run, n in ((run1, len(committed)), (run2[0], len(ids))):
        files = os.listdir(out / "_runs" / run / "results")
        assert files and len(files) <= 4 and all(f.startswith("results-") for f in files), files
        table = results.read_results(str(out), run)
        assert table.num_rows == n and len(set(table.column("image_id").to_pylist())) == n


# --------------------------------------------------------------------------------------------
# 3. the S3 server goes away for ~10 s mid-run
# --------------------------------------------------------------------------------------------

def test_s3_outage_mid_run_is_ridden_out(s3_server, s3_prefix, ray_tmp):
    n = 24
    src, out = f"{s3_prefix}/src", f"{s3_prefix}/out"
    rows = [{"image_id": f"p{i:02d}", "uri": f"{src}/p{i:02d}.jpg"} for i in range(n)]
    for i, r in enumerate(rows):
        storage.write_bytes(r["uri"], _jpeg(i))
    manifest = f"{s3_prefix}/manifest.parquet"
    storage.write_bytes(manifest, _manifest_bytes(rows))
    bucket, key = storage.parse_uri(out)[1:]
    client = s3_server.client()

    def first_part():
        resp = client.list_objects_v2(Bucket=bucket, Prefix=f"{key}/_runs/")
        return any("/results/part-" in o["Key"] for o in resp.get("Contents", []))

    cli = _Cli(["submit", manifest, "--output", out, "--max-size", "48", *SLOW_ARGS], _env(ray_tmp))
    try:
        _wait_for(first_part, 300, "the first results part on S3", cli, interval=0.3)
        s3_server.stop(grace=0)
        _note("S3 server stopped")
        time.sleep(10)
    finally:
        s3_server.start()  # shared by the whole session: always bring it back
        _note("S3 server started")
    rc = cli.wait(400)
    _note(f"run finished: {rc}")
    assert rc == 0, cli.output()[-4000:]
    # The outage did hit the job's own S3 traffic and was retried through.
    assert "transient failure" in cli.err_text(), cli.err_text()[-4000:]

    [run_id] = results.list_runs(out)
    table = _results_by_id(out, run_id)
    assert sorted(table.index) == [r["image_id"] for r in rows]
    assert (table.status == "ok").all(), table[table.status != "ok"].error.to_dict()
    for image_id, row in table.iterrows():
        assert row.output_uri == f"{out}/cyberpunk/{image_id}.jpg"
        _check_output(row.output_uri)
    listed = sorted(o.uri for o in storage.list_objects(f"{out}/cyberpunk"))
    assert listed == sorted(table.output_uri)
    assert results.read_metrics(out, run_id)["counts"] == {"ok": n, "error": 0, "skipped": 0}


def test_s3_outage_longer_than_retry_window_fails_only_rows_read_in_it(s3_server, s3_prefix, ray_tmp, tmp_path):
    n = 20
    src = f"{s3_prefix}/src"
    rows = [{"image_id": f"q{i:02d}", "uri": f"{src}/q{i:02d}.jpg"} for i in range(n)]
    for i, r in enumerate(rows):
        storage.write_bytes(r["uri"], _jpeg(100 + i))
    manifest = write_manifest(tmp_path / "m.parquet", rows)  # local manifest, S3 images
    out = tmp_path / "out"                                      # local output
    cli = _Cli(["submit", str(manifest), "--output", str(out), "--max-size", "48"],
               _env(ray_tmp, STYLEBATCH_IO_RETRY_SECONDS="2"))
    source_failure = re.compile(r"(stat|read) s3://\S+: transient failure")
    try:
        # Planning touches no S3 here; take the server down once the plan is made, i.e. before
        # the fetch stage starts, and keep it down a while after the first source read failed.
        _wait_for(lambda: "restyling" in cli.err_text(), 180, "the plan", cli)
        s3_server.stop(grace=0)
        down_at = time.monotonic()
        _note("S3 server stopped")
        _wait_for(lambda: source_failure.search(cli.err_text()), 180, "a source read failing", cli)
        _note("a source read failed")
        time.sleep(max(6.0, 10.0 - (time.monotonic() - down_at)))
    finally:
        s3_server.start()
        _note("S3 server started")
    rc = cli.wait(400)
    _note(f"run finished: {rc}")
    assert rc == 1, cli.output()[-4000:]

    [run_id] = results.list_runs(str(out))
    table = _results_by_id(str(out), run_id)
    assert sorted(table.index) == [r["image_id"] for r in rows]  # nothing silently dropped
    errors, oks = table[table.status == "error"], table[table.status == "ok"]
    assert len(errors) + len(oks) == n
    assert len(errors) >= 1 and len(oks) >= 1, table.status.value_counts()
    for image_id, row in errors.iterrows():
        # Retries exhausted on this row's own source; the cause is the server being unreachable,
        # or, while it restarts, its S3 gateway answering 5xx before the storage is back.
        assert row.uri in row.error and "retry window 2s" in row.error, row.error
        assert "EndpointConnectionError" in row.error or re.search(r"\(HTTP 5\d\d\)", row.error), row.error
        assert not os.path.exists(row.output_uri)
    assert errors.error.str.contains("Could not connect to the endpoint URL").any(), errors.error.tolist()
    for image_id, row in oks.iterrows():
        _check_output(row.output_uri)
    assert sorted(os.listdir(out / "cyberpunk")) == sorted(f"{i}.jpg" for i in oks.index)
    metrics = results.read_metrics(str(out), run_id)
    assert metrics["counts"] == {"ok": len(oks), "error": len(errors), "skipped": 0}
    assert f"error {len(errors)}" in "".join(cli.stdout)


# --------------------------------------------------------------------------------------------
# 4. a poisoned image
# --------------------------------------------------------------------------------------------

def _poison_catalog(tmp_path: Path) -> tuple[Path, list[dict]]:
    # Only one URI may contain the needle (test names, hence tmp_path, must not).
    assert "poison" not in str(tmp_path)
    rows = _local_rows(tmp_path, 6, name=lambda i: "poison" if i == 2 else f"good{i}")
    return write_manifest(tmp_path / "m.parquet", rows), rows


def _check_poison_run(out: Path, rows: list[dict], expect_error: str) -> None:
    [run_id] = results.list_runs(str(out))
    table = _results_by_id(str(out), run_id)
    assert sorted(table.index) == sorted(r["image_id"] for r in rows)
    assert table.loc["poison", "status"] == "error"
    assert expect_error in table.loc["poison", "error"], table.loc["poison", "error"]
    good = table.drop(index="poison")
    assert (good.status == "ok").all(), good.error.to_dict()
    for _, row in good.iterrows():
        _check_output(row.output_uri)
    assert sorted(os.listdir(out / "cyberpunk")) == sorted(f"{i}.jpg" for i in good.index)
    assert results.read_metrics(str(out), run_id)["counts"] == {"ok": 5, "error": 1, "skipped": 0}


def test_model_raising_on_one_image_fails_only_its_row(tmp_path, ray_tmp):
    manifest, rows = _poison_catalog(tmp_path)
    out = tmp_path / "out"
    run = _run_cli(["submit", str(manifest), "--output", str(out), "--max-size", "48"],
                   _env(ray_tmp, STYLEBATCH_INJECT_FAULT="poison:raise"))
    assert run.proc.returncode == 1, run.output()
    _check_poison_run(out, rows, "injected fault for poison.jpg")
    # All six rows went through the model in one batch and were retried alone (attempt 2), and the
    # run's single part was compacted into a single results file.
    assert len(glob.glob(str(out / "_runs/*/results/results-*.parquet"))) == 1
    assert not glob.glob(str(out / PART_GLOB))
    attempts = results.read_results(str(out), results.list_runs(str(out))[-1], columns=["attempt"])
    assert attempts.column("attempt").to_pylist() == [2] * 6
    stdout = "".join(run.stdout)
    assert "error poison" in stdout and "error 1" in stdout


def test_model_process_exiting_on_one_image_fails_only_its_row(tmp_path, ray_tmp):
    manifest, rows = _poison_catalog(tmp_path)
    out = tmp_path / "out"
    # Each crash costs an actor restart (model load); a journal that forgets loops forever.
    run = _run_cli(["submit", str(manifest), "--output", str(out), "--max-size", "48"],
                   _env(ray_tmp, STYLEBATCH_INJECT_FAULT="poison:exit"), timeout=300)
    assert run.proc.returncode == 1, run.output()
    _check_poison_run(out, rows, "crashed")
