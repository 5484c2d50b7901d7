"""The ``stylebatch`` command: parses, calls the library, prints. No logic of its own."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Catalog-scale image restyling on Ray Data.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
manifest_app = typer.Typer(help="Build manifests.", no_args_is_help=True)
styles_app = typer.Typer(help="Built-in and catalog styles.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")
app.add_typer(styles_app, name="styles")

DEFAULT_OUTPUT = "stylebatch-output"
ENCODER_WEIGHTS_HELP = "pytorch-AdaIN vgg_normalised.pth (with its --decoder-weights)"
DECODER_WEIGHTS_HELP = "a decoder exported by jobs.train_decoder, or pytorch-AdaIN decoder.pth (with --encoder-weights)"


def _fail(message: str, code: int = 2) -> None:
    from .storage import redact

    typer.secho(f"error: {redact(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _user_errors():
    from .images import ImageDecodeError
    from .manifest import ManifestError
    from .models import WeightsError
    from .storage import StorageError
    from .styles import StyleError

    return (ManifestError, StyleError, StorageError, WeightsError, ImageDecodeError, ValueError)


_last_progress = [0.0]


def _print_progress(p: dict) -> None:
    import time

    if time.time() - _last_progress[0] < 2 and p["done"] < p["rows"]:
        return  # at most one line every 2 s
    _last_progress[0] = time.time()
    c = p["counts"]
    rate = p["done"] / p["elapsed_s"] if p["elapsed_s"] > 0 else 0.0
    typer.echo(f"  {p['done']}/{p['rows']} rows  ok {c.get('ok', 0)}  skipped {c.get('skipped', 0)}  "
               f"error {c.get('error', 0)}  ({rate:.2f} rows/s)", err=True)


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
    from . import pipeline

    try:
        plan = pipeline.build_plan(cfg, train_styles=not dry_run)
    except _user_errors() as exc:
        _fail(str(exc))
    if dry_run:
        typer.echo(pipeline.plan_summary(plan, cfg))
        return
    typer.echo(f"restyling {plan.counts['rows']} rows ({plan.counts['fast']} fast, {plan.counts['premium']} premium)"
               f" -> {cfg.output}", err=True)
    summary = pipeline.restyle(cfg, plan=plan, progress=_print_progress)
    _print_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def submit(
    manifest: str = typer.Argument(..., help="Parquet manifest: local path, file:// or s3://"),
    style: str = typer.Option("cyberpunk", help="default style: built-in preset or style-catalog name"),
    output: str = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="local folder or s3://bucket/prefix"),
    style_image: Optional[str] = typer.Option(None, help="use this image (path, file://, s3://) as the style"),
    style_catalog: Optional[str] = typer.Option(None, help="YAML/JSON file mapping style names to images"),
    alpha: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="style strength 0..1 (default: the style's, else 1)"),
    preserve_color: bool = typer.Option(False, help="keep the content's colours"),
    quality: Optional[str] = typer.Option(None, help="fast (AdaIN) or premium (Gatys); default: the style's, else fast"),
    fmt: str = typer.Option("jpeg", "--format", help="jpeg, png or webp"),
    jpeg_quality: int = typer.Option(90, help="encoder quality for jpeg/webp"),
    max_size: int = typer.Option(1024, help="longer side of outputs (0 = keep input size)"),
    overwrite: bool = typer.Option(False, help="redo rows already written OK"),
    dry_run: bool = typer.Option(False, help="validate and print the plan; run nothing"),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS",
                                          help="Ray cluster: http://head:8265 submits a Ray job; host:port connects"),
    batch_size: int = typer.Option(8, help="images per model batch"),
    premium_iterations: int = typer.Option(100, help="Gatys iterations for premium rows"),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]"),
    precision: str = typer.Option("auto", help="auto, fp32, bf16 or fp16 (CUDA)"),
    gpu: str = typer.Option("auto", help="auto (GPUs Ray reports now), always (autoscaling GPU clusters), never"),
    max_actors: Optional[int] = typer.Option(None, help="upper bound on model actors per pool"),
    encoder_weights: Optional[str] = typer.Option(None, help=ENCODER_WEIGHTS_HELP),
    decoder_weights: Optional[str] = typer.Option(None, help=DECODER_WEIGHTS_HELP),
    run_id: Optional[str] = typer.Option(None, help="name of this run (default: timestamp)"),
    train_style: bool = typer.Option(False, help="first train a network for --style-image (one Ray task; cached "
                                     "under OUTPUT/_styles/ and reused by later runs), then run the catalog with it"),
    train_steps: int = typer.Option(1000, help="--train-style: training steps"),
):
    """Restyle every image in MANIFEST and write outputs, per-row results and run metrics."""
    from .pipeline import JobConfig

    cfg = JobConfig(manifest=manifest, output=output, style=style, style_image=style_image,
                    style_catalog=style_catalog, alpha=alpha, preserve_color=preserve_color, quality=quality,
                    output_format=fmt, output_quality=jpeg_quality, max_size=max_size or None, overwrite=overwrite,
                    batch_size=batch_size, premium_iterations=premium_iterations, device=device,
                    precision=precision, encoder_weights=encoder_weights, decoder_weights=decoder_weights,
                    run_id=run_id, gpu=gpu, max_actors=max_actors, train_style=train_style,
                    train_steps=train_steps)
    if address and address.startswith(("http://", "https://")) and not dry_run:
        from .cluster import submit_job

        code = submit_job(address, cfg)
        raise typer.Exit(code)
    cfg.ray_address = address
    _run_job(cfg, dry_run)


@app.command()
def demo(
    output: str = typer.Option("stylebatch-demo", help="folder for the demo's photos, manifest and outputs"),
    style: str = typer.Option("cyberpunk", help="built-in style to apply"),
):
    """Run the main job on an embedded default: scikit-image's bundled photos, a built-in style, local Ray."""
    from .demo import prepare_demo
    from .pipeline import JobConfig

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
    from .manifest import build_manifest

    try:
        n = build_manifest(src, out)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"wrote {n} rows to {out}")


@styles_app.command("list")
def styles_list(style_catalog: Optional[str] = typer.Option(None, help="also list this catalog's styles")):
    """List the built-in presets (and catalog styles)."""
    from .styles import StyleCatalog, list_styles

    try:
        catalog = StyleCatalog.load(style_catalog) if style_catalog else None
        rows = list_styles(catalog)
    except _user_errors() as exc:
        _fail(str(exc))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['source']:<8}  {r.get('description', '')}")


@styles_app.command("show")
def styles_show(name: str, out: str = typer.Option(None, "-o", "--output", help="PNG path (default NAME.png)")):
    """Write a style's reference image to a PNG so you can look at it."""
    from . import images, storage
    from .styles import resolve_style

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
                                          "(default: scikit-image's photos + ../shared/data/photos)"),
    steps: int = typer.Option(1000, help="training steps"),
    resume: bool = typer.Option(False, help="continue from OUTPUT.ckpt"),
    init_from: Optional[str] = typer.Option(None, help="start from this network file's convolutions "
                                            "(e.g. the shipped presets: far fewer steps)"),
    device: str = typer.Option("auto"),
    precision: str = typer.Option("auto"),
):
    """Train a feed-forward network for one style image; use it with a catalog entry's `network:`."""
    from .models.network_training import TrainConfig
    from .train_style import train_style_network

    try:
        train_style_network({name: image}, out, content=content, config=TrainConfig(steps=steps), resume=resume,
                            init_from=init_from, device=device, precision=precision,
                            progress=lambda line: typer.echo(line, err=True))
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"wrote {out}")


@app.command()
def stylize(
    content: str = typer.Argument(..., help="content image: path, file:// or s3://"),
    style: str = typer.Option("cyberpunk", help="preset, catalog name or style image URI"),
    out: str = typer.Option("stylized.jpg", "-o", "--output", help="output image (.jpg/.png/.webp)"),
    alpha: Optional[float] = typer.Option(None, min=0.0, max=1.0),
    preserve_color: Optional[bool] = typer.Option(None, "--preserve-color/--no-preserve-color"),
    quality: Optional[str] = typer.Option(None, help="fast or premium"),
    iterations: int = typer.Option(100, help="premium: Gatys iterations"),
    style_catalog: Optional[str] = typer.Option(None),
    max_size: int = typer.Option(1024),
    device: str = typer.Option("auto"),
    precision: str = typer.Option("auto"),
    encoder_weights: Optional[str] = typer.Option(None, help=ENCODER_WEIGHTS_HELP),
    decoder_weights: Optional[str] = typer.Option(None, help=DECODER_WEIGHTS_HELP),
):
    """Stylize one image (no Ray): for trying a style."""
    from .single import stylize_one

    try:
        info = stylize_one(content, out, style=style, style_catalog=style_catalog, alpha=alpha,
                           preserve_color=preserve_color, quality=quality, max_size=max_size or None,
                           iterations=iterations, device=device, precision=precision,
                           encoder_weights=encoder_weights, decoder_weights=decoder_weights)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(json.dumps(info))


@app.command()
def report(run: str = typer.Argument("latest", help="run id, 'latest', or a run folder OUT/_runs/<run_id>"),
           output: str = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="the job's output root"),
           sample: int = typer.Option(12, help="outputs on the contact sheet")):
    """Summary table of a run's results and a contact sheet of a sample of its outputs."""
    from . import results

    if "/_runs/" in run:
        output, run = run.rstrip("/").rsplit("/_runs/", 1)
    try:
        if run == "latest":
            runs = results.list_runs(output)
            if not runs:
                _fail(f"no runs under {output}/_runs")
            run = runs[-1]
        text, sheet = results.report(output, run, sample=sample)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(text)
    if sheet:
        typer.echo(f"contact sheet: {sheet}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
