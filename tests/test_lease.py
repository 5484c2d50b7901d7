"""The output lease (stylebatch.io.lease) and the conditional storage primitives under it, on local
disk and on SeaweedFS (TestS3*: the s3 tier, set automatically by the s3_server fixture).

Races are run both between threads (many at once, several rounds) and between processes started
for the same instant; crashes are real SIGKILLs of a holder process. Expiry and waiting run on a
FakeClock (the lease's clock and sleep are parameters): a ttl passes without being waited out."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stylebatch.io import lease, storage
from stylebatch.io.lease import LeaseHeld, LeaseInfo, LeaseUnreadable

ROOT = Path(__file__).resolve().parents[1]

# A run in its own process: acquire at once ("hold": then hold until killed), or ("race") say it is
# ready, read the instant to acquire at from stdin, acquire then and hold until stdin closes; report
# the result on stdout.
_WORKER = r"""
import json, os, sys, time
from stylebatch.io import lease
out, run_id, mode, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
start_at = 0.0
if mode == "race":
    print(json.dumps({"ready": True}), flush=True)
    start_at = float(sys.stdin.readline())
delay = start_at - time.time()
if delay > 0:
    time.sleep(delay)
t0 = time.time()
try:
    held = lease.acquire(out, run_id, ttl=ttl)
except lease.LeaseHeld as exc:
    print(json.dumps({"result": "held", "message": str(exc), "on_time": delay > 0, "t": t0}), flush=True)
    sys.exit(0)
print(json.dumps({"result": "acquired", "on_time": delay > 0, "t": t0, "pid": os.getpid()}), flush=True)
if mode == "hold":
    time.sleep(3600)
sys.stdin.read()
held.release()
"""


def _spawn(out: str, run_id: str, *, mode: str = "hold", ttl: float = 60.0,
           host: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(lease.HOST_ENV, None)
    if host is not None:
        env[lease.HOST_ENV] = host
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, out, run_id, mode, repr(ttl)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))


def _report(proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        raise AssertionError(f"worker said nothing within {timeout}s; stderr:\n{proc.stderr.read()}")
    return json.loads(line)


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    """Until ``pid`` is a zombie or gone (a SIGKILL is delivered asynchronously); does not reap it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                text = fh.read()
        except OSError:
            return
        if text[text.rfind(")") + 2:].split()[0] in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} still alive after SIGKILL")


class FakeClock:
    """The lease's clock (epoch seconds, starting now) and sleep: sleeping advances it at once."""

    def __init__(self) -> None:
        self.now = float(round(time.time()))  # whole seconds: the lease record keeps times to 1 ms
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def _until(condition, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (a bound against hanging, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {condition}")
        time.sleep(0.02)


def _cleanup(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()


# --------------------------------------------------------------------------------------------
# Cases run on both backends
# --------------------------------------------------------------------------------------------


class _Cases:
    """Subclasses provide the ``out`` fixture: an output prefix on one backend."""

    # ---- storage primitives

    def test_create_exclusive_replace_and_delete_if_match(self, out):
        uri = storage.join(out, "_runs", "obj.json")
        fp = storage.create_exclusive(uri, b"one")
        assert storage.read_with_fingerprint(uri) == (b"one", fp)
        assert storage.stat(uri).fingerprint == fp
        with pytest.raises(storage.AlreadyExistsError, match="already exists"):
            storage.create_exclusive(uri, b"two")
        assert storage.read_bytes(uri) == b"one"

        with pytest.raises(storage.PreconditionFailedError):
            storage.replace_if_match(uri, b"three", "0" * len(fp))
        fp2 = storage.replace_if_match(uri, b"three", fp)
        assert fp2 != fp and storage.read_with_fingerprint(uri) == (b"three", fp2)
        with pytest.raises(storage.PreconditionFailedError):
            storage.replace_if_match(uri, b"four", fp)  # the version read before is gone

        with pytest.raises(storage.PreconditionFailedError):
            storage.delete_if_match(uri, fp)
        assert storage.exists(uri)
        storage.delete_if_match(uri, fp2)
        assert not storage.exists(uri)
        storage.delete_if_match(uri, fp2)  # absent: nothing to do
        with pytest.raises(storage.PreconditionFailedError):
            storage.replace_if_match(uri, b"five", fp2)
        assert storage.create_exclusive(uri, b"six")

    def test_create_exclusive_race_between_threads(self, out):
        uri = storage.join(out, "_runs", "race.json")
        for round_ in range(3):
            barrier = threading.Barrier(8)
            won: list[int] = []
            lost: list[int] = []

            def attempt(i: int) -> None:
                barrier.wait()
                try:
                    storage.create_exclusive(uri, str(i).encode())
                    won.append(i)
                except storage.AlreadyExistsError:
                    lost.append(i)

            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(won) == 1 and len(lost) == 7, (round_, won, lost)
            assert storage.read_bytes(uri) == str(won[0]).encode()
            storage.delete(uri)

    # ---- holding, releasing

    def test_second_acquire_names_the_holder(self, out):
        with lease.output_lease(out, "20260101-000000-first", ttl=30) as first:
            assert first.uri == storage.join(out, "_runs", "_lease.json")
            with pytest.raises(LeaseHeld) as info:
                lease.acquire(out, "20260101-000001-second", ttl=30)
            msg = str(info.value)
            for part in ("20260101-000000-first", f"pid {os.getpid()}", lease._host(), "--wait", "--force",
                         first.uri, "still running on this host", "last heartbeat", "expires in"):
                assert part in msg, (part, msg)
            assert info.value.holder.run_id == "20260101-000000-first"
            assert info.value.uri == first.uri
            assert lease.read_lease(out).token == first.token
        assert lease.read_lease(out) is None
        assert not storage.exists(first.uri)

    def test_release_then_acquire(self, out):
        a = lease.acquire(out, "run-a", ttl=30)
        a.release()
        a.release()  # idempotent
        with lease.output_lease(out, "run-b", ttl=30) as b:
            assert b.took_over is None
            assert lease.read_lease(out).run_id == "run-b"
        # released on an exception too
        with pytest.raises(RuntimeError):
            with lease.output_lease(out, "run-c", ttl=30):
                raise RuntimeError("boom")
        assert lease.read_lease(out) is None

    def test_lease_race_between_threads(self, out):
        for round_ in range(3):
            barrier = threading.Barrier(6)
            got: list[lease.Lease] = []
            held: list[LeaseHeld] = []

            def attempt(i: int) -> None:
                barrier.wait()
                try:
                    got.append(lease.acquire(out, f"run-{round_}-{i}", ttl=30))
                except LeaseHeld as exc:
                    held.append(exc)

            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(got) == 1 and len(held) == 5, (round_, got, held)
            assert all(exc.holder.run_id == got[0].run_id for exc in held)
            got[0].release()

    def test_two_processes_started_at_the_same_instant(self, out):
        procs = [_spawn(out, f"run-{i}", mode="race") for i in range(2)]
        try:
            assert all(_report(p)["ready"] for p in procs)  # both interpreters are up and waiting
            start_at = time.time() + 1.0
            for p in procs:
                p.stdin.write(f"{start_at!r}\n")
                p.stdin.flush()
            reports = [_report(p) for p in procs]
            assert all(r["on_time"] for r in reports), reports  # else the race was not simultaneous
            assert abs(reports[0]["t"] - reports[1]["t"]) < 0.25, reports
            results = sorted(r["result"] for r in reports)
            assert results == ["acquired", "held"], reports
            winner = "run-0" if reports[0]["result"] == "acquired" else "run-1"
            loser = next(r for r in reports if r["result"] == "held")
            assert f"run {winner} " in loser["message"] and "--wait" in loser["message"]
            for p in procs:
                p.stdin.close()
                assert p.wait(timeout=60) == 0, p.stderr.read()
        finally:
            _cleanup(*procs)
        assert lease.read_lease(out) is None  # the winner released it

    # ---- crashes, expiry, force, wait, heartbeat

    def test_sigkilled_holder_on_this_host_is_taken_over_at_once(self, out):
        holder = _spawn(out, "crashed-run", ttl=60)
        try:
            assert _report(holder)["result"] == "acquired"
            with pytest.raises(LeaseHeld, match="crashed-run"):
                lease.acquire(out, "rerun", ttl=60)
            holder.send_signal(signal.SIGKILL)
            _wait_dead(holder.pid)  # a zombie now: killed but not reaped
            t0 = time.monotonic()
            with lease.output_lease(out, "rerun", ttl=60) as rerun:
                took = time.monotonic() - t0
                assert rerun.took_over_reason == "holder gone"
                assert rerun.took_over.run_id == "crashed-run" and rerun.took_over.pid == holder.pid
            assert took < 5.0, took  # not the 60 s ttl
        finally:
            _cleanup(holder)
        # and once reaped (no such pid at all)
        holder = _spawn(out, "crashed-again", ttl=60)
        try:
            assert _report(holder)["result"] == "acquired"
            holder.kill()
            holder.wait(timeout=30)
            with lease.output_lease(out, "rerun-2", ttl=60) as rerun:
                assert rerun.took_over_reason == "holder gone"
        finally:
            _cleanup(holder)

    def test_holder_on_another_host_is_taken_over_only_after_expiry(self, out):
        ttl = 60.0
        holder = _spawn(out, "remote-run", ttl=ttl, host="other-host")
        try:
            assert _report(holder)["result"] == "acquired"
            holder.kill()
            holder.wait(timeout=30)
        finally:
            _cleanup(holder)
        info = lease.read_lease(out)
        assert info.host == "other-host"
        clock = FakeClock()
        clock.now = info.expires_at - 1.0  # its process is gone, but we cannot see that host
        with pytest.raises(LeaseHeld) as exc:
            lease.acquire(out, "local-run", ttl=ttl, clock=clock, sleep=clock.sleep)
        assert "remote-run" in str(exc.value) and "host other-host" in str(exc.value)
        assert "still running" not in str(exc.value)
        clock.now = info.expires_at - 25.0
        waits: list[LeaseInfo] = []
        with lease.output_lease(out, "local-run", ttl=ttl, wait=True, poll=10.0, on_wait=waits.append,
                                clock=clock, sleep=clock.sleep) as got:
            assert clock() > info.expires_at
            assert got.took_over_reason == "expired" and got.took_over.run_id == "remote-run"
        # polled every 10 s, then woke up just after the expiry rather than a whole poll later
        assert clock.slept[:2] == [10.0, 10.0] and 5.0 <= clock.slept[2] < 5.1, clock.slept
        assert len(waits) == 3 and all(w.run_id == "remote-run" for w in waits)

    def test_force_breaks_a_live_lease_and_the_old_holder_learns_it(self, out):
        a = lease.acquire(out, "run-a", ttl=30)
        try:
            with lease.output_lease(out, "run-b", force=True, ttl=30) as b:
                assert b.took_over_reason == "forced" and b.took_over.run_id == "run-a"
                assert not a.lost
                assert a.renew() is False
                assert a.lost and "run-b" in a.lost_reason
                with pytest.raises(lease.LeaseLost, match="run-b"):
                    a.check()
                a.release()  # must not delete b's lease
                assert lease.read_lease(out).token == b.token
                b.check()
        finally:
            a.release()
        assert lease.read_lease(out) is None

    def test_two_forcers_do_not_both_win(self, out, monkeypatch):
        a = lease.acquire(out, "run-a", ttl=30)
        real_read = storage.read_with_fingerprint
        barrier = threading.Barrier(2)
        first_read: set[str] = set()

        def read_then_meet(uri, **kw):
            result = real_read(uri, **kw)
            name = threading.current_thread().name
            if name.startswith("forcer") and name not in first_read:
                first_read.add(name)
                barrier.wait(timeout=30)  # both have read run-a's lease before either replaces it
            return result

        monkeypatch.setattr(storage, "read_with_fingerprint", read_then_meet)
        got: list[lease.Lease] = []
        held: list[LeaseHeld] = []

        def force(i: int) -> None:
            try:
                got.append(lease.acquire(out, f"forcer-{i}", force=True, ttl=30))
            except LeaseHeld as exc:
                held.append(exc)

        threads = [threading.Thread(target=force, args=(i,), name=f"forcer-{i}") for i in range(2)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(got) == 1 and len(held) == 1, (got, held)
            assert got[0].took_over.run_id == "run-a"
            assert held[0].holder.run_id == got[0].run_id
        finally:
            for g in got:
                g.release()
            a.release()

    def test_wait_proceeds_when_the_holder_releases(self, out):
        a = lease.acquire(out, "run-a", ttl=30)
        slept: list[float] = []

        def sleep(seconds: float) -> None:  # run-a finishes during run-b's second wait
            slept.append(seconds)
            if len(slept) == 2:
                a.release()

        seen: list[LeaseInfo] = []
        try:
            with lease.output_lease(out, "run-b", wait=True, poll=0.1, ttl=30, on_wait=seen.append,
                                    sleep=sleep) as b:
                assert b.took_over is None  # a clean handover, not a takeover
                assert lease.read_lease(out).token == b.token
        finally:
            a.release()
        assert slept == [0.1, 0.1]
        assert len(seen) == 2 and all(h.run_id == "run-a" for h in seen)

    def test_heartbeat_extends_the_expiry(self, out):
        ttl = 1.0  # a heartbeat every 0.25 s of real time
        clock = FakeClock()
        with lease.output_lease(out, "run-a", ttl=ttl, clock=clock) as a:
            first = lease.read_lease(out)
            for _ in range(2):
                clock.advance(2.5 * ttl)  # well past the last expiry
                _until(lambda: lease.read_lease(out).heartbeat_at == clock())  # the next heartbeat
                now = lease.read_lease(out)
                assert now.token == first.token
                assert now.expires_at == clock() + ttl
                with pytest.raises(LeaseHeld, match="still running"):
                    lease.acquire(out, "run-b", ttl=ttl, clock=clock)
            assert not a.lost and a.info.expires_at == clock() + ttl
            a._stop.set()  # the heartbeat stops (as if its thread hung) ...
            a._thread.join()
            clock.advance(ttl + 0.5)  # ... and the lease of a live process expires all the same
            with lease.output_lease(out, "run-b", ttl=ttl, clock=clock) as b:
                assert b.took_over_reason == "expired" and b.took_over.run_id == "run-a"
            assert a.renew() is False and a.lost

    def test_unreadable_lease_is_reported_and_force_breaks_it(self, out):
        uri = lease.lease_uri(out)
        storage.write_bytes(uri, b"{not json")
        with pytest.raises(LeaseUnreadable) as info:
            lease.acquire(out, "run-a", ttl=30)
        msg = str(info.value)
        assert uri in msg and "not a valid lease" in msg and "--force" in msg
        with pytest.raises(LeaseUnreadable):
            lease.acquire(out, "run-a", ttl=30, wait=True, poll=0.1)  # waiting would never end
        storage.write_bytes(uri, json.dumps({"kind": lease.KIND, "run_id": "x"}).encode())
        with pytest.raises(LeaseUnreadable, match="missing field"):
            lease.acquire(out, "run-a", ttl=30)
        with lease.output_lease(out, "run-a", force=True, ttl=30) as a:
            assert a.took_over_reason == "forced" and a.took_over is None
        assert lease.read_lease(out) is None


class TestLocal(_Cases):
    @pytest.fixture
    def out(self, tmp_path):
        return str(tmp_path / "out")


class TestS3(_Cases):
    @pytest.fixture
    def out(self, s3_prefix):
        return s3_prefix


# --------------------------------------------------------------------------------------------
# Local-only: how a recorded holder is judged
# --------------------------------------------------------------------------------------------


def _plant(out: str, **changes) -> LeaseInfo:
    """Write a lease record as if this process held it, with ``changes``."""
    now = time.time()
    stat = lease._proc_stat(os.getpid())
    info = LeaseInfo(run_id="planted", host=lease._host(), pid=os.getpid(), token="t" * 32, acquired_at=now,
                     heartbeat_at=now, expires_at=now + 60, ttl=60.0, pid_start=stat[1] if stat else None,
                     boot_id=lease._boot_id(), pid_namespace=lease._pid_namespace())
    import dataclasses

    info = dataclasses.replace(info, **changes)
    storage.write_bytes(lease.lease_uri(out), info.to_bytes())
    return info


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    out = str(tmp_path / "out")
    _plant(out)  # a live process with the right start time: held
    with pytest.raises(LeaseHeld, match="still running"):
        lease.acquire(out, "run-b", ttl=30)
    _plant(out, pid_start="1")  # same pid, another start time: the holder is gone
    with lease.output_lease(out, "run-b", ttl=30) as b:
        assert b.took_over_reason == "holder gone"


def test_restarted_host_means_the_holder_is_gone(tmp_path):
    out = str(tmp_path / "out")
    _plant(out, boot_id="00000000-0000-0000-0000-000000000000")
    with lease.output_lease(out, "run-b", ttl=30) as b:
        assert b.took_over_reason == "holder gone"


def test_holder_in_another_container_waits_for_expiry(tmp_path):
    out = str(tmp_path / "out")
    _plant(out, pid=999999, pid_namespace="pid:[1]")  # its pid means nothing here
    with pytest.raises(LeaseHeld, match="another container"):
        lease.acquire(out, "run-b", ttl=30)
    _plant(out, pid=999999, pid_namespace="pid:[1]", expires_at=time.time() - 1)
    with lease.output_lease(out, "run-b", ttl=30) as b:
        assert b.took_over_reason == "expired"


def test_other_host_dead_pid_is_not_taken_before_expiry(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    _plant(out, host="elsewhere", pid=999999)
    with pytest.raises(LeaseHeld, match="host elsewhere"):
        lease.acquire(out, "run-b", ttl=30)
    monkeypatch.setenv(lease.HOST_ENV, "elsewhere")  # the same command, run on that host
    with lease.output_lease(out, "run-b", ttl=30) as b:
        assert b.took_over_reason == "holder gone" and b.info.host == "elsewhere"


def test_lease_record_round_trip_and_validation():
    info = LeaseInfo(run_id="r", host="h", pid=1, token="t", acquired_at=1.0, heartbeat_at=2.0, expires_at=3.0,
                     ttl=1.0)
    assert LeaseInfo.from_bytes(info.to_bytes()) == info
    doc = json.loads(info.to_bytes())
    assert doc["kind"] == lease.KIND and doc["version"] == lease.VERSION
    for bad, why in ((b"\xff", "not JSON"), (b"[]", "not a JSON object"), (b"{}", "kind"),
                     (json.dumps({**doc, "pid": "1"}).encode(), "'pid'"),
                     (json.dumps({**doc, "run_id": ""}).encode(), "'run_id'")):
        with pytest.raises(ValueError, match=why):
            LeaseInfo.from_bytes(bad)


def test_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="contradict"):
        lease.acquire(str(tmp_path), "r", wait=True, force=True)
    with pytest.raises(ValueError, match="ttl"):
        lease.acquire(str(tmp_path), "r", ttl=0)


def test_a_retried_write_that_already_applied_is_recognised(tmp_path, monkeypatch):
    """A conditional write retried after a lost response answers "precondition failed" although
    the first attempt applied: the lease is ours all the same (found by its token)."""
    out = str(tmp_path / "out")
    real_create, real_replace = storage.create_exclusive, storage.replace_if_match

    def create_then_fail(uri, data, **kw):
        real_create(uri, data, **kw)
        raise storage.AlreadyExistsError(f"create {uri}: already exists")

    def replace_then_fail(uri, data, fp, **kw):
        real_replace(uri, data, fp, **kw)
        raise storage.PreconditionFailedError(f"replace {uri}: changed since it was read")

    monkeypatch.setattr(storage, "create_exclusive", create_then_fail)
    with lease.output_lease(out, "run-a", ttl=30) as a:
        assert lease.read_lease(out).token == a.token and a.took_over is None
        monkeypatch.setattr(storage, "replace_if_match", replace_then_fail)
        assert a.renew() is True and not a.lost
        with lease.output_lease(out, "run-b", ttl=30, force=True) as b:
            assert b.took_over_reason == "forced" and b.took_over.run_id == "run-a"
            assert lease.read_lease(out).token == b.token
    assert lease.read_lease(out) is None
