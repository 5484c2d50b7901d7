"""The ``stylebatch`` command: parses, calls the library, prints. No logic of its own."""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from stylebatch.config import option
from stylebatch.io.images import OUTPUT_FORMATS

app = typer.Typer(help="Catalog-scale image restyling on Ray Data.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
manifest_app = typer.Typer(help="Build manifests.", no_args_is_help=True)
styles_app = typer.Typer(help="Built-in and catalog styles.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")
app.add_typer(styles_app, name="styles")

DEFAULT_OUTPUT = option("output").default
ENCODER_WEIGHTS_HELP = option("encoder_weights").help
DECODER_WEIGHTS_HELP = option("decoder_weights").help


def _fail(message: str, code: int = 2) -> None:
    from stylebatch.io.storage import redact

    typer.secho(f"error: {redact(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _user_errors():
    from stylebatch.io.images import ImageDecodeError
    from stylebatch.io.manifest import ManifestError
    from stylebatch.io.storage import StorageError
    from stylebatch.models import WeightsError
    from stylebatch.styles.catalog import StyleError

    return (ManifestError, StyleError, StorageError, WeightsError, ImageDecodeError, ValueError)


def _print_summary(summary) -> None:
    m = summary.metrics
    c = m["counts"]
    typer.echo(f"run {summary.run_id}: {m['total_rows']} rows  ok {c.get('ok', 0)}  skipped {c.get('skipped', 0)}  "
               f"error {c.get('error', 0)}  in {m['wall_s']:.1f}s ({m['images_per_s']:.2f} images/s)")
    typer.echo(f"  outputs:  {summary.output}/<style>/<image_id>.<ext>")
    typer.echo(f"  results:  {summary.results_uri}")
    typer.echo(f"  metrics:  {summary.metrics_uri}")
    for err in m.get("errors_sample", [])[:5]:
        typer.echo(f"  error {err['image_id']}: {err['error']}")


def _run_job(cfg, dry_run: bool) -> None:
    """Exit codes: 0 every row ok or skipped, 1 some rows failed, 2 bad input (nothing ran), 3 another
    run is writing to the same output (nothing ran; --wait waits for it, --force breaks its lease)."""
    from stylebatch.io import results
    from stylebatch.io.lease import LeaseHeld, output_lease
    from stylebatch.pipeline import driver
    from stylebatch.pipeline.plan import plan_summary, precheck

    if dry_run:
        try:
            plan = driver.plan_job(cfg, train=False, on_event=lambda line: None)
        except _user_errors() as exc:
            _fail(str(exc))
        typer.echo(plan_summary(plan, cfg))
        return
    try:
        checked = precheck(cfg)  # a job that cannot run is refused before anything is written, the lease included
    except _user_errors() as exc:
        _fail(str(exc))
    cfg.run_id = cfg.run_id or results.make_run_id()
    try:
        # Taken before planning: the plan must see everything the previous run finished.
        with output_lease(cfg.output, cfg.run_id, wait=cfg.wait, force=cfg.force, on_wait=_print_waiting) as lease:
            try:
                plan = driver.plan_job(cfg, checked=checked, on_event=lambda line: typer.echo(line, err=True))
            except _user_errors() as exc:
                _fail(str(exc))
            _print_plan(plan, cfg)
            from stylebatch.pipeline.lognoise import ray_noise_filtered
            from stylebatch.pipeline.progress import ProgressDisplay

            display = ProgressDisplay()  # before the filter: it asks whether stderr is a terminal
            with ray_noise_filtered():
                summary = driver.restyle(cfg, plan=plan, progress=display, lease=lease)
    except LeaseHeld as exc:
        _fail(str(exc), code=3)
    except _user_errors() as exc:  # the store refused the lease object itself (e.g. access denied)
        _fail(str(exc))
    _print_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


_last_wait_line = [0.0]


def _print_waiting(holder) -> None:
    import time

    if time.monotonic() - _last_wait_line[0] >= 30:
        _last_wait_line[0] = time.monotonic()
        typer.echo(f"waiting: {holder.describe()}", err=True)


def _print_plan(plan, cfg) -> None:
    from stylebatch.pipeline.plan import invalid_examples

    c = plan.counts
    typer.echo(f"restyling {c['rows']} rows ({c['fast']} fast, {c['premium']} premium"
               + (f", {c['invalid']} that cannot run" if c["invalid"] else "") + f") -> {cfg.output}", err=True)
    for line in invalid_examples(plan):
        typer.echo(f"  cannot run {line}", err=True)
    if c["invalid"] > 10:
        typer.echo(f"  ... and {c['invalid'] - 10} more (all are error rows in the results; --strict refuses "
                   "the manifest instead)", err=True)


def submit(manifest: str, dry_run: bool, address: Optional[str], **options):
    """Restyle every image in MANIFEST and write outputs, per-row results and run metrics."""
    from stylebatch.config import JobConfig, config_values

    cfg = JobConfig(manifest=manifest, **config_values(options))
    if address and address.startswith(("http://", "https://")) and not dry_run:
        from stylebatch.cluster import submit_job

        code = submit_job(address, cfg)
        raise typer.Exit(code)
    cfg.ray_address = address
    _run_job(cfg, dry_run)


def _submit_signature() -> inspect.Signature:
    """submit's own arguments, then every job option from ``config.JOB_OPTIONS`` (the one table
    that ``jobs.nightly`` and the cluster entrypoint are built from too)."""
    from stylebatch.config import typer_parameters

    own = [
        inspect.Parameter("manifest", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Argument(..., help="Parquet manifest: local path, file:// or s3://")),
        inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--dry-run", help="validate and print the plan; run nothing")),
        inspect.Parameter("address", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                          default=typer.Option(None, "--address", envvar="RAY_ADDRESS",
                                               help="Ray cluster: http://head:8265 submits a Ray job; "
                                                    "host:port connects")),
    ]
    return inspect.Signature(own + typer_parameters())


submit.__signature__ = _submit_signature()
app.command()(submit)


@app.command()
def demo(
    output: str = typer.Option("stylebatch-demo", help="folder for the demo's photos, manifest and outputs"),
    style: str = typer.Option("cyberpunk", help="built-in style to apply"),
):
    """Run the main job on an embedded default: scikit-image's bundled photos, a built-in style, local Ray."""
    from stylebatch.config import JobConfig
    from stylebatch.demo import prepare_demo

    root = Path(output)
    manifest_path = prepare_demo(root)
    typer.echo(f"demo manifest: {manifest_path}", err=True)
    cfg = JobConfig(manifest=str(manifest_path), output=str(root / "output"), style=style, max_size=512)
    _run_job(cfg, dry_run=False)
    typer.echo(f"stylized images: {root / 'output' / style}/")


@manifest_app.command("build")
def manifest_build(src: str = typer.Argument(..., help="local folder or s3://bucket/prefix"),
                   out: str = typer.Option("manifest.parquet", "-o", "--output", help="where to write the manifest")):
    """Make a manifest (image_id, uri) from every image file under SRC."""
    from stylebatch.io.manifest import build_manifest

    try:
        n = build_manifest(src, out)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"wrote {n} rows to {out}")


@styles_app.command("list")
def styles_list(style_catalog: Optional[str] = typer.Option(None, help="also list this catalog's styles")):
    """List the built-in presets (and catalog styles)."""
    from stylebatch.styles.catalog import StyleCatalog, list_styles

    try:
        catalog = StyleCatalog.load(style_catalog) if style_catalog else None
        rows = list_styles(catalog)
    except _user_errors() as exc:
        _fail(str(exc))
    width = max(len(r["name"]) for r in rows)
    kind_width = max(len(r["model"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['source']:<8}  {r['model']:<{kind_width}}  {r.get('description', '')}")


@styles_app.command("show")
def styles_show(name: str, out: str = typer.Option(None, "-o", "--output", help="PNG path (default NAME.png)")):
    """Write a style's reference image to a PNG so you can look at it."""
    from stylebatch.io import images, storage
    from stylebatch.styles.catalog import resolve_style

    try:
        style = resolve_style(name)
    except _user_errors() as exc:
        _fail(str(exc))
    target = out or f"{name}.png"
    storage.write_bytes(target, images.encode_image(style.images[0], fmt="png"))
    typer.echo(f"wrote {target}")


@styles_app.command("train")
def styles_train(
    name: str = typer.Argument(..., help="the style's name inside the network file"),
    image: str = typer.Option(..., help="style image: preset name, path, file:// or s3://"),
    out: str = typer.Option(..., "-o", "--output", help="network file to write (local or s3://)"),
    content: Optional[str] = typer.Option(None, help="folder, S3 prefix or Parquet manifest of content photos "
                                          "(default: scikit-image's photos)"),
    recipe: Optional[str] = typer.Option(None, help="train with the settings of this network record "
                                         "(<out>.json; default: the house-style recipe)"),
    steps: Optional[int] = typer.Option(None, help="training steps (default: the recipe's; the house-style "
                                        "recipe's: 1000)"),
    resume: bool = typer.Option(False, help="continue from OUTPUT.ckpt"),
    init_from: Optional[str] = typer.Option(None, help="start from this network file's weights "
                                            "(e.g. the shipped presets: far fewer steps)"),
    device: str = typer.Option("auto"),
    precision: str = typer.Option("auto"),
):
    """Train a feed-forward network for one style image; use it with a catalog entry's `network:`."""
    from stylebatch.training.house_style import train_style_network
    from stylebatch.training.recipe import recipe_config

    try:
        config, _ = recipe_config(recipe, steps)
        train_style_network({name: image}, out, content=content, config=config, resume=resume,
                            init_from=init_from, device=device, precision=precision,
                            progress=lambda line: typer.echo(line, err=True))
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"wrote {out}")


@app.command()
def stylize(
    content: str = typer.Argument(..., help="content image: path, file:// or s3://"),
    style: str = typer.Option("cyberpunk", help="preset, catalog name or style image URI"),
    out: str = typer.Option("stylized.jpg", "-o", "--output", help="output image; its extension picks the format (" + ", ".join(
                                f".{f.extension}" for f in OUTPUT_FORMATS.values()) + ")"),
    alpha: Optional[float] = typer.Option(None, min=0.0, max=1.0),
    preserve_color: Optional[bool] = typer.Option(None, "--preserve-color/--no-preserve-color"),
    quality: Optional[str] = typer.Option(None, help="fast or premium"),
    iterations: int = typer.Option(100, help="premium: Gatys iterations"),
    style_catalog: Optional[str] = typer.Option(None),
    max_size: int = typer.Option(1024),
    style_scale: float = typer.Option(1.0, min=0.125, max=16.0, help=option("style_scale").help),
    device: str = typer.Option("auto"),
    precision: str = typer.Option("auto"),
    encoder_weights: Optional[str] = typer.Option(None, help=ENCODER_WEIGHTS_HELP),
    decoder_weights: Optional[str] = typer.Option(None, help=DECODER_WEIGHTS_HELP),
):
    """Stylize one image (no Ray): for trying a style."""
    from stylebatch.single import stylize_one

    try:
        info = stylize_one(content, out, style=style, style_catalog=style_catalog, alpha=alpha,
                           preserve_color=preserve_color, quality=quality, max_size=max_size or None,
                           iterations=iterations, device=device, precision=precision,
                           encoder_weights=encoder_weights, decoder_weights=decoder_weights, style_scale=style_scale)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(json.dumps(info))


@app.command()
def report(run: str = typer.Argument("latest", help="run id, 'latest', or a run folder OUT/_runs/<run_id>"),
           output: str = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="the job's output root"),
           sample: int = typer.Option(12, help="outputs on the contact sheet"),
           pairs: int = typer.Option(200, min=0, help="source/output pairs in report.html (evenly sampled when "
                                     "the run has more ok rows)")):
    """Summary table of a run's results, a contact sheet of a sample of its outputs and report.html
    (counts, timings, styles, errors, source/output pairs) in the run's folder."""
    from stylebatch.io import results
    from stylebatch.io.storage import redact
    from stylebatch.reports import report as run_report

    if "/_runs/" in run:
        output, run = run.rstrip("/").rsplit("/_runs/", 1)
    try:
        if run == "latest":
            runs = results.list_runs(output)
            if not runs:
                _fail(f"no runs under {output}/_runs")
            run = runs[-1]
        rep = run_report.report(output, run, sample=sample, pairs=pairs)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(rep.summary)
    if rep.contact_sheet:
        typer.echo(f"contact sheet: {redact(rep.contact_sheet)}")
    typer.echo(f"html report: {redact(rep.html)}")



if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
