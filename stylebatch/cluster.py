"""Running the job on a Ray cluster through Ray's job submission API (``--address http://head:8265``)."""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from . import storage

# Never shipped to the cluster: environments, checkouts, training runs, local outputs.
_EXCLUDES = [".venv", ".git", ".train", ".eval", ".eval_cache", "stylebatch-output", "stylebatch-demo", "**/__pycache__", ".pytest_cache"]


def project_root() -> Path:
    """The folder holding ``stylebatch/`` and ``jobs/``: the job's working_dir."""
    return Path(__file__).resolve().parents[1]


def entrypoint_for(cfg) -> str:
    """``python -m jobs.restyle ...``: the same options as ``stylebatch submit``, run on the cluster."""
    args = [cfg.manifest, "--output", cfg.output, "--style", cfg.style, "--format", cfg.output_format,
            "--jpeg-quality", str(cfg.output_quality), "--max-size", str(cfg.max_size or 0), "--batch-size", str(cfg.batch_size),
            "--premium-iterations", str(cfg.premium_iterations), "--device", cfg.device,
            "--precision", cfg.precision, "--gpu", cfg.gpu]
    for flag, value in (("--style-image", cfg.style_image), ("--style-catalog", cfg.style_catalog),
                        ("--encoder-weights", cfg.encoder_weights), ("--decoder-weights", cfg.decoder_weights),
                        ("--run-id", cfg.run_id), ("--quality", cfg.quality),
                        ("--alpha", None if cfg.alpha is None else str(cfg.alpha)),
                        ("--max-actors", cfg.max_actors and str(cfg.max_actors)),
                        ("--train-steps", cfg.train_style and str(cfg.train_steps))):
        if value:
            args += [flag, value]
    if cfg.preserve_color:
        args.append("--preserve-color")
    if cfg.overwrite:
        args.append("--overwrite")
    if cfg.train_style:
        args.append("--train-style")
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
