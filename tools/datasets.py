"""Image sets for training and evaluating the models (never committed: read from disk).

The held-out lists are shared by the training sets (which never hold them) and ``evaluate``
(which scores only them), so quality figures are measured on unseen content and styles.

    python -m tools.datasets training-manifest -o training-photos.parquet            # the presets' photos
    python -m tools.datasets training-manifest --set base -o base-photos.parquet     # the base network's

writes the content photos a shipped network trained on as a manifest, in the order it read them,
for ``python -m jobs.train_network --content``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SHARED_DATA = Path(os.environ.get("STYLEBATCH_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
DEBIAN_NATURE = Path("/usr/share/backgrounds/mate/nature")

HOLDOUT_PHOTOS = (
    "astronaut_eileen_collins.jpg",
    "cat_chelsea.jpg",
    "kodak_23_macaws.jpg",
    "kodak_22_red_barn.jpg",
    "space_shuttle_endeavour_flyby.jpg",
    "kodak_15_child_face_paint.jpg",
)
# The faces in the held-out photos, as fractions of the width and height (left, top, right, bottom):
# OpenCV's Haar frontal-face detector's boxes, checked by eye. The evaluation's face score reads
# the outlines inside them, where a network that keeps the whole photo's outlines can still lose a face.
HOLDOUT_FACES = {
    "astronaut_eileen_collins.jpg": (0.344, 0.125, 0.534, 0.316),
    "kodak_15_child_face_paint.jpg": (0.467, 0.016, 0.935, 0.719),
}
HOLDOUT_STYLES = (
    "vangogh_starry_night.jpg",
    "munch_the_scream.jpg",
    "picabia_udnie.jpg",
    "monet_water_lilies.jpg",
)
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def image_files(folder: Path, exclude=()) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.name not in exclude)


def training_content() -> list[Path]:
    return image_files(SHARED_DATA / "photos", HOLDOUT_PHOTOS) + image_files(DEBIAN_NATURE)


def training_styles() -> list[Path]:
    return image_files(SHARED_DATA / "styles", HOLDOUT_STYLES)


def holdout_content() -> list[Path]:
    return [SHARED_DATA / "photos" / n for n in HOLDOUT_PHOTOS if (SHARED_DATA / "photos" / n).exists()]


def holdout_styles() -> list[Path]:
    return [SHARED_DATA / "styles" / n for n in HOLDOUT_STYLES if (SHARED_DATA / "styles" / n).exists()]


def skimage_photo_files() -> list[Path]:
    """scikit-image's bundled photographs (``stylebatch.training.house_style.SKIMAGE_PHOTOS``) as files."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return [folder / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                 "hubble_deep_field.jpg", "ihc.png", "camera.png") if (folder / n).exists()]


# name -> (what it is, its photos in training order)
TRAINING_SETS = {
    "presets": ("../shared/data/photos minus the evaluation's held-out photos, plus Debian mate-backgrounds' "
                "nature photos (apt-get install mate-backgrounds): the presets' own networks", training_content),
    "base": ("scikit-image's bundled photos plus every ../shared/data/photos photo: the shared base network",
             lambda: skimage_photo_files() + image_files(SHARED_DATA / "photos")),
}


def write_training_manifest(out: str, which: str = "presets") -> int:
    """Write the ``which`` training set as a manifest (image_id: folder__name, uri) to ``out``; its
    row count."""
    import pyarrow as pa

    from stylebatch.io import storage
    from stylebatch.io.manifest import validate_manifest

    paths = TRAINING_SETS[which][1]()
    if not paths:
        raise SystemExit(f"no photos for the {which!r} set under {SHARED_DATA} (set STYLEBATCH_SHARED_DATA)")
    table = pa.table({"image_id": pa.array([f"{p.parent.name}__{p.stem}" for p in paths], pa.string()),
                      "uri": pa.array([str(p.resolve()) for p in paths], pa.string())})
    validate_manifest(table)
    storage.write_parquet_table(table, out)
    return table.num_rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.datasets", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    manifest = sub.add_parser("training-manifest", help="write a training set's photos as a manifest")
    manifest.add_argument("--set", dest="which", choices=TRAINING_SETS, default="presets",
                          help="; ".join(f"{k}: {v[0]}" for k, v in TRAINING_SETS.items()))
    manifest.add_argument("-o", "--out", required=True, help="manifest to write (Parquet, local or s3://)")
    args = p.parse_args(argv)
    print(f"wrote {write_training_manifest(args.out, args.which)} photos -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
