"""Train a style network (Johnson et al. + conditional instance norm); checkpointed, exactly resumable.

    python -m jobs.train_network --style brand=s3://brand/reference.jpg -o s3://brand/styles/brand.pt
    python -m jobs.train_network --recipe stylebatch/models/weights/presets/ukiyo.json \\
        --content photos.parquet --init-from stylebatch/models/weights/presets/ukiyo.pt -o ukiyo.pt
    python -m jobs.train_network ... --resume                      # continue from <out>.ckpt

Without --recipe it trains with the house-style recipe (the defaults below). A recipe is a network's
record (the <out>.json written beside every network file, local or s3://): its "config" gives the
training settings (those below; a hand-written one may give only some), its "styles" the styles to
learn unless --style or --presets is given, its "weights_precision" the file's unless
--weights-precision is given. Each shipped network's record (stylebatch/models/weights/) is the
recipe that made it.

As a Ray job (takes a GPU when the cluster has one):
    ray job submit --working-dir . -- python -m jobs.train_network --style brand=s3://... -o s3://...
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

from stylebatch.models.network_file import STORAGE
from stylebatch.training.recipe import RecipeError, TrainConfig, recipe_config, settings_help


def _settings_epilog() -> str:
    defaults = {**TrainConfig().describe(), **{f"network.{k}": v for k, v in TrainConfig().network.items()}}
    lines = ["recipe settings (a recipe's \"config\"; the house-style recipe's value in brackets):"]
    for name, text in settings_help():
        lines += textwrap.wrap(f"{name} [{json.dumps(defaults[name])}]: {text}", 100, initial_indent="  ",
                               subsequent_indent="      ")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.train_network", description=__doc__,
                                epilog=_settings_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", metavar="JSON", help="train with the settings of this network record (<out>.json, "
                   "local or s3://), e.g. stylebatch/models/weights/presets/ukiyo.json")
    p.add_argument("--style", action="append", default=[], metavar="NAME=URI",
                   help="a style to learn: name=preset name or image URI (repeatable: one network for all)")
    p.add_argument("--presets", action="store_true", help="learn every built-in preset (the shared base network)")
    p.add_argument("--content", help="folder, S3 prefix or Parquet manifest of content photos "
                   "(default: scikit-image's photos)")
    p.add_argument("-o", "--out", required=True, help="network file to write (local or s3://)")
    p.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    p.add_argument("--init-from", help="start from another network file's weights "
                   "(with --export-checkpoint: what the run started from, for the record)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    p.add_argument("--export-checkpoint", action="store_true",
                   help="only export <out>.ckpt as it stands to <out> (a run stopped early or still going); "
                   "--content and --init-from say what it trained on and from, for the record")
    p.add_argument("--weights-precision", choices=STORAGE,
                   help="how the file stores the weights (int8: a quarter of fp32's bytes, as the shipped presets; "
                   "default: the recipe's, else fp16)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    return p


def _styles(args: argparse.Namespace, record: dict) -> dict[str, str]:
    """The styles to learn: --style and --presets, else the recipe's."""
    from stylebatch.styles import presets as style_presets

    wanted = {}
    for spec in args.style:
        name, sep, ref = spec.partition("=")
        if not sep or not name or not ref:
            sys.exit(f"--style {spec!r}: expected NAME=URI")
        wanted[name] = ref
    if args.presets:
        wanted.update({n: n for n in style_presets.preset_names()})
    if wanted:
        return wanted
    recorded = record.get("styles")
    if isinstance(recorded, dict) and recorded and all(isinstance(v, str) for v in recorded.values()):
        return dict(recorded)
    sys.exit("nothing to train: give --style NAME=URI, --presets or a --recipe that names its styles")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from stylebatch.training.house_style import export_checkpoint, train_style_network

    try:
        config, record = recipe_config(args.recipe, args.steps)
    except RecipeError as exc:
        sys.exit(f"--recipe {exc}")
    weights_precision = args.weights_precision or record.get("weights_precision") or "fp16"
    if args.export_checkpoint:
        made = export_checkpoint(args.out, content=args.content, init_from=args.init_from,
                                 weights_precision=weights_precision)
        print(f"exported step {made['steps']} -> {args.out}")
        return 0
    styles = _styles(args, record)
    try:
        train_style_network(styles, args.out, content=args.content, config=config, resume=args.resume,
                            init_from=args.init_from, device=args.device, precision=args.precision,
                            checkpoint_every=args.checkpoint_every, weights_precision=weights_precision)
    except ValueError as exc:  # the user-facing errors (training data, styles, resume, weights) say what is wrong
        sys.exit(str(exc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
