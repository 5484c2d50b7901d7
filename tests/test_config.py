"""The job's options are declared once (stylebatch.config.JOB_OPTIONS): `stylebatch submit`, the
nightly entrypoint and the cluster entrypoint all take exactly them, and a config survives the trip
through each command line."""
from __future__ import annotations

import dataclasses
import shlex

import typer

from stylebatch.cluster import entrypoint_for
from stylebatch.config import JOB_OPTIONS, JobConfig, command_line, config_values

SUBMIT_OWN = {"--dry-run", "--address", "--help"}
NIGHTLY_OWN = {"--source", "--manifest", "-h", "--help"}


def _submit():
    from stylebatch.cli import app

    return typer.main.get_command(app).commands["submit"]


def _submit_options() -> set[str]:
    return {o for p in _submit().params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def _nightly_options() -> set[str]:
    from jobs.nightly import build_parser

    return {s for a in build_parser()._actions for s in a.option_strings}


def _everything_set() -> JobConfig:
    """A config where every option differs from its default."""
    values = {"output": "s3://b/out", "style": "ukiyo", "style_image": "s3://b/brand.jpg",
              "style_catalog": "s3://b/styles.yaml", "alpha": 0.25, "preserve_color": True, "quality": "premium",
              "output_format": "png", "output_quality": 77, "max_size": None, "style_scale": 2.5, "overwrite": True,
              "strict": True,
              "batch_size": 3, "premium_iterations": 12, "device": "cpu", "precision": "bf16", "gpu": "never",
              "max_actors": 2, "encoder_weights": "/w/enc.pth", "decoder_weights": "/w/dec.pth", "run_id": "r-1",
              "wait": True, "force": False, "train_style": "always", "train_min_rows": 5, "train_steps": 33,
              "style_cache": "s3://b/styles"}
    assert set(values) == {o.field for o in JOB_OPTIONS}, "a new option needs a value here"
    return JobConfig(manifest="s3://b/m.parquet", **values)


def test_every_job_option_is_on_every_command_line():
    table = {o.flag for o in JOB_OPTIONS} | {o.short for o in JOB_OPTIONS if o.short}
    assert _submit_options() - SUBMIT_OWN == table
    assert _nightly_options() - NIGHTLY_OWN == table


def test_a_config_survives_the_cluster_entrypoint_and_submit():
    cfg = _everything_set()
    argv = shlex.split(entrypoint_for(cfg))
    assert argv[:3] == ["python", "-m", "jobs.restyle"]
    ctx = _submit().make_context("jobs.restyle", argv[3:])
    params = dict(ctx.params)
    rebuilt = JobConfig(manifest=params.pop("manifest"), **config_values(
        {k: v for k, v in params.items() if k not in ("dry_run", "address")}))
    assert rebuilt == cfg


def test_a_config_survives_the_nightly_parser():
    from jobs.nightly import parse_args

    cfg = _everything_set()
    where, options = parse_args(["--manifest", cfg.manifest, *command_line(cfg)])
    assert where == {"source": None, "manifest": cfg.manifest, "output": cfg.output}
    assert JobConfig(manifest=cfg.manifest, output=cfg.output, **{k: v for k, v in options.items() if k != "output"}) \
        == cfg


def test_defaults_are_not_repeated_on_the_command_line():
    assert command_line(JobConfig(manifest="m.parquet")) == []
    # --max-size 0 means "keep the input size" on every command line.
    assert command_line(dataclasses.replace(JobConfig(manifest="m"), max_size=None)) == ["--max-size", "0"]
