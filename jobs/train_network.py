"""Train a style network (Johnson et al. + conditional instance norm); checkpointed, exactly resumable.

    python -m jobs.train_network --style brand=s3://brand/reference.jpg -o s3://brand/styles/brand.pt
    python -m jobs.train_network --presets -o stylebatch/models/weights/presets.pt   # every built-in preset
    python -m jobs.train_network ... --resume                                        # continue from <out>.ckpt
    python -m jobs.train_network --style ukiyo=ukiyo --holdout --recipe stylebatch/models/weights/presets/ukiyo.json \
        --init-from stylebatch/models/weights/presets/ukiyo.pt --steps 450 --lr 3e-4 -o ukiyo.pt  # a preset further

As a Ray job (takes a GPU when the cluster has one):
    ray job submit --working-dir . -- python -m jobs.train_network --style brand=s3://... -o s3://...
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields

from stylebatch.models.network import NetworkConfig
from stylebatch.models.network_file import STORAGE
from stylebatch.training.network_trainer import TrainConfig

HOLDOUT_LABEL = ("../shared/data/photos minus the evaluation's held-out photos, plus Debian mate-backgrounds' "
                 "nature photos when installed (--holdout)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.train_network", description=__doc__.split("\n")[0])
    p.add_argument("--style", action="append", default=[], metavar="NAME=URI",
                   help="a style to learn: name=preset name or image URI (repeatable: one network for all)")
    p.add_argument("--presets", action="store_true", help="learn every built-in preset (the shipped network)")
    p.add_argument("--content", help="folder, S3 prefix or Parquet manifest of content photos "
                   "(default: scikit-image's photos + ../shared/data/photos)")
    p.add_argument("--holdout", action="store_true",
                   help="train on ../shared photos minus the evaluation's held-out ones, plus Debian mate-backgrounds' "
                   "nature photos when installed (apt-get install mate-backgrounds; for the shipped networks)")
    p.add_argument("-o", "--out", required=True, help="network file to write (local or s3://)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    p.add_argument("--export-checkpoint", action="store_true",
                   help="only export <out>.ckpt as it stands to <out> (a run stopped early or still going)")
    p.add_argument("--note", default="", help="--export-checkpoint: what the content was, for the record")
    p.add_argument("--init-from", help="start from another network file's convolutions "
                   "(with --export-checkpoint: what the run started from, for the record); see --lr")
    p.add_argument("--recipe", metavar="JSON",
                   help="take every training setting not given here from a network's record (<out>.json, local "
                   "or s3://), e.g. stylebatch/models/weights/presets/ukiyo.json: train a preset further with "
                   "the recipe it was made with")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--weights-precision", choices=STORAGE, default="fp16",
                   help="how the exported file stores the weights (int8: a quarter of fp32's bytes; the shipped presets)")
    # Every setting of the network and of training is a flag, its help from the field (booleans as
    # --x/--no-x); the defaults are the recipe's when --recipe is given (parse_args).
    for f in fields(NetworkConfig):
        default = TrainConfig().network[f.name]
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(default, bool) else {"type": type(default)}
        p.add_argument(_flag(f.name), default=default, help=f"{f.metadata['help']} (NetworkConfig)", **kind)
    for f in fields(TrainConfig):
        if f.name == "network":
            continue
        p.add_argument(_flag(f.name), type=type(f.default), default=f.default, help=f.metadata["help"])
    return p


def load_recipe(uri: str) -> TrainConfig:
    """The training settings recorded in a network's ``<out>.json``."""
    from stylebatch.io import storage

    where = f"--recipe {storage.redact(uri)}"
    try:
        record = json.loads(storage.read_bytes(uri))
    except storage.StorageError as exc:  # its message is already redacted
        sys.exit(f"{where}: {exc}")
    except ValueError as exc:
        sys.exit(f"{where}: not a network record (invalid JSON: {exc})")
    if not isinstance(record, dict) or "config" not in record:
        sys.exit(f"{where}: not a network record (no 'config': the .json written beside a network file)")
    try:
        return TrainConfig.from_record(record["config"], source=where)
    except ValueError as exc:
        sys.exit(str(exc))


def parse_args(argv=None) -> tuple[argparse.Namespace, dict]:
    """The arguments, with --recipe's settings as the defaults that flags override; and the
    network settings to start from (the recipe's, or none)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.recipe:
        return args, {}
    recipe = load_recipe(args.recipe)
    parser.set_defaults(**{k: v for k, v in asdict(recipe).items() if k != "network"},
                        **recipe.network)
    return parser.parse_args(argv), recipe.network


def main(argv=None) -> int:
    args, _ = parse_args(argv)
    from stylebatch.styles import presets as style_presets
    from stylebatch.training.house_style import export_checkpoint, train_style_network

    if args.export_checkpoint:
        made = export_checkpoint(args.out, content=args.note or (HOLDOUT_LABEL if args.holdout else args.content),
                                 init_from=args.init_from, weights_precision=args.weights_precision)
        print(f"exported step {made['steps']} -> {args.out}")
        return 0

    wanted = {}
    for spec in args.style:
        name, sep, ref = spec.partition("=")
        if not sep or not name or not ref:
            sys.exit(f"--style {spec!r}: expected NAME=URI")
        wanted[name] = ref
    if args.presets:
        wanted.update({n: n for n in style_presets.preset_names()})
    if not wanted:
        sys.exit("nothing to train: give --style NAME=URI or --presets")
    content_images = None
    if args.holdout:
        from stylebatch.io import images
        from tools import datasets

        content_images = [images.decode_image(p.read_bytes()) for p in datasets.training_content()]
        if not content_images:
            sys.exit(f"--holdout: no photos under {datasets.SHARED_DATA}")
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "network"},
                         network={f.name: getattr(args, f.name) for f in fields(NetworkConfig)})
    try:
        train_style_network(wanted, args.out, content=args.content, content_images=content_images, config=config,
                            resume=args.resume, init_from=args.init_from, device=args.device,
                            precision=args.precision, checkpoint_every=args.checkpoint_every,
                            weights_precision=args.weights_precision,
                            content_label=HOLDOUT_LABEL if args.holdout else None)
    except ValueError as exc:  # the user-facing errors (training data, styles, resume, weights) say what is wrong
        sys.exit(str(exc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
