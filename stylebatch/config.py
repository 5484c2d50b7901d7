"""The job's configuration and its options, declared once.

``JobConfig`` is what a run needs (the library API: ``stylebatch.restyle(JobConfig(...))``).
``JOB_OPTIONS`` names each option a user can set on a command line: its flag, help and type. The
three command lines are built from it, so they cannot drift apart:

* ``stylebatch submit`` (typer): ``typer_parameters()``;
* ``python -m jobs.nightly`` (argparse): ``add_argparse_options(parser)``;
* the cluster entrypoint ``stylebatch.cluster.entrypoint_for(cfg)``: ``command_line(cfg)`` turns a
  config back into the flags that rebuild it.

Adding an option is one JobConfig field plus one ``JobOption`` line.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Optional

from stylebatch.io import images, storage
from stylebatch.models import registry

GPU_MODES = ("auto", "always", "never")
TRAIN_MODES = ("auto", "always", "never")


@dataclass
class JobConfig:
    """Everything a run needs; the CLI and ``jobs.restyle`` build one of these."""

    manifest: str
    output: str = "stylebatch-output"
    style: str = "cyberpunk"
    style_image: Optional[str] = None
    style_catalog: Optional[str] = None
    alpha: Optional[float] = None      # None: the style's default (catalog), else 1.0
    preserve_color: bool = False
    quality: Optional[str] = None      # None: the style's default (catalog), else "fast"
    output_format: str = "jpeg"
    output_quality: int = 90
    max_size: Optional[int] = 1024
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    style_scale: float = 1.0           # the style's marks this many times larger (the model runs at size / scale)
    overwrite: bool = False
    strict: bool = False               # a row that cannot run stops the whole run (exit 2) instead of failing alone
    batch_size: int = 8
    premium_iterations: int = 100
    device: str = "auto"
    precision: str = "auto"
    encoder_weights: Optional[str] = None
    decoder_weights: Optional[str] = None
    run_id: Optional[str] = None
    ray_address: Optional[str] = None
    max_actors: Optional[int] = None
    gpu: str = "auto"  # auto: use GPUs Ray reports now; always: request them (autoscaling clusters); never
    wait: bool = False                 # another run holds the output: wait for it instead of stopping
    force: bool = False                # another run holds the output: break its lease
    train_style: str = "auto"          # auto: networks for styles with --train-min-rows rows; always; never
    train_min_rows: int = 1000         # auto: the rows a style needs for its own network
    train_steps: int = 1000            # training steps (from the shipped presets' network)
    style_cache: Optional[str] = None  # also look for (and keep) trained networks under this prefix
    # Set by the job before its final plan (pipeline.house_styles), not options: the networks it
    # trained or found, by style, and why a style's rows run AdaIN after a failed training.
    style_networks: dict = dataclasses.field(default_factory=dict)
    style_notes: dict = dataclasses.field(default_factory=dict)

    def model_options(self) -> registry.ModelOptions:
        from stylebatch.styles import catalog

        return registry.ModelOptions(device=self.device, precision=self.precision,
                                     encoder_weights=self.encoder_weights, decoder_weights=self.decoder_weights,
                                     premium_iterations=self.premium_iterations, max_batch=self.batch_size,
                                     read_bytes=catalog.read_network)

    def validate(self) -> None:
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be within [0, 1], got {self.alpha}")
        if self.quality is not None and self.quality not in registry.QUALITIES:
            raise ValueError(f"--quality must be one of {registry.QUALITIES}, got {self.quality!r}")
        if self.output_format not in images.OUTPUT_FORMATS:
            raise ValueError(f"--format must be one of {', '.join(images.OUTPUT_FORMATS)}, got {self.output_format!r}")
        if not 1 <= self.output_quality <= 100:
            raise ValueError(f"--jpeg-quality must be within 1..100, got {self.output_quality}")
        if not 0.125 <= self.style_scale <= 16:
            raise ValueError(f"--style-scale must be within [0.125, 16], got {self.style_scale}")
        if self.max_size is not None and self.max_size < 8:
            raise ValueError(f"--max-size must be at least 8 pixels, got {self.max_size}")
        if self.gpu not in GPU_MODES:
            raise ValueError(f"--gpu must be one of {', '.join(GPU_MODES)}, got {self.gpu!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        if self.train_style not in TRAIN_MODES:
            raise ValueError(f"--train-style must be one of {', '.join(TRAIN_MODES)}, got {self.train_style!r}")
        if self.train_min_rows < 1:
            raise ValueError(f"--train-min-rows must be positive, got {self.train_min_rows}")
        if self.train_steps < 1:
            raise ValueError(f"--train-steps must be positive, got {self.train_steps}")
        if self.wait and self.force:
            raise ValueError("--wait and --force contradict each other: wait for the running job, or break its lease")
        storage.parse_uri(self.output)


@dataclass(frozen=True)
class JobOption:
    """One command-line option of a job: the JobConfig field it sets and how it is spelled."""

    field: str
    help: str
    flag: str = ""                     # default: --field-name
    short: Optional[str] = None
    choices: tuple[str, ...] = ()
    zero_means_none: bool = False      # e.g. --max-size 0 = no limit (JobConfig holds None)

    def __post_init__(self):
        if not self.flag:
            object.__setattr__(self, "flag", "--" + self.field.replace("_", "-"))

    @property
    def default(self) -> Any:
        return _FIELDS[self.field].default

    @property
    def type(self) -> type:
        hint = _FIELDS[self.field].type
        for name, t in (("bool", bool), ("int", int), ("float", float)):
            if name in str(hint):
                return t
        return str


_FIELDS = {f.name: f for f in dataclasses.fields(JobConfig)}

JOB_OPTIONS: tuple[JobOption, ...] = (
    JobOption("output", "local folder or s3://bucket/prefix", short="-o"),
    JobOption("style", "default style: built-in preset or style-catalog name"),
    JobOption("style_image", "use this image (path, file://, s3://) as the style"),
    JobOption("style_catalog", "YAML/JSON file mapping style names to images"),
    JobOption("alpha", "style strength 0..1 (default: the style's, else 1)"),
    JobOption("preserve_color", "keep the content's colours"),
    JobOption("quality", "fast (the style's network, else AdaIN) or premium (Gatys); "
              "default: the style's, else fast", choices=registry.QUALITIES),
    JobOption("output_format", flag="--format", help="output image format", choices=tuple(images.OUTPUT_FORMATS)),
    JobOption("output_quality", flag="--jpeg-quality", help="encoder quality for jpeg/webp"),
    JobOption("max_size", "longer side of outputs (0 = keep input size)", zero_means_none=True),
    JobOption("style_scale", "size of the style's marks relative to the picture: the model runs at the "
              "output size divided by this and its result is resized back (1 = at full size)"),
    JobOption("overwrite", "redo rows already written OK"),
    JobOption("strict", "refuse the whole manifest (exit 2, nothing written) if any row cannot run; "
              "default: such rows become error rows and the rest run"),
    JobOption("batch_size", "images per model batch"),
    JobOption("premium_iterations", "Gatys iterations for premium rows"),
    JobOption("device", "auto, cpu or cuda[:N]"),
    JobOption("precision", "auto, fp32, bf16 or fp16 (CUDA)"),
    JobOption("gpu", "auto (GPUs Ray reports now), always (autoscaling GPU clusters), never",
              choices=GPU_MODES),
    JobOption("max_actors", "upper bound on model actors per pool"),
    JobOption("encoder_weights", "pytorch-AdaIN vgg_normalised.pth (with its --decoder-weights)"),
    JobOption("decoder_weights", "a decoder exported by tools.train_decoder, or pytorch-AdaIN "
              "decoder.pth (with --encoder-weights)"),
    JobOption("run_id", "name of this run (default: timestamp)"),
    JobOption("wait", "if another run is writing to the same output, wait for it to finish"),
    JobOption("force", "if another run holds the output's lease, break it (only when you know it is dead)"),
    JobOption("train_style", "networks for styles without one (--style-image, catalog entries without "
              "network:, style image URIs in rows): auto trains where a style has --train-min-rows rows, "
              "always for every such style, never; trained in Ray tasks, cached and reused",
              choices=TRAIN_MODES),
    JobOption("train_min_rows", "--train-style auto: rows a style needs for its own network"),
    JobOption("train_steps", "training steps of each network"),
    JobOption("style_cache", "a prefix where trained networks are also looked for and kept, shared by "
              "many outputs (default: OUTPUT/_styles/ only)"),
)


def option(field: str) -> JobOption:
    return next(o for o in JOB_OPTIONS if o.field == field)


def config_values(values: dict) -> dict:
    """Command-line values (by field name) -> JobConfig keyword arguments (conventions applied)."""
    out = dict(values)
    for opt in JOB_OPTIONS:
        if opt.zero_means_none and out.get(opt.field) == 0:
            out[opt.field] = None
    return out


def typer_parameters() -> list[inspect.Parameter]:
    """``JOB_OPTIONS`` as keyword parameters for a typer command (see ``cli.submit``)."""
    import typer

    params = []
    for opt in JOB_OPTIONS:
        help_text = opt.help + (f" ({', '.join(opt.choices)})" if opt.choices else "")
        default = 0 if opt.zero_means_none and opt.default is None else opt.default
        names = [opt.flag] + ([opt.short] if opt.short else [])
        kwargs: dict[str, Any] = {"help": help_text}
        if opt.field == "alpha":
            kwargs.update(min=0.0, max=1.0)
        annotation = Optional[opt.type] if default is None else opt.type
        params.append(inspect.Parameter(opt.field, inspect.Parameter.KEYWORD_ONLY,
                                        default=typer.Option(default, *names, **kwargs), annotation=annotation))
    return params


def add_argparse_options(parser: argparse.ArgumentParser) -> None:
    """``JOB_OPTIONS`` on an argparse parser. Every default is None, so JobConfig's own defaults
    apply (one place decides them); a parsed None means "not given"."""
    for opt in JOB_OPTIONS:
        names = [opt.flag] + ([opt.short] if opt.short else [])
        if opt.type is bool:
            parser.add_argument(*names, dest=opt.field, action="store_true", default=None, help=opt.help)
        else:
            parser.add_argument(*names, dest=opt.field, type=opt.type, choices=opt.choices or None, help=opt.help)


def command_line(cfg: JobConfig) -> list[str]:
    """The flags that rebuild ``cfg`` through any of the command lines above (values that differ
    from JobConfig's defaults only)."""
    args: list[str] = []
    for opt in JOB_OPTIONS:
        value = getattr(cfg, opt.field)
        if value == opt.default:
            continue
        if opt.type is bool:
            if value:
                args.append(opt.flag)
        elif value is None and opt.zero_means_none:
            args += [opt.flag, "0"]
        elif value is not None:
            args += [opt.flag, str(value)]
    return args
