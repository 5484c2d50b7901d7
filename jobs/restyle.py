"""Entrypoint for ``ray job submit --working-dir . -- python -m jobs.restyle MANIFEST [options]``.

Takes exactly the options of ``stylebatch submit``; inside a Ray job the driver connects to the
cluster it runs on (RAY_ADDRESS is set by Ray to the cluster's GCS address).
"""
import os
import sys

from stylebatch.cli import app


def main(argv=None) -> None:
    address = os.environ.get("RAY_ADDRESS", "")
    if address.startswith(("http://", "https://")):
        # We are the job: connect to the cluster, never submit another job.
        os.environ["RAY_ADDRESS"] = "auto"
    app(["submit", *(sys.argv[1:] if argv is None else argv)], prog_name="jobs.restyle")


if __name__ == "__main__":
    main()
