"""One run per output at a time: a lease object under the output prefix.

``<out>/_runs/_lease.json`` names the run that is writing to ``<out>``: run id, host, pid (with
the process's start time, so a reused pid is not mistaken for the holder), when it was acquired,
its last heartbeat and when it expires (heartbeat + ttl), and a random token that identifies this
acquisition. The holder renews it from a daemon thread every ttl/4 and deletes it on exit.

Acquiring (:func:`acquire`, or the :func:`output_lease` context manager):

1. create the object exclusively; if that succeeds the output is ours;
2. otherwise read it and take it over, with a conditional replace of exactly the version read, when
   * ``force`` is set (it breaks the lease of the holder seen first: if another run replaces that
     holder in the meantime, the forcing run does not break the newcomer's lease too), or
   * the holder was on this host (same host name, same boot, same pid namespace) and its process
     is gone (no such pid, a zombie, or a pid with another start time): a rerun right after a
     crash proceeds at once, or
   * the lease has expired (now > expires_at): a holder on another host, or in another container,
     whose process we cannot see, is presumed dead only after its ttl;
3. otherwise raise :class:`LeaseHeld` naming the holder, or with ``wait`` poll every ``poll``
   seconds (calling ``on_wait(holder)``) until it is released, dies or expires.

Two runs racing for the same object: of two exclusive creates, or two conditional replaces of the
same version, exactly one succeeds and the other re-reads and sees the winner. After every create
or replace the object is read back and must hold our token (a defence against a server that
ignores the conditions; it narrows but cannot close the window on such a server).

Storage (see stylebatch.io.storage, "Conditional writes"): S3 uses PutObject with ``If-None-Match: *``
(create) and ``If-Match: <etag>`` (heartbeat, takeover), DeleteObject with ``If-Match: <etag>``
(release); a server that answers 501 to a conditional write is reported as unsupported rather than
silently unsafe. Measured on SeaweedFS 4.48 (the version the tests run against): it honours all
three: 412 PreconditionFailed when the object exists / has another ETag (also for If-Match on an
absent key), and under 8 simultaneous conditional PUTs of one key exactly one succeeded, in each of
5 trials for each header. AWS S3 supports the same headers (writes since 2024, deletes on general
purpose buckets since 2025). Locally: temp file + os.link (fails when the name exists) for create,
compare-and-replace under an flock on ``<out>/_runs/._lease.json.lock`` for replace and delete.

A lease object that is not a valid lease (not JSON, missing fields) is never guessed about: acquiring
raises :class:`LeaseUnreadable` naming the object, and ``force`` breaks it.

Expiry compares the holder's recorded wall-clock time with ours, so hosts sharing an output need
clocks synchronised to well within the ttl (NTP is plenty for the default 120 s).

The clock and the sleep are parameters of :func:`acquire` (``clock=time.time``, ``sleep=time.sleep``;
the held lease keeps the clock for its heartbeats), so tests can let a ttl pass without waiting it
out. The heartbeat thread's interval is always real time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from stylebatch.io import storage

__all__ = [
    "LEASE_NAME",
    "HOST_ENV",
    "DEFAULT_TTL",
    "LeaseHeld",
    "LeaseUnreadable",
    "LeaseLost",
    "LeaseInfo",
    "Lease",
    "lease_uri",
    "read_lease",
    "acquire",
    "output_lease",
]

log = logging.getLogger(__name__)

LEASE_NAME = "_lease.json"
HOST_ENV = "STYLEBATCH_LEASE_HOST"  # overrides socket.gethostname() (tests simulate another host)
DEFAULT_TTL = 120.0
KIND = "stylebatch-output-lease"
VERSION = 1
_MAX_LEASE_BYTES = 64 * 1024


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class LeaseHeld(Exception):
    """Another run holds the output. ``holder`` is its :class:`LeaseInfo` (None when the lease
    object is unreadable), ``uri`` the lease object."""

    def __init__(self, message: str, *, uri: str, holder: Optional["LeaseInfo"]):
        super().__init__(storage.redact(message))
        self.uri = uri
        self.holder = holder


class LeaseUnreadable(LeaseHeld):
    """The lease object exists but is not a lease this version can read; only ``force`` breaks it."""


class LeaseLost(Exception):
    """Raised by :meth:`Lease.check` once another run has taken the lease over (forced)."""


# --------------------------------------------------------------------------------------------
# This process, and whether a recorded process is still running
# --------------------------------------------------------------------------------------------


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> Optional[tuple[str, str]]:
    """(state, starttime in clock ticks since boot) from /proc/<pid>/stat, or None."""
    text = _read_text(f"/proc/{pid}/stat")
    if not text:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses; fields follow the last ")".
    fields = text[text.rfind(")") + 2:].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def _boot_id() -> Optional[str]:
    return _read_text("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _host() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def _process_gone(pid: int, start: Optional[str]) -> Optional[bool]:
    """True: no process ``pid`` with that start time is running here; False: it is; None: can't tell."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return None
    st = _proc_stat(pid)
    if st is None:
        if not os.path.exists("/proc/self/stat"):
            # No /proc (not Linux): the pid exists and may have been reused; assume it is the holder.
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True  # exited just now
        except OSError:
            pass
        return None  # hidden from us (/proc mounted with hidepid)
    state, started = st
    if state in ("Z", "X"):  # killed, not yet reaped
        return True
    if start is not None and started != start:
        return True  # the pid was reused by another process
    return False


# --------------------------------------------------------------------------------------------
# The lease record
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LeaseInfo:
    """What the lease object says. Times are epoch seconds (wall clock of the holder)."""

    run_id: str
    host: str
    pid: int
    token: str
    acquired_at: float
    heartbeat_at: float
    expires_at: float
    ttl: float
    pid_start: Optional[str] = None  # /proc/<pid>/stat starttime (clock ticks since boot)
    boot_id: Optional[str] = None
    pid_namespace: Optional[str] = None

    def to_bytes(self) -> bytes:
        doc = {"kind": KIND, "version": VERSION, **dataclasses.asdict(self)}
        for key in ("acquired_at", "heartbeat_at", "expires_at"):
            doc[key] = round(doc[key], 3)
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "LeaseInfo":
        """Parse a lease object; ValueError saying what is wrong."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"not a JSON object but {type(doc).__name__}")
        if doc.get("kind") != KIND:
            raise ValueError(f"kind is {doc.get('kind')!r}, not {KIND!r}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in doc:
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"missing field {f.name!r}")
                continue
            value = doc[f.name]
            if f.name in ("run_id", "host", "token"):
                ok = isinstance(value, str) and value != ""
            elif f.name == "pid":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif f.name in ("acquired_at", "heartbeat_at", "expires_at", "ttl"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            else:
                ok = value is None or isinstance(value, str)
            if not ok:
                raise ValueError(f"field {f.name!r} has an invalid value {value!r}")
            kwargs[f.name] = value
        return cls(**kwargs)

    def renewed(self, now: float) -> "LeaseInfo":
        return dataclasses.replace(self, heartbeat_at=now, expires_at=now + self.ttl)

    def describe(self, now: Optional[float] = None) -> str:
        """"run R (host H, pid P) since T; last heartbeat Xs ago, expires in Ys (at T2)"."""
        now = time.time() if now is None else now
        left = self.expires_at - now
        expiry = f"expires in {_span(left)}" if left >= 0 else f"expired {_span(-left)} ago"
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}) since {_utc(self.acquired_at)}; "
                f"last heartbeat {_span(now - self.heartbeat_at)} ago, {expiry} (at {_utc(self.expires_at)})")


def _utc(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def lease_uri(output: str) -> str:
    """The lease object of an output: ``<output>/_runs/_lease.json``."""
    return storage.join(output, "_runs", LEASE_NAME)


def read_lease(output: str) -> Optional[LeaseInfo]:
    """The current holder of ``output`` (None when nobody holds it). Raises LeaseUnreadable for
    an object that is not a valid lease."""
    uri = lease_uri(output)
    try:
        data, _ = storage.read_with_fingerprint(uri, max_bytes=_MAX_LEASE_BYTES)
    except storage.NotFoundError:
        return None
    except storage.ObjectTooLargeError:
        raise _unreadable(output, uri, f"over {_MAX_LEASE_BYTES} bytes") from None
    try:
        return LeaseInfo.from_bytes(data)
    except ValueError as exc:
        raise _unreadable(output, uri, str(exc)) from None


# --------------------------------------------------------------------------------------------
# Holding a lease
# --------------------------------------------------------------------------------------------


class Lease:
    """A held lease. ``info`` is the record as last written, ``took_over`` the previous holder
    when this lease was taken over (``took_over_reason``: "forced", "holder gone" or "expired"),
    ``lost`` becomes True when a heartbeat finds that another run has taken the lease."""

    def __init__(self, output: str, uri: str, info: LeaseInfo, fingerprint: str, *,
                 took_over: Optional[LeaseInfo] = None, took_over_reason: Optional[str] = None,
                 clock: Callable[[], float] = time.time):
        self.output = output
        self.uri = uri
        self.info = info
        self.took_over = took_over
        self.took_over_reason = took_over_reason
        self.lost_reason: Optional[str] = None
        self._fingerprint = fingerprint
        self._clock = clock
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._released = False
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def token(self) -> str:
        return self.info.token

    @property
    def ttl(self) -> float:
        return self.info.ttl

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise LeaseLost if another run has taken this lease over."""
        if self._lost.is_set():
            raise LeaseLost(self.lost_reason or f"lease {self.uri} was lost")

    def _mark_lost(self, why: str) -> None:
        self.lost_reason = storage.redact(
            f"run {self.run_id} lost its lease on {self.output} ({self.uri}): {why}; "
            "another run may now be writing to the same output")
        self._lost.set()
        log.error("%s", self.lost_reason)

    def renew(self) -> bool:
        """Extend the expiry now (the heartbeat thread calls this every ttl/4). False when the
        renewal failed (the lease is lost, released, or the store did not answer)."""
        with self._lock:
            if self._released or self._lost.is_set():
                return False
            new = self.info.renewed(self._clock())

            def put() -> None:
                self._fingerprint = storage.replace_if_match(self.uri, new.to_bytes(), self._fingerprint,
                                                             content_type="application/json")

            applied = self._conditional(put, logging.WARNING, f"could not renew the lease on {self.output} "
                                        f"(retrying; it expires at {_utc(self.info.expires_at)} unless renewed)")
            if applied:
                self.info = new
                return True
            if applied is None:
                return False
            # Changed under us: either our own retried write, or someone took it over.
            try:
                data, fp = storage.read_with_fingerprint(self.uri, max_bytes=_MAX_LEASE_BYTES)
            except storage.NotFoundError:
                self._mark_lost("the lease object was deleted")
                return False
            except storage.StorageError as exc:
                log.warning("%s", storage.redact(f"could not read the lease on {self.output}: {exc}"))
                return False
            try:
                current = LeaseInfo.from_bytes(data)
            except ValueError as exc:
                self._mark_lost(f"the lease object was overwritten with something else ({exc})")
                return False
            if current.token == self.token:
                self._fingerprint, self.info = fp, current
                return True
            self._mark_lost(f"taken over by {current.describe(self._clock())}")
            return False

    @staticmethod
    def _conditional(write: Callable[[], Any], level: int, failure: str) -> Optional[bool]:
        """Run one conditional write: True if it applied, False if the object changed under us
        (the caller reads it back to see why), None if the store failed (logged at ``level``)."""
        try:
            write()
            return True
        except storage.PreconditionFailedError:
            return False
        except storage.StorageError as exc:
            log.log(level, "%s", storage.redact(f"{failure}: {exc}"))
            return None

    def _heartbeat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.renew()
            if self._lost.is_set():
                return

    def _start(self) -> None:
        interval = max(0.05, self.ttl / 4)
        self._thread = threading.Thread(target=self._heartbeat, args=(interval,),
                                        name=f"lease-heartbeat-{self.run_id}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease object if it is still ours. Never raises for
        storage failures (it logs them: the lease then expires after its ttl)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._released:
                return
            self._released = True
            if self._lost.is_set():
                return
            fp = self._fingerprint
            for _ in range(3):
                if self._conditional(lambda: storage.delete_if_match(self.uri, fp), logging.ERROR,
                                     f"could not release the lease on {self.output} ({self.uri}; it expires at "
                                     f"{_utc(self.info.expires_at)})") is not False:
                    return
                try:
                    data, fp = storage.read_with_fingerprint(self.uri, max_bytes=_MAX_LEASE_BYTES)
                    current = LeaseInfo.from_bytes(data)
                except storage.NotFoundError:
                    return
                except (storage.StorageError, ValueError) as exc:
                    log.error("%s", storage.redact(f"not releasing the lease {self.uri}: it changed and "
                                                   f"cannot be read back ({exc})"))
                    return
                if current.token != self.token:
                    log.error("%s", storage.redact(
                        f"not releasing the lease on {self.output}: it was taken over by "
                        f"{current.describe(self._clock())}"))
                    return
            log.error("%s", storage.redact(f"could not release the lease {self.uri}: it keeps changing"))

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.uri!r}, run_id={self.run_id!r}, lost={self.lost})"


# --------------------------------------------------------------------------------------------
# Acquiring
# --------------------------------------------------------------------------------------------


def _held_message(output: str, uri: str, holder: LeaseInfo, status: str, now: float) -> str:
    status = f"; {status}" if status else ""
    return (f"output {output} is in use by {holder.describe(now)}{status}. Lease object: {uri}. "
            "Use --wait to wait for that run to finish, or --force to break its lease "
            "(only if you know it is no longer writing).")


def _unreadable(output: str, uri: str, why: str) -> LeaseUnreadable:
    return LeaseUnreadable(
        f"output {output} has a lease object {uri} that is not a valid lease ({why}), so the run holding "
        "the output cannot be identified. If no other run is writing to this output, rerun with --force "
        "to break it (or delete that object).", uri=uri, holder=None)


def _verdict(holder: LeaseInfo, me: LeaseInfo, now: float) -> tuple[Optional[str], str]:
    """(reason to take over now or None, a note on the holder's status for messages)."""
    if holder.host == me.host:
        if holder.boot_id and me.boot_id and holder.boot_id != me.boot_id:
            return "holder gone", "this host has restarted since"
        if holder.pid_namespace and me.pid_namespace and holder.pid_namespace != me.pid_namespace:
            note = "it is on this host but in another container, where its process cannot be checked"
        else:
            gone = _process_gone(holder.pid, holder.pid_start)
            if gone:
                return "holder gone", "its process is gone"
            note = "its process is still running on this host" if gone is False else ""
    else:
        note = ""
    if now > holder.expires_at:
        return "expired", note
    return None, note


def acquire(output: str, run_id: str, *, wait: bool = False, force: bool = False, ttl: float = DEFAULT_TTL,
            poll: float = 2.0, on_wait: Optional[Callable[[LeaseInfo], None]] = None,
            clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> Lease:
    """Take the lease on ``output`` for ``run_id`` and start its heartbeat (see the module doc).
    Raises LeaseHeld / LeaseUnreadable, or StorageError when the store fails. The caller must
    ``release()`` it; :func:`output_lease` does that. ``clock`` (epoch seconds) and ``sleep`` are
    for tests; the lease uses ``clock`` for its heartbeats too."""
    if wait and force:
        raise ValueError("wait and force contradict each other: wait for the running job, or break its lease")
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl}")
    if not poll > 0:
        raise ValueError(f"poll must be positive, got {poll}")
    uri = lease_uri(output)
    shown = storage.redact(output)
    token = uuid.uuid4().hex
    proc = _proc_stat(os.getpid())

    def record(now: float) -> LeaseInfo:
        return LeaseInfo(run_id=run_id, host=_host(), pid=os.getpid(), token=token, acquired_at=now,
                         heartbeat_at=now, expires_at=now + ttl, ttl=float(ttl),
                         pid_start=proc[1] if proc else None, boot_id=_boot_id(), pid_namespace=_pid_namespace())

    def confirmed(**kw: Any) -> Optional[Lease]:
        # Read back: on a server that ignored the condition, a concurrent writer may have won.
        try:
            data, now_fp = storage.read_with_fingerprint(uri, max_bytes=_MAX_LEASE_BYTES)
            current = LeaseInfo.from_bytes(data)
        except (storage.NotFoundError, storage.ObjectTooLargeError, ValueError):
            return None
        if current.token != token:
            log.warning("%s", storage.redact(f"lease {uri}: our write was replaced at once by "
                                             f"{current.describe(clock())} (does the store honour conditional "
                                             "writes?)"))
            return None
        lease = Lease(shown, uri, current, now_fp, clock=clock, **kw)
        lease._start()
        return lease

    force_target: Optional[str] = None  # the holder (token, or fingerprint if unreadable) force breaks
    quick = 0
    waits = 0
    attempted: dict[str, Any] = {}  # the takeover last tried, should its write turn out to have applied
    while True:
        quick += 1
        if quick > 3:  # the object keeps changing under us: do not spin
            sleep(random.uniform(0.05, 0.2))
        rec = record(clock())
        try:
            fp = storage.create_exclusive(uri, rec.to_bytes(), content_type="application/json")
        except storage.AlreadyExistsError:
            pass
        else:
            lease = confirmed()
            if lease is not None:
                return lease
            continue
        try:
            data, fp = storage.read_with_fingerprint(uri, max_bytes=_MAX_LEASE_BYTES)
        except storage.NotFoundError:
            continue  # released in between
        except storage.ObjectTooLargeError:
            data, fp = b"", None
            problem: Optional[str] = f"over {_MAX_LEASE_BYTES} bytes"
        holder: Optional[LeaseInfo] = None
        if fp is not None:
            try:
                holder = LeaseInfo.from_bytes(data)
                problem = None
            except ValueError as exc:
                problem = str(exc)
        if holder is not None and holder.token == token:
            # Our own create/replace went through on a retried request.
            lease = Lease(shown, uri, holder, fp, clock=clock, **attempted)
            lease._start()
            return lease
        now = clock()
        identity = holder.token if holder is not None else f"object {fp}"
        reason: Optional[str] = None
        note = ""
        if force and (force_target is None or force_target == identity):
            force_target = identity
            reason = "forced"
        elif holder is None:
            raise _unreadable(shown, uri, problem or "unreadable")
        else:
            reason, note = _verdict(holder, rec, now)
        if reason is not None and fp is None:
            # An oversized object has no fingerprint from us; only its stat can name the version.
            try:
                fp = storage.stat(uri).fingerprint
            except storage.NotFoundError:
                continue
        if reason is not None:
            rec = record(now)
            try:
                storage.replace_if_match(uri, rec.to_bytes(), fp, content_type="application/json")
            except storage.PreconditionFailedError:
                # Changed since we read it (a heartbeat, or another run won), or our retried write
                # applied the first time: judge again.
                attempted = {"took_over": holder, "took_over_reason": reason}
                continue
            lease = confirmed(took_over=holder, took_over_reason=reason)
            if lease is None:
                continue
            what = holder.describe(now) if holder is not None else f"an unreadable lease object ({problem})"
            log.warning("%s", storage.redact(f"run {run_id} took over the lease on {shown} ({reason}) from {what}"))
            return lease
        assert holder is not None
        if not wait:
            raise LeaseHeld(_held_message(shown, uri, holder, note, now), uri=uri, holder=holder)
        if on_wait is not None:
            on_wait(holder)
        elif waits % 30 == 0:
            log.info("%s", storage.redact(f"waiting for {holder.describe(now)} to release {shown}"))
        waits += 1
        quick = 0
        # Wake up at the expiry if that comes before the next poll.
        sleep(max(0.01, min(poll, holder.expires_at - now + 0.01)))


@contextmanager
def output_lease(output: str, run_id: str, *, wait: bool = False, force: bool = False, ttl: float = DEFAULT_TTL,
                 poll: float = 2.0, on_wait: Optional[Callable[[LeaseInfo], None]] = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> Iterator[Lease]:
    """Hold the lease on ``output`` for the duration of the block (see :func:`acquire`); it is
    released on exit, also on an exception. Check ``lease.lost`` (or ``lease.check()``) at points
    where writing on after a forced takeover would do harm."""
    lease = acquire(output, run_id, wait=wait, force=force, ttl=ttl, poll=poll, on_wait=on_wait, clock=clock,
                    sleep=sleep)
    try:
        yield lease
    finally:
        lease.release()
