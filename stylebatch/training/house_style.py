"""Train a style network from URIs: style images and content photos in, a network file out.

Every byte goes through ``storage`` (local paths or s3://), so the same call trains on a laptop, in
a Ray task, or in ``ray job submit``. Checkpoints live next to the output (``<out>.ckpt``) and a
rerun with ``resume=True`` continues exactly where the last checkpoint left off.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from stylebatch.io import images, storage
from stylebatch.io.images import IMAGE_EXTENSIONS
from stylebatch.models.checkpoints import WeightsError, load_weights_record
from stylebatch.models.network_file import pack_state
from stylebatch.training.network_trainer import NetworkTrainer
from stylebatch.training.recipe import TrainConfig

# scikit-image's bundled photographs (public domain / CC0, see skimage.data): the content photos a
# training gets when it is given none.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera")
DEFAULT_CONTENT = "default (scikit-image's photos)"


class TrainingDataError(ValueError):
    """The content or style given for training cannot be used; the message says which and why."""


class ResumeError(ValueError):
    """The checkpoint to resume was made with other settings than the ones given; the message names them."""


def skimage_photos() -> list[np.ndarray]:
    try:
        import skimage.data as data
    except ImportError as exc:
        raise TrainingDataError("default training content needs scikit-image (pip install 'stylebatch[demo]') "
                                "or give --content FOLDER|MANIFEST|S3 PREFIX") from exc
    out = []
    for name in SKIMAGE_PHOTOS:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3].astype(np.uint8)))
    return out


def content_uris(source: str) -> list[str]:
    """The image URIs of a folder / S3 prefix, or of a Parquet manifest's ``uri`` column."""
    if source.lower().endswith(".parquet"):
        table = storage.read_parquet_table(source, columns=["uri"])
        uris = [u for u in table.column("uri").to_pylist() if u]
    else:
        uris = [info.uri for info in storage.list_objects(source, suffixes=[f".{e}" for e in IMAGE_EXTENSIONS])]
    if not uris:
        raise TrainingDataError(f"no content images in {storage.redact(source)} "
                                f"(looked for {', '.join('.' + e for e in IMAGE_EXTENSIONS)} or a manifest's uri column)")
    return uris


def load_content(source: Optional[str], *, limit: int = 2000) -> list[np.ndarray]:
    """Decoded content photos: from ``source`` (in its order), or by default scikit-image's photos.
    Unreadable images are skipped with a warning."""
    if source is None:
        return skimage_photos()
    out = []
    for uri in content_uris(source)[:limit]:
        try:
            out.append(images.decode_image(storage.read_bytes(uri)))
        except (images.ImageDecodeError, storage.StorageError) as exc:
            print(f"skipping content image {storage.redact(uri)}: {storage.redact(str(exc))}")
    if not out:
        raise TrainingDataError(f"none of the content images in {storage.redact(source)} could be read")
    return out


def load_style_image(ref: str) -> np.ndarray:
    """A preset name or a style image URI -> pixels."""
    from stylebatch.styles import catalog

    return np.array(catalog.resolve_style(ref).images[0])


def _save(obj, uri: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes(uri, buf.getvalue())


def _load(uri: str):
    """Weights-only load of a file that may live on S3 (its bytes are unpickled in memory)."""
    return load_weights_record(uri)


def checkpoint_uri(out: str) -> str:
    return out + ".ckpt"


def _resumable(given: TrainConfig, saved: TrainConfig, ckpt: str) -> TrainConfig:
    """The checkpoint's settings with the given step count (a run may be lengthened). Any other
    setting that differs is refused: going on with the old ones would ignore what was asked, and
    switching mid-run would leave a record that names one config for the whole run."""
    mine, theirs = given.describe(), saved.describe()
    changed = sorted(k for k in mine if k != "steps" and mine[k] != theirs[k])
    if changed:
        said = "; ".join(f"{k}: checkpoint {theirs[k]!r}, given {mine[k]!r}" for k in changed)
        raise ResumeError(f"{storage.redact(ckpt)} was trained with other settings ({said}); resume with the "
                          "same settings, or start a new run from its export with --init-from")
    return replace(saved, steps=given.steps)


def train_style_network(styles: Mapping[str, str], out: str, *, content: Optional[str] = None,
                        content_images: Optional[Sequence[np.ndarray]] = None,
                        config: TrainConfig = TrainConfig(), resume: bool = False,
                        init_from: Optional[str] = None, device: str = "auto", precision: str = "auto",
                        checkpoint_every: int = 50, progress: Optional[Callable[[str], None]] = print,
                        weights_precision: str = "fp16") -> dict:
    """Train one network for ``styles`` (name -> preset name or image URI) and write it to ``out``
    (weights-only; fp16, or int8 convolutions: ``network_file.pack_state``) with ``out.json`` saying how
    it was made. ``resume`` continues from ``<out>.ckpt`` with its settings (other settings:
    ``ResumeError``); ``init_from`` starts from another network file's weights."""
    if not styles:
        raise TrainingDataError("give at least one style to train")
    ckpt = checkpoint_uri(out)
    state = None
    if resume and storage.exists(ckpt):  # first: a refused resume costs no image loading
        state = _load(ckpt)
        config = _resumable(config, TrainConfig.from_record(state["config"], source=storage.redact(ckpt)), ckpt)
    style_pixels = {name: load_style_image(ref) for name, ref in styles.items()}
    photos = list(content_images) if content_images is not None else load_content(content)
    init = None
    if init_from and state is None:
        init = _load(init_from)
        if not isinstance(init, dict) or "state_dict" not in init:
            raise WeightsError(f"{init_from}: not a style network file to start from")
    trainer = NetworkTrainer(style_pixels, photos, config, device=device, precision=precision, init_network=init)
    if state is not None:
        trainer.load_state(state)
        if progress:
            progress(f"resuming {storage.redact(ckpt)} at step {trainer.step}")

    def save_checkpoint(t: NetworkTrainer) -> None:
        _save(t.state(), ckpt)

    trainer.train(config.steps, checkpoint=save_checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    label = "photos handed over as pixels" if content_images is not None else content
    record = export_network(trainer, out, styles=styles, content=label, init_from=init_from,
                            n_photos=len(photos), weights_precision=weights_precision)
    return record


HOUSE_STYLE_NAME = "house"


def cached_network_uri(output: str, style_key: str, steps: int) -> str:
    """Where --train-style keeps a style image's network: by the image's content key and the training
    settings, so a changed image or config trains anew and an unchanged one is reused."""
    settings = hashlib.sha256(json.dumps({"config": TrainConfig(steps=steps).describe()},
                                         sort_keys=True).encode()).hexdigest()[:8]
    return storage.output_uri(output, "_styles", f"{style_key[:24]}-{settings}.pt")


def train_house_style(style_image: str, out: str, *, steps: int, device: str = "auto",
                      precision: str = "auto") -> dict:
    """One style image -> one network at ``out``, started from the shared base network's convolutions when
    present (a new style then mostly learns its normalisation parameters: far fewer steps), on the
    default content. Resumes from ``<out>.ckpt`` if an earlier attempt was killed."""
    from stylebatch.styles.catalog import base_network_path

    init = base_network_path() if storage.exists(base_network_path()) else None
    return train_style_network({HOUSE_STYLE_NAME: style_image}, out, config=TrainConfig(steps=steps),
                               resume=True, init_from=init, device=device, precision=precision)


def export_network(trainer: NetworkTrainer, out: str, *, styles: Mapping[str, str], content: Optional[str],
                   init_from: Optional[str], n_photos: int, weights_precision: str = "fp16") -> dict:
    return _export(trainer.state(), out, styles=styles, content=content, init_from=init_from, n_photos=n_photos,
                   device=str(trainer.device), precision=trainer.precision, weights_precision=weights_precision)


def export_checkpoint(out: str, **made) -> dict:
    """Export ``<out>.ckpt`` as it stands (a run stopped early, or still going) to ``out``."""
    state = _load(checkpoint_uri(out))
    return _export(state, out, **made)


def _export(state: dict, out: str, *, styles: Optional[Mapping[str, str]] = None, content: Optional[str] = None,
            init_from: Optional[str] = None, n_photos: Optional[int] = None, device: str = "", precision: str = "",
            weights_precision: str = "fp16") -> dict:
    """The network file (``weights_precision``: fp16 or int8) and ``<out>.json``: how it was made."""
    net_rec = state["network"]
    # With ema_decay the file holds the averaged weights (the checkpoint keeps both, to resume).
    record = {**net_rec, **pack_state(state.get("ema") or net_rec["state_dict"], weights_precision)}
    _save(record, out)
    made = {"styles": {k: storage.redact(v) for k, v in (styles or {n: n for n in net_rec["styles"]}).items()},
            "content": storage.redact(content) if content else DEFAULT_CONTENT,
            "content_images": n_photos, "init_from": init_from, "steps": int(state["step"]),
            "train_seconds": round(float(state.get("seconds", 0.0)), 1),
            "device": device, "precision": precision, "weights_precision": weights_precision,
            "torch": torch.__version__,
            "config": state["config"], "history": state["history"][-20:]}
    storage.write_bytes(out.rsplit(".", 1)[0] + ".json", (json.dumps(made, indent=2) + "\n").encode())
    return made
