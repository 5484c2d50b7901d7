"""Image sets for training and evaluating the AdaIN decoder (never committed: read from disk).

The held-out lists are shared by ``train_decoder`` (which never sees them) and ``evaluate``
(which scores only them), so quality figures are measured on unseen content and styles.
"""
from __future__ import annotations

import os
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
