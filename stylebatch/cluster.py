"""Running the job on a Ray cluster through Ray's job submission API (``--address http://head:8265``)."""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from stylebatch.io import storage

# Never shipped to the cluster: environments, checkouts, training runs, local outputs.
_EXCLUDES = [".venv", ".git", ".train", ".eval", ".eval_cache", "stylebatch-output", "stylebatch-demo", "**/__pycache__", ".pytest_cache"]


def project_root() -> Path:
    """The folder holding ``stylebatch/`` and ``jobs/``: the job's working_dir."""
    return Path(__file__).resolve().parents[1]


def entrypoint_for(cfg) -> str:
    """``python -m jobs.restyle ...``: the same options as ``stylebatch submit`` (both come from
    ``config.JOB_OPTIONS``), run on the cluster."""
    from stylebatch.config import command_line

    args = [cfg.manifest, *command_line(cfg)]
    return "python -m jobs.restyle " + " ".join(shlex.quote(a) for a in args)


def submit_job(address: str, cfg, *, wait: bool = True, poll_s: float = 2.0) -> int:
    """Submit the job, stream its logs, and return 0 if it succeeded (every row ok or skipped)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=entrypoint_for(cfg),
        runtime_env={"working_dir": str(project_root()), "excludes": _EXCLUDES},
        metadata={"tool": "stylebatch", "output": storage.redact(cfg.output)},
    )
    print(f"submitted Ray job {job_id} to {address}", file=sys.stderr)
    if not wait:
        return 0
    shown = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            sys.stdout.write(storage.redact(logs[shown:]))
            sys.stdout.flush()
            shown = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            print(f"Ray job {job_id}: {status.value}", file=sys.stderr)
            return 0 if status == JobStatus.SUCCEEDED else 1
        time.sleep(poll_s)


__all__ = ["entrypoint_for", "project_root", "submit_job"]
