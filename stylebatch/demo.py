"""The embedded default: real photos bundled in scikit-image's wheel, written as a local catalog."""
from __future__ import annotations

from pathlib import Path

from stylebatch.io import images, manifest, storage

# Public-domain / CC0 photos that scikit-image ships (see skimage.data's docstrings).
DEMO_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def prepare_demo(root: Path) -> Path:
    """Write the demo photos as JPEGs under root/photos and a manifest of them; return its path."""
    try:
        import skimage.data as data
    except ImportError as exc:
        raise SystemExit("the demo needs scikit-image's bundled photos: pip install 'stylebatch[demo]'") from exc
    photos = storage.join(str(root), "photos")
    for name in DEMO_PHOTOS:
        target = storage.join(photos, f"{name}.jpg")
        if not storage.exists(target):
            img = getattr(data, name)()
            if img.ndim == 2:
                img = img[..., None].repeat(3, axis=2)
            storage.write_bytes(target, images.encode_image(img[..., :3].astype("uint8"), fmt="jpeg", quality=95))
    out = root / "manifest.parquet"
    manifest.build_manifest(photos, str(out))
    return out
