"""Nightly entrypoint: restyle only what is new or changed since the last runs.

    ray job submit --working-dir . -- python -m jobs.nightly \\
        --source s3://bucket/catalog/ --output s3://bucket/styled --style cyberpunk [options]

``--manifest URI`` replaces ``--source`` when the catalog already has a manifest. The other
options are those of ``stylebatch submit`` (same names, same meaning). The logic lives in
``stylebatch.nightly.run_nightly``; this file only parses, calls and sets the exit code:
0 = every row ok or skipped, 1 = some rows failed, 2 = bad input (nothing ran).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from stylebatch.models.registry import QUALITIES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.nightly",
                                description="Incremental nightly restyle of a catalog (new or changed images only).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="folder or s3://bucket/prefix to scan for images (a fresh manifest each night)")
    src.add_argument("--manifest", help="use this Parquet manifest instead of scanning a source")
    p.add_argument("--output", "-o", required=True, help="local folder or s3://bucket/prefix")
    # Defaults are None so JobConfig's own defaults apply: one place decides them.
    p.add_argument("--style", help="default style: built-in preset or style-catalog name")
    p.add_argument("--style-image", help="use this image (path, file://, s3://) as the style")
    p.add_argument("--style-catalog", help="YAML/JSON file mapping style names to images")
    p.add_argument("--alpha", type=float, help="style strength 0..1")
    p.add_argument("--preserve-color", action="store_true", default=None, help="keep the content's colours")
    p.add_argument("--quality", choices=QUALITIES, help="fast (a style's network, else AdaIN) or premium (Gatys)")
    p.add_argument("--format", dest="output_format", choices=("jpeg", "png", "webp"), help="output format")
    p.add_argument("--jpeg-quality", dest="output_quality", type=int, help="encoder quality for jpeg/webp")
    p.add_argument("--max-size", type=int, help="longer side of outputs (0 = keep input size)")
    p.add_argument("--batch-size", type=int, help="images per model batch")
    p.add_argument("--premium-iterations", type=int, help="Gatys iterations for premium rows")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", help="auto, fp32, bf16 or fp16 (CUDA)")
    p.add_argument("--encoder-weights", help="pytorch-AdaIN vgg_normalised.pth (with its --decoder-weights)")
    p.add_argument("--decoder-weights", help="a decoder exported by jobs.train_decoder, or pytorch-AdaIN "
                   "decoder.pth (with --encoder-weights)")
    p.add_argument("--run-id", help="name of this run (default: timestamp)")
    return p


def parse_args(argv: Optional[list[str]] = None) -> tuple[dict, dict]:
    """({source, manifest, output}, JobConfig options given on the command line)."""
    args = vars(build_parser().parse_args(argv))
    where = {k: args.pop(k) for k in ("source", "manifest", "output")}
    options = {k: v for k, v in args.items() if v is not None}
    if options.get("max_size") == 0:
        options["max_size"] = None  # same convention as `stylebatch submit --max-size 0`
    return where, options


def main(argv: Optional[list[str]] = None) -> int:
    from stylebatch import storage
    from stylebatch.cli import _print_progress, _print_summary, _user_errors
    from stylebatch.nightly import run_nightly

    where, options = parse_args(argv)
    address = os.environ.get("RAY_ADDRESS", "")
    if address.startswith(("http://", "https://")):
        # We are the job itself: connect to the cluster we run on, never submit another job.
        address = os.environ["RAY_ADDRESS"] = "auto"
    try:
        result = run_nightly(**where, progress=_print_progress, ray_address=address or None, **options)
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
