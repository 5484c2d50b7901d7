"""Nightly entrypoint: restyle only what is new or changed since the last runs.

    ray job submit --working-dir . -- python -m jobs.nightly \\
        --source s3://bucket/catalog/ --output s3://bucket/styled --style cyberpunk [options]

``--manifest URI`` replaces ``--source`` when the catalog already has a manifest. The other
options are those of ``stylebatch submit`` (same names, same meaning). The logic lives in
``stylebatch.nightly.run_nightly``; this file only parses, calls and sets the exit code:
0 = every row ok or skipped, 1 = some rows failed, 2 = bad input (nothing ran), 3 = another run is
writing to the same output (nothing ran; ``--wait`` waits for it).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from stylebatch.config import add_argparse_options, config_values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.nightly",
                                description="Incremental nightly restyle of a catalog (new or changed images only).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="folder or s3://bucket/prefix to scan for images (a fresh manifest each night)")
    src.add_argument("--manifest", help="use this Parquet manifest instead of scanning a source")
    # The same options as `stylebatch submit`, from the one table (stylebatch.config.JOB_OPTIONS).
    add_argparse_options(p)
    return p


def parse_args(argv: Optional[list[str]] = None) -> tuple[dict, dict]:
    """({source, manifest, output}, JobConfig options given on the command line)."""
    args = vars(build_parser().parse_args(argv))
    where = {k: args.pop(k) for k in ("source", "manifest", "output")}
    if where["output"] is None:
        build_parser().error("--output is required")
    options = config_values({k: v for k, v in args.items() if v is not None})
    return where, options


def main(argv: Optional[list[str]] = None) -> int:
    from stylebatch.cli import _print_summary, _user_errors
    from stylebatch.io import storage
    from stylebatch.io.lease import LeaseHeld
    from stylebatch.nightly import run_nightly
    from stylebatch.pipeline.lognoise import ray_noise_filtered
    from stylebatch.pipeline.progress import ProgressDisplay

    where, options = parse_args(argv)
    address = os.environ.get("RAY_ADDRESS", "")
    if address.startswith(("http://", "https://")):
        # We are the job itself: connect to the cluster we run on, never submit another job.
        address = os.environ["RAY_ADDRESS"] = "auto"
    try:
        display = ProgressDisplay()  # before the filter: it asks whether stderr is a terminal
        with ray_noise_filtered():
            result = run_nightly(**where, progress=display, ray_address=address or None, **options)
    except LeaseHeld as exc:  # another night is still writing to this output
        print(f"error: {storage.redact(str(exc))}", file=sys.stderr)
        return 3
    except _user_errors() as exc:
        print(f"error: {storage.redact(str(exc))}", file=sys.stderr)
        return 2
    _print_summary(result.summary)
    if result.last_success_uri:
        print(f"  recorded: {result.last_success_uri}")
    else:
        print(f"  {result.failed} rows failed; last_success.json left at its previous run "
              f"({(result.previous_success or {}).get('run_id', 'none')})")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
