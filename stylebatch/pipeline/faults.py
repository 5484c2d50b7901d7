"""Surviving a model process that dies on one image, and the fault-injection hook the tests use.

A Ray actor that exits mid-batch is restarted by Ray and the batch is retried; without memory of
the crash the same poisoned image would kill every retry. ``CrashJournal`` is a tiny named actor
per run that remembers which rows were in flight when a process died:

1. a batch that crashed before is retried one image at a time, each journalled alone;
2. an image that was in flight *alone* when a process died gets one more attempt alone (the death
   may not be its fault: a lost worker node takes its in-flight image down too); if it is in
   flight alone at a second death it is failed (status=error), not retried.

The journal lives on the driver's node: on any other node, losing that node would lose the
journal and fail every model batch after it.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

_FAULT_ENV = "STYLEBATCH_INJECT_FAULT"


def _journal_name(run_id: str) -> str:
    return f"stylebatch-crash-journal-{run_id}"


_SOLO_DEATHS_TO_FAIL = 2


class _Journal:
    def __init__(self):
        self.inflight: set[str] = set()
        self.solo_inflight: set[str] = set()
        self.solo_deaths: dict[str, int] = {}

    def begin(self, keys: list[str]) -> None:
        self.inflight.update(keys)
        if len(keys) == 1:
            self.solo_inflight.add(keys[0])

    def end(self, keys: list[str]) -> None:
        self.inflight.difference_update(keys)
        self.solo_inflight.difference_update(keys)

    def crashed_rows(self, keys: list[str]) -> list[str]:
        # A key still solo-in-flight when it is handed out again means the process running it died.
        for k in keys:
            if k in self.solo_inflight:
                self.solo_inflight.discard(k)  # stays in ``inflight``: retried alone
                self.solo_deaths[k] = self.solo_deaths.get(k, 0) + 1
        return [k for k in keys if self.solo_deaths.get(k, 0) >= _SOLO_DEATHS_TO_FAIL]

    def batch_crashed_before(self, keys: list[str]) -> bool:
        return any(k in self.inflight for k in keys)


# Driver-side handles of the journals this process created. A named (non-detached) actor is
# garbage-collected as soon as its creator holds no handle, so without this the journal died at
# once and every StylizeActor silently got a no-op journal (a poisoned image that kills the
# process then made Ray Data restart the actor forever).
_LIVE_JOURNALS: dict = {}


class CrashJournal:
    """Handle used inside actors; no-ops when Ray is not running (a plain library call)."""

    def __init__(self, actor=None):
        self._actor = actor

    @staticmethod
    def create(run_id: str) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # Pinned (hard) to the driver's node; soft affinity still let Ray place it on a worker.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        _LIVE_JOURNALS[run_id] = ray.remote(num_cpus=0)(_Journal).options(
            name=_journal_name(run_id), get_if_exists=True, scheduling_strategy=here).remote()

    @staticmethod
    def drop(run_id: str) -> None:
        import ray

        _LIVE_JOURNALS.pop(run_id, None)
        try:
            ray.kill(ray.get_actor(_journal_name(run_id)))
        except ValueError:
            pass

    @classmethod
    def for_run(cls, run_id: str) -> "CrashJournal":
        try:
            import ray

            return cls(ray.get_actor(_journal_name(run_id)))
        except Exception:  # not inside a Ray job: nothing to remember across processes
            return cls(None)

    def _call(self, method: str, keys: Iterable[str]):
        if self._actor is None:
            return None
        import ray

        return ray.get(getattr(self._actor, method).remote(list(keys)))

    def begin(self, keys: Iterable[str]) -> None:
        self._call("begin", keys)

    def end(self, keys: Iterable[str]) -> None:
        self._call("end", keys)

    def crashed_rows(self, keys: Iterable[str]) -> set[str]:
        return set(self._call("crashed_rows", keys) or ())

    def batch_crashed_before(self, keys: Iterable[str]) -> bool:
        return bool(self._call("batch_crashed_before", keys))


def maybe_inject_fault(uri: str) -> None:
    """Test hook: ``STYLEBATCH_INJECT_FAULT=<substring>:raise|exit`` makes the model stage fail on
    source URIs containing the substring (an exception, or the whole process exiting)."""
    spec = os.environ.get(_FAULT_ENV)
    if not spec:
        return
    needle, _, mode = spec.rpartition(":")
    if needle and needle in uri:
        if mode == "exit":
            os._exit(17)
        raise RuntimeError(f"injected fault for {os.path.basename(uri)}")
