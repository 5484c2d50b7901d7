"""A real multi-node Ray cluster on this machine (head + two worker nodes, 1 CPU each, started with
the ``ray`` CLI, token authentication on) and ``stylebatch submit --address http://...`` through
Ray's job API: the job completes, every row is ok and the work ran on more than one node.

Every process of the cluster is started in its own session (one process group per node) with a
private --temp-dir; teardown kills exactly those process groups, never other Ray instances."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylebatch.io import results
from tests.helpers import run_cli, write_manifest, write_photo

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
WORKER_NODES = 2
N_IMAGES = 16


def _free_ports(n: int, taken: set[int]) -> list[int]:
    """n free ports, none in ``taken`` (ports handed out earlier that nothing listens on yet: a
    worker range picked later could otherwise overlap the dashboard's, and ``ray start`` refuses);
    they are added to it."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            if s.getsockname()[1] not in taken:
                ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    taken.update(ports)
    return ports


def _free_port_range(width: int, taken: set[int]) -> int:
    """First port of ``width`` consecutive free ports outside ``taken`` (for --min/--max-worker-port);
    they are added to it."""
    rng = np.random.default_rng(os.getpid() ^ time.time_ns())
    for _ in range(200):
        start = int(rng.integers(30000, 60000 - width))
        ok = not taken.intersection(range(start, start + width))
        for p in range(start, start + width) if ok else ():
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            taken.update(range(start, start + width))
            return start
    raise RuntimeError("no free worker port range")


class LocalCluster:
    """Head + worker nodes via ``ray start``; each node's processes share one process group."""

    def __init__(self, token: str):
        # Short root: Ray's unix socket paths must stay under 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="sbc", dir="/tmp"))
        self.token = token
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
                        PATH=f"{BIN}{os.pathsep}{self.env.get('PATH', '')}")
        self.ports: set[int] = set()  # every port handed to a node so far
        self.gcs_port, self.dashboard_port = _free_ports(2, self.ports)
        self.pgids: list[int] = []
        self.logs: list[str] = []

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_node(self, index: int) -> None:
        head = index == 0
        nm, om, agent_http, agent_grpc, renv, metrics, client = _free_ports(7, self.ports)
        wp = _free_port_range(40, self.ports)
        cmd = [RAY, "start", "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
               f"--temp-dir={self.root / f'n{index}'}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
               f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
               f"--runtime-env-agent-port={renv}", f"--metrics-export-port={metrics}",
               f"--min-worker-port={wp}", f"--max-worker-port={wp + 39}",
               "--object-store-memory=150000000", "--disable-usage-stats"]
        if head:
            cmd += ["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                    "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--ray-client-server-port={client}"]
        else:
            cmd += [f"--address=127.0.0.1:{self.gcs_port}"]
        # New session: this node's daemons (and the workers they spawn) live in this process group.
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.pgids.append(proc.pid)
        out, _ = proc.communicate(timeout=240)
        self.logs.append(out)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start (node {index}) failed:\n{out[-4000:]}")

    def get(self, path: str, *, auth: bool = True) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        req = urllib.request.Request(self.dashboard + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def state(self, kind: str) -> list[dict]:
        status, body = self.get(f"/api/v0/{kind}?limit=10000&detail=1")
        assert status == 200, body[:500]
        return json.loads(body)["data"]["result"]["result"]

    def wait_for_nodes(self, n: int, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        alive: list[dict] = []
        while time.monotonic() < deadline:
            try:
                alive = [x for x in self.state("nodes") if x["state"] == "ALIVE"]
            except (OSError, AssertionError, KeyError, ValueError):
                alive = []
            if len(alive) >= n:
                return alive
            time.sleep(1)
        raise RuntimeError(f"only {len(alive)} of {n} nodes alive after {timeout}s")

    def _members(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) in self.pgids:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to this cluster's process groups only (never `ray stop`)."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for pgid in self.pgids:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self._members() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self._members():
                break
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def ray_cluster():
    gen = subprocess.run([RAY, "get-auth-token", "--generate"], capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    token = gen.stdout.strip().splitlines()[-1].strip()
    assert len(token) >= 32, "ray get-auth-token printed no token"
    cluster = LocalCluster(token)
    try:
        for i in range(1 + WORKER_NODES):
            cluster.start_node(i)
        cluster.wait_for_nodes(1 + WORKER_NODES)
        yield cluster
    finally:
        cluster.stop()
        assert not cluster._members(), "cluster processes survived teardown"


def test_submit_to_token_auth_multi_node_cluster(tmp_path, ray_cluster):
    cluster = ray_cluster
    nodes = cluster.wait_for_nodes(1 + WORKER_NODES)
    assert len(nodes) == 1 + WORKER_NODES and all(n["resources_total"].get("CPU") == 1.0 for n in nodes)

    # Token auth is really on: the job API refuses a request without the token.
    status, body = cluster.get("/api/jobs/", auth=False)
    assert status == 401, (status, body[:300])
    assert cluster.get("/api/jobs/")[0] == 200

    sizes = {}
    rows = []
    for i in range(N_IMAGES):
        h, w = 16 + i, 32 - i // 2  # within --max-size 32: never resized
        path = write_photo(tmp_path / "src" / f"item{i:02d}.jpg", h, w, i)
        sizes[f"item{i:02d}"] = (h, w)
        rows.append({"image_id": f"item{i:02d}", "uri": str(path.resolve())})
    manifest = write_manifest(tmp_path / "manifest.parquet", rows)
    out = tmp_path / "out"

    run = run_cli("submit", str(manifest.resolve()), "--address", cluster.dashboard, "--output", str(out.resolve()),
                  "--max-size", "32", "--style", "ink",
                  env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}, timeout=420)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    assert "submitted Ray job" in run.stderr and "SUCCEEDED" in run.stderr, log[-3000:]
    assert f"{N_IMAGES} rows  ok {N_IMAGES}  skipped 0  error 0" in run.stdout, log[-3000:]

    run_id = results.list_runs(str(out))[-1]
    table = results.read_results(str(out), run_id).to_pandas()
    assert len(table) == N_IMAGES and table.image_id.is_unique
    assert (table.status == "ok").all(), table[["image_id", "error"]]
    for row in table.itertuples():
        img = np.asarray(Image.open(out / "ink" / f"{row.image_id}.jpg"))
        assert img.shape[:2] == sizes[row.image_id] == (row.output_height, row.output_width)

    # Where did the work run? The job's model actors and read/write tasks, from the state API.
    actors = [a for a in cluster.state("actors") if "StylizeActor" in (a.get("class_name") or "")]
    tasks = [t for t in cluster.state("tasks")
             if t.get("name") in ("MapBatches(fetch_batch)", "MapBatches(write_batch)") and t.get("state") == "FINISHED"]
    assert actors and tasks
    node_ids = {n["node_id"] for n in nodes}
    actor_node = {int(a["pid"]): a["node_id"] for a in actors if a.get("pid")}
    # Every result row names the model actor that stylized it (hostname:pid): map those to nodes.
    worker_pids = {int(w.rsplit(":", 1)[1]) for w in table.worker}
    assert worker_pids <= set(actor_node), (worker_pids, actor_node)
    model_nodes = {actor_node[p] for p in worker_pids}
    task_nodes = {t["node_id"] for t in tasks}
    used = model_nodes | task_nodes
    assert used <= node_ids
    # A model actor reserves its node's only CPU, so the read/write tasks had to run elsewhere.
    assert len(used) >= 2, (model_nodes, task_nodes)
    assert task_nodes - model_nodes, (model_nodes, task_nodes)

    metrics = json.loads((out / "_runs" / run_id / "metrics.json").read_text())
    assert metrics["counts"]["ok"] == N_IMAGES
    # Sized for 1-CPU nodes: no actor may ask for more CPUs than a node has.
    assert metrics["config"]["pool"]["num_cpus"] <= 1.0
