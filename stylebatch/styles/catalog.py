"""Style catalogs and style resolution.

A style is one or more reference images (with blend weights) plus transfer settings: a built-in
preset (``stylebatch.styles.presets``), a catalog entry (safe YAML/JSON) or a style image URI. Resolving
one gives its pixels, a content key, and the trained network that serves it, if any.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from stylebatch.io import images as _images
from stylebatch.io import storage as _storage
from stylebatch.models.registry import PUBLISHED_KINDS, QUALITIES
from stylebatch.styles import presets

# Style statistics are scale-sensitive but saturate quickly: VGG means/stds of a
# 1024 px reference are practically those of a larger one, and smaller inputs
# keep the per-actor style encoding cheap.
MAX_STYLE_SIZE = 1024
# A style reference is a single image; anything bigger than this is a mistake
# (or an attack) rather than a style.
MAX_STYLE_BYTES = 64 * 1024 * 1024
_STYLE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class StyleError(ValueError):
    """A style name, catalog entry or style image cannot be used."""


@dataclass(frozen=True, eq=False)
class ResolvedStyle:
    """Everything a model needs to apply one style.

    ``images`` are read-only HxWx3 uint8 RGB arrays: ``key`` hashes their pixels,
    so mutating them would silently invalidate cached style statistics.
    """

    name: str
    key: str
    images: tuple[np.ndarray, ...]
    weights: tuple[float, ...]
    alpha: float = 1.0
    preserve_color: bool = False
    quality: str = "fast"
    network: str | None = None         # a trained network file (path or URI) for this style, if any
    network_style: str | None = None   # the style's name inside that file (None: its only style)
    model: str | None = None           # the kind of network in that file when it is a published checkpoint

    def __post_init__(self) -> None:
        if not self.images and not self.model:
            raise StyleError(f"style {self.name!r}: no style images")
        if len(self.images) != len(self.weights):
            raise StyleError(f"style {self.name!r}: {len(self.images)} images but {len(self.weights)} weights")
        if self.quality not in QUALITIES:
            raise StyleError(f"style {self.name!r}: unknown quality {self.quality!r} (expected one of {', '.join(QUALITIES)})")
        if not 0.0 <= self.alpha <= 1.0:
            raise StyleError(f"style {self.name!r}: alpha must be within [0, 1], got {self.alpha!r}")

    # Arrays make generated __eq__/__hash__ unusable; ``key`` already stands
    # for the pixels and weights.
    def _identity(self) -> tuple:
        return (self.name, self.key, self.weights, self.alpha, self.preserve_color, self.quality, self.network,
                self.network_style, self.model)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResolvedStyle):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


# --------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------


def style_key(images: Iterable[np.ndarray], weights: Iterable[float]) -> str:
    """Stable content hash of style pixels and blend weights."""
    h = hashlib.sha256(b"stylebatch-style-v1")
    for img, w in zip(images, weights, strict=True):
        arr = np.ascontiguousarray(img, dtype=np.uint8)
        h.update(json.dumps({"shape": list(arr.shape), "weight": round(float(w), 9)}).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:20]


def _check_image_uri(ref: str, where: str) -> None:
    try:
        _storage.parse_uri(ref)
    except _storage.UnsupportedSchemeError as exc:
        raise StyleError(f"{where}: {exc} (download the image and reference the copy)") from None
    except _storage.StorageError:
        pass  # a malformed URI is reported when it is read


def _is_file(ref: str) -> bool:
    try:
        return _storage.exists(ref)
    except _storage.StorageError:
        return False


def _looks_like_uri(ref: str) -> bool:
    return (
        "://" in ref
        or "/" in ref
        or "\\" in ref
        or ref.startswith(("~", "."))
        or ref.lower().endswith(_IMAGE_SUFFIXES)
        or _is_file(ref)
    )


def _load_style_image(uri: str, *, max_pixels: int | None, where: str) -> np.ndarray:
    _check_image_uri(uri, where)
    if uri.startswith("~"):
        uri = os.path.expanduser(uri)
    try:
        data = _storage.read_bytes(uri, max_bytes=MAX_STYLE_BYTES)
    except _storage.UnsupportedSchemeError as exc:
        raise StyleError(f"{where}: {exc}") from exc
    except Exception as exc:  # storage errors, missing files, S3 failures
        raise StyleError(f"{where}: cannot read style image {_storage.redact(uri)!r}: {_storage.redact(str(exc))}") from exc
    try:
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        img = _images.decode_image(data, **kwargs)
    except _images.ImageDecodeError as exc:
        raise StyleError(f"{where}: cannot decode style image {_storage.redact(uri)!r}: {exc}") from exc
    if max(img.shape[:2]) > MAX_STYLE_SIZE:
        img = _images.resize_to_max(img, MAX_STYLE_SIZE)
    return img


def _frozen(img: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(img, dtype=np.uint8)
    if arr.flags.writeable:
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


def _image_for_ref(ref: str, *, max_pixels: int | None, where: str) -> np.ndarray:
    if presets.is_preset(ref):
        return presets.preset_pixels(ref)
    return _frozen(_load_style_image(ref, max_pixels=max_pixels, where=where))


def _build(name: str, refs: list[tuple[str, float]], *, alpha: float, preserve_color: bool, quality: str, max_pixels: int | None, where: str,
           network: str | None = None, network_style: str | None = None, model: str | None = None) -> ResolvedStyle:
    imgs = tuple(_image_for_ref(ref, max_pixels=max_pixels, where=where) for ref, _ in refs)
    if network is None and len(refs) == 1 and refs[0][0] in shipped_preset_networks():
        # A preset (alone, not in a blend) runs through its trained network; blends fall back to AdaIN.
        network, network_style = preset_network_ref(refs[0][0]), refs[0][0]
    total = sum(w for _, w in refs)
    weights = tuple(w / total for _, w in refs)
    # A published checkpoint is the style: its key names the kind and the file (the file's content
    # is part of each row's parameters, so a replaced file redoes the rows).
    key = style_key(imgs, weights) if imgs else hashlib.sha256(f"{model}|{network}".encode()).hexdigest()[:20]
    return ResolvedStyle(
        name=name,
        key=key,
        images=imgs,
        weights=weights,
        alpha=float(alpha),
        preserve_color=bool(preserve_color),
        quality=quality,
        network=network,
        network_style=network_style,
        model=model,
    )


WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "weights")
# The presets' shared network (conditional instance norm, all presets in one): where each preset's
# own network and every house style start training from.
BASE_NETWORK_FILE = "preset_networks.pt"
PRESET_NETWORK_DIR = "presets"  # presets/<name>.pt: each preset's own network (what --quality fast runs)
# How a style names a shipped file: resolved where it is read (a Ray worker's install of the
# package may live elsewhere than the driver's), never an absolute path baked into the plan.
BUILTIN_PREFIX = "builtin:"


def base_network_path() -> str:
    return os.path.join(WEIGHTS_DIR, BASE_NETWORK_FILE)


def preset_network_ref(preset: str) -> str:
    return f"{BUILTIN_PREFIX}{PRESET_NETWORK_DIR}/{preset}.pt"


def network_location(ref: str) -> str:
    """Where a style's network file is: under the shipped weights for ``builtin:``, else the path or URI itself."""
    if not ref.startswith(BUILTIN_PREFIX):
        return ref
    rel = ref[len(BUILTIN_PREFIX):]
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise StyleError(f"network {ref!r}: not a shipped weights file")
    return os.path.join(WEIGHTS_DIR, *rel.split("/"))


def read_network(ref: str) -> bytes:
    """The bytes of a style's network file (local, s3:// or a shipped one): what models read with."""
    return _storage.read_bytes(network_location(ref))


@functools.lru_cache(maxsize=1)
def shipped_preset_networks() -> frozenset:
    """The presets that ship their own network (files are validated when a plan loads them)."""
    folder = os.path.join(WEIGHTS_DIR, PRESET_NETWORK_DIR)
    return frozenset(n for n in presets.preset_names() if os.path.isfile(os.path.join(folder, f"{n}.pt")))


def with_network(style: ResolvedStyle, network: str, network_style: str | None = None) -> ResolvedStyle:
    """The same style, run by a trained network (``--train-style``, catalog ``network:``)."""
    import dataclasses

    return dataclasses.replace(style, network=network, network_style=network_style)


def style_from_image(uri: str, *, max_pixels: int | None = None, name: str | None = None, alpha: float = 1.0, preserve_color: bool = False, quality: str = "fast") -> ResolvedStyle:
    """A single-image style from a local path, file:// or s3:// URI."""
    where = f"style {name or uri!r}"
    img = _frozen(_load_style_image(uri, max_pixels=max_pixels, where=where))
    return ResolvedStyle(name=name or uri, key=style_key([img], [1.0]), images=(img,), weights=(1.0,), alpha=alpha, preserve_color=preserve_color, quality=quality)


# --------------------------------------------------------------------------
# catalog
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    images: tuple[tuple[str, float], ...]  # (preset name or URI, raw weight)
    alpha: float = 1.0
    preserve_color: bool = False
    quality: str = "fast"
    description: str = ""
    network: str | None = None          # a network trained for this style (stylebatch styles train)
    network_style: str | None = None    # its name in that file, when the file holds several
    model: str | None = None            # a published checkpoint's kind (its file is ``network``)

    @property
    def kind(self) -> str:
        """The model kind that runs this entry at its own quality."""
        if self.model:
            return self.model
        if self.quality == "premium":
            return "gatys"
        return "network" if self.network else "adain"


_ENTRY_FIELDS = {"image", "images", "alpha", "preserve_color", "quality", "description", "network", "network_style",
                 "model", "weights"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _resolve_relative(ref: str, base_dir: str | None) -> str:
    # Relative image paths in a catalog are relative to the catalog file, so a
    # catalog directory can be moved (or synced to S3) as a unit.
    if presets.is_preset(ref) or base_dir is None or not _storage.is_relative(ref) or ref.startswith("~"):
        return ref
    return _storage.join(base_dir, ref)


def _parse_entry(name: Any, raw: Any, base_dir: str | None) -> CatalogEntry:
    if not isinstance(name, str) or not _STYLE_NAME_RE.match(name):
        raise StyleError(f"style {name!r}: invalid name (use letters, digits, '_', '-', '.'; at most 64 characters)")
    where = f"style {name!r}"
    if isinstance(raw, str):
        raw = {"image": raw}  # shorthand: `name: path/or/preset`
    if not isinstance(raw, Mapping):
        raise StyleError(f"{where}: entry must be a mapping or an image reference, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - _ENTRY_FIELDS)
    if unknown:
        raise StyleError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_ENTRY_FIELDS))})")
    model = _parse_model(raw, where, base_dir)
    if model is not None and "network" in raw:
        raise StyleError(f"{where}: field 'network' is for the project's own network files; "
                         f"a published checkpoint goes in 'weights' with 'model'")
    if "image" in raw and "images" in raw:
        raise StyleError(f"{where}: give field 'image' (one reference) or 'images' (a blend), not both")
    if "image" not in raw and "images" not in raw and model is None:
        raise StyleError(f"{where}: field 'image' (one reference) or 'images' (a blend) is required "
                         f"(or 'model' and 'weights' for a published checkpoint)")
    refs: list[tuple[str, float]] = []
    if "image" in raw:
        if not isinstance(raw["image"], str) or not raw["image"].strip():
            raise StyleError(f"{where}: field 'image' must be a non-empty string (preset name, local path, file:// or s3:// URI)")
        refs.append((raw["image"].strip(), 1.0))
    elif "images" in raw:
        items = raw["images"]
        if not isinstance(items, list) or not items:
            raise StyleError(f"{where}: field 'images' must be a non-empty list")
        for i, item in enumerate(items):
            iw = f"{where}: images[{i}]"
            if isinstance(item, str):
                item = {"uri": item}
            if not isinstance(item, Mapping):
                raise StyleError(f"{iw} must be a string or a mapping with 'uri' and optional 'weight'")
            extra = sorted(set(map(str, item)) - {"uri", "weight"})
            if extra:
                raise StyleError(f"{iw}: unknown field(s) {', '.join(extra)} (allowed: uri, weight)")
            uri = item.get("uri")
            if not isinstance(uri, str) or not uri.strip():
                raise StyleError(f"{iw}: field 'uri' is required (preset name, local path, file:// or s3:// URI)")
            w = item.get("weight", 1.0)
            if not _is_number(w) or w <= 0:
                raise StyleError(f"{iw}: field 'weight' must be a positive number, got {w!r}")
            refs.append((uri.strip(), float(w)))
    for i, (ref, _) in enumerate(refs):
        _check_image_uri(ref, f"{where}: field {'image' if 'image' in raw else f'images[{i}]'}")
    refs = [(_resolve_relative(ref, base_dir), w) for ref, w in refs]

    alpha = raw.get("alpha", 1.0)
    if not _is_number(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise StyleError(f"{where}: field 'alpha' must be a number within [0, 1], got {alpha!r}")
    preserve = raw.get("preserve_color", False)
    if not isinstance(preserve, bool):
        raise StyleError(f"{where}: field 'preserve_color' must be true or false, got {preserve!r}")
    quality = raw.get("quality", "fast")
    if quality not in QUALITIES:
        raise StyleError(f"{where}: field 'quality' must be one of {', '.join(QUALITIES)}, got {quality!r}")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise StyleError(f"{where}: field 'description' must be a string")
    network, network_style = raw.get("network"), raw.get("network_style")
    if network is not None:
        if not isinstance(network, str) or not network.strip():
            raise StyleError(f"{where}: field 'network' must be a network file path or s3:// URI")
        if len(refs) != 1:
            raise StyleError(f"{where}: field 'network' needs a single 'image' (a blend runs through AdaIN)")
        _check_image_uri(network.strip(), f"{where}: field 'network'")
        network = _resolve_relative(network.strip(), base_dir)
    if network_style is not None and (network is None or not isinstance(network_style, str)):
        raise StyleError(f"{where}: field 'network_style' must be a string and needs 'network'")
    if model is not None:
        model, network = model
    return CatalogEntry(name, tuple(refs), float(alpha), preserve, quality, desc, network, network_style, model)


def _parse_model(raw: Mapping, where: str, base_dir: str | None) -> tuple[str, str] | None:
    """(kind, weights URI) of an entry that names a published checkpoint, or None."""
    if "model" not in raw and "weights" not in raw:
        return None
    model, weights = raw.get("model"), raw.get("weights")
    if model not in PUBLISHED_KINDS:
        raise StyleError(f"{where}: field 'model' must be one of {', '.join(PUBLISHED_KINDS)} (with 'weights'), "
                         f"got {model!r}")
    if not isinstance(weights, str) or not weights.strip():
        raise StyleError(f"{where}: field 'weights' (the {model} checkpoint's path or s3:// URI) is required "
                         f"with 'model'")
    _check_image_uri(weights.strip(), f"{where}: field 'weights'")
    return model, _resolve_relative(weights.strip(), base_dir)


@dataclass(frozen=True)
class StyleCatalog:
    """Named styles from a YAML/JSON catalog file (data only, never code)."""

    entries: Mapping[str, CatalogEntry] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | None = None, source: str | None = None) -> "StyleCatalog":
        where = f"style catalog {source!r}" if source else "style catalog"
        if not isinstance(data, Mapping) or not isinstance(data.get("styles"), Mapping):
            raise StyleError(f"{where}: expected a top-level 'styles:' mapping of name -> style entry")
        extra = sorted(set(map(str, data)) - {"styles", "version"})
        if extra:
            raise StyleError(f"{where}: unknown top-level field(s) {', '.join(extra)}")
        entries = {str(n): _parse_entry(n, raw, base_dir) for n, raw in data["styles"].items()}
        return cls(entries=entries, source=source)

    @classmethod
    def loads(cls, text: str | bytes, *, base_dir: str | None = None, source: str | None = None) -> "StyleCatalog":
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        import yaml  # YAML is a superset of JSON, so one safe parser reads both

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise StyleError(f"style catalog {source or ''}: not valid YAML/JSON: {exc}".replace("  ", " ")) from exc
        return cls.from_dict(data, base_dir=base_dir, source=source)

    @classmethod
    def load(cls, uri: str) -> "StyleCatalog":
        try:
            data = _storage.read_bytes(uri, max_bytes=4 * 1024 * 1024)
        except Exception as exc:
            raise StyleError(f"cannot read style catalog {_storage.redact(uri)!r}: {_storage.redact(str(exc))}") from exc
        base_dir = uri.rsplit("/", 1)[0] if "/" in uri else "."
        if uri.lower().endswith(".json"):
            # Strict JSON for .json files: a YAML-only construct there is a mistake.
            try:
                parsed = json.loads(data.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise StyleError(f"style catalog {uri!r}: not valid JSON: {exc}") from exc
            return cls.from_dict(parsed, base_dir=base_dir, source=uri)
        return cls.loads(data, base_dir=base_dir, source=uri)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def entry(self, name: str) -> CatalogEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise StyleError(f"style {name!r} is not in the catalog; catalog styles: {', '.join(self.names()) or '(none)'}") from None

    def resolve(self, name: str, *, max_pixels: int | None = None) -> ResolvedStyle:
        e = self.entry(name)
        return _build(name, list(e.images), alpha=e.alpha, preserve_color=e.preserve_color, quality=e.quality, max_pixels=max_pixels, where=f"style {name!r}",
                      network=e.network, network_style=e.network_style, model=e.model)


def available_styles(catalog: StyleCatalog | None = None) -> list[str]:
    names = set(presets.preset_names())
    if catalog is not None:
        names |= set(catalog.names())
    return sorted(names)


def list_styles(catalog: StyleCatalog | None = None) -> list[dict]:
    """One dict per available style: name, source ('builtin' or 'catalog'), description, images, alpha, quality."""
    out = []
    for name in available_styles(catalog):
        if catalog is not None and name in catalog:
            e = catalog.entries[name]
            refs = ", ".join(f"{r} ({w:g})" if len(e.images) > 1 else r for r, w in e.images)
            out.append({
                "name": name,
                "source": "catalog",
                "description": e.description or (f"catalog style from {refs}" if refs else
                                                 f"{e.model} checkpoint {_storage.redact(e.network)}"),
                "images": [r for r, _ in e.images],
                "alpha": e.alpha,
                "preserve_color": e.preserve_color,
                "quality": e.quality,
                "model": e.kind,
            })
        else:
            out.append({
                "name": name,
                "source": "builtin",
                "description": presets.PRESET_DESCRIPTIONS[name],
                "images": [name],
                "alpha": 1.0,
                "preserve_color": False,
                "quality": "fast",
                "model": "network" if name in shipped_preset_networks() else "adain",
            })
    return out


def resolve_style(name_or_uri: str, *, catalog: StyleCatalog | None = None, max_pixels: int | None = None) -> ResolvedStyle:
    """Resolve a catalog name (checked first, so a catalog can retune a preset),
    a built-in preset name, or a style image URI (local path, file://, s3://)."""
    if not isinstance(name_or_uri, str) or not name_or_uri.strip():
        raise StyleError(f"style must be a non-empty string; available styles: {', '.join(available_styles(catalog))}")
    ref = name_or_uri.strip()
    if catalog is not None and ref in catalog:
        return catalog.resolve(ref, max_pixels=max_pixels)
    if presets.is_preset(ref):
        return _build(ref, [(ref, 1.0)], alpha=1.0, preserve_color=False, quality="fast", max_pixels=max_pixels, where=f"style {ref!r}")
    if _looks_like_uri(ref):
        return style_from_image(ref, max_pixels=max_pixels)
    raise StyleError(
        f"unknown style {ref!r}; available styles: {', '.join(available_styles(catalog))} "
        "(or pass a style image as a local path, file:// or s3:// URI)"
    )
