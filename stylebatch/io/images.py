"""Decode user images robustly into upright RGB uint8 arrays, resize and encode them.

A catalog contains everything users upload: error pages saved as .jpg, truncated uploads,
16-bit scans, CMYK print files, phone photos with EXIF rotation, decompression bombs. Every
failure becomes an ImageDecodeError whose message a catalog owner can act on.
"""

from __future__ import annotations

import codecs
import io
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageDecodeError",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "OUTPUT_FORMATS",
    "OutputFormat",
    "output_format",
    "format_for_filename",
    "decode_image",
    "image_size_from_header",
    "resize_to_max",
    "encode_image",
]

DEFAULT_MAX_PIXELS = 64_000_000

# Lower-case extensions (without dot) treated as images when scanning folders/prefixes.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")



@dataclass(frozen=True)
class OutputFormat:
    """An output image format: the one table (``OUTPUT_FORMATS``) that validation, the command
    lines' choices, the one-image command and the write stage all read. Adding a format is one
    entry here."""

    name: str
    extension: str                      # of output files, without the dot
    content_type: str
    pil_format: str
    save_options: Callable[[int], dict]  # encoder quality (1-100) -> PIL save() options
    aliases: tuple[str, ...] = ()

    def encode(self, img: np.ndarray, quality: int = 90) -> bytes:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"quality must be between 1 and 100, got {quality}")
        buf = io.BytesIO()
        _as_image(img).save(buf, format=self.pil_format, **self.save_options(int(quality)))
        return buf.getvalue()


OUTPUT_FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("jpeg", "jpg", "image/jpeg", "JPEG", lambda q: {"quality": q}, aliases=("jpg",)),
    OutputFormat("png", "png", "image/png", "PNG", lambda q: {"compress_level": 6}),
    OutputFormat("webp", "webp", "image/webp", "WEBP", lambda q: {"quality": q, "method": 4}),
)}


def output_format(name: str) -> OutputFormat:
    """The format called ``name`` (or one of its aliases, e.g. "jpg"); ValueError naming the
    supported ones otherwise."""
    key = str(name).lower()
    for f in OUTPUT_FORMATS.values():
        if key == f.name or key in f.aliases:
            return f
    raise ValueError(f"unsupported output format {name!r}; supported: {', '.join(OUTPUT_FORMATS)}")


def format_for_filename(name: str) -> OutputFormat:
    """The output format a file name's extension asks for (``stylized.png`` -> png)."""
    base = name.rsplit("/", 1)[-1]
    ext = base.rsplit(".", 1)[-1] if "." in base else ""
    try:
        return output_format(ext)
    except ValueError:
        known = ", ".join(f".{e}" for f in OUTPUT_FORMATS.values() for e in (f.extension, *f.aliases, f.name))
        raise ValueError(f"output {name!r} must end in one of {', '.join(dict.fromkeys(known.split(', ')))}") from None


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why in plain words."""


# --------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------


# Known BITMAPINFOHEADER variants: "BM" alone is too weak (text can start with it).
_BMP_DIB_SIZES = {struct.pack("<I", n) for n in (12, 40, 52, 56, 64, 108, 124)}
_PNM_RE = re.compile(rb"P[1-7]\s+(?:#[^\n]*\n\s*)*\d")


def _sniff_format(data: bytes) -> str | None:
    """Format name from magic bytes, or None when the signature is not a known image."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM" and data[14:18] in _BMP_DIB_SIZES:
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if data[:4] == b"8BPS":
        return "PSD"
    if _PNM_RE.match(data[:64]):
        return "PNM"  # ASCII header: must not be mistaken for text below
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "HEIC"
    return None


def _looks_like_text(sample: bytes) -> str | None:
    """Decoded text if ``sample`` is plausibly text (UTF-8/ASCII, few control chars)."""
    if b"\x00" in sample:
        return None
    if sample.startswith(codecs.BOM_UTF8):
        sample = sample[len(codecs.BOM_UTF8):]
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        # final=False tolerates a multi-byte character cut at the end of the sample.
        text = decoder.decode(sample, final=False)
    except UnicodeDecodeError:
        text = sample.decode("latin-1")
    if not text:
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\t\n\r\f")
    return text if printable / len(text) >= 0.95 else None


def _text_message(text: str) -> str:
    head = text.lstrip().lower()[:2048]
    if head.startswith(("<!doctype html", "<html", "<head", "<body")) or (
        head.startswith("<") and any(t in head for t in ("<html", "<body", "<title", "<div", "<p>"))
    ):
        return "not an image: looks like HTML (an error page saved as .jpg?)"
    if "<svg" in head:
        return "not an image: looks like an SVG vector drawing (only raster images are supported)"
    if head.startswith("<?xml") and "<error>" in head:
        return "not an image: looks like an XML error response (e.g. from S3) saved as a file"
    if head.startswith(("{", "[")):
        return "not an image: looks like text (JSON, perhaps an API error response)"
    return "not an image: looks like text"


def _hex_head(data: bytes, n: int = 8) -> str:
    return " ".join(f"{b:02x}" for b in data[:n])


# --------------------------------------------------------------------------------------------
# Header size parsing (before Pillow touches pixels)
# --------------------------------------------------------------------------------------------

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of PNG/GIF/JPEG/WebP/BMP bytes without decoding
    pixels, or None if the format is not one of these or the header is unreadable."""
    try:
        fmt = _sniff_format(data)
        if fmt == "PNG" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if fmt == "GIF":
            return struct.unpack("<HH", data[6:10])
        if fmt == "JPEG":
            return _jpeg_size(data)
        if fmt == "BMP":
            (dib,) = struct.unpack("<I", data[14:18])
            if dib == 12:
                return struct.unpack("<HH", data[18:22])
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if fmt == "WebP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L" and data[20:21] == b"\x2f":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
    except struct.error:
        return None
    return None


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has an invalid size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels, "
            f"over the {max_pixels / 1e6:g} megapixel limit"
        )


# --------------------------------------------------------------------------------------------
# Pixel conversion
# --------------------------------------------------------------------------------------------

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32B", "I;32S", "I", "F"}


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a single-channel 16/32-bit or float image to 0..255 by its range (never clip)."""
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        # 16-bit data uses the full 0..65535 range; scaling by it keeps the photo's tonality.
        return np.rint(a * (255.0 / 65535.0)).astype(np.uint8)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0  # the usual [0, 1] float convention
    elif lo >= 0.0 and hi <= 255.0:
        scaled = a  # already 8-bit values stored wide
    elif lo >= 0.0 and hi <= 65535.0 and mode != "F":
        scaled = a * (255.0 / 65535.0)
    elif hi > lo:
        scaled = (a - lo) * (255.0 / (hi - lo))  # arbitrary range: stretch min..max
    else:
        scaled = np.zeros_like(a)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _has_transparency(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES:
        return True
    if im.mode == "P":
        return "transparency" in im.info or (im.palette is not None and im.palette.mode == "RGBA")
    return im.mode in ("L", "RGB", "1") and "transparency" in im.info


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        arr = np.asarray(im)
    elif _has_transparency(im):
        arr = _composite_over_white(np.asarray(im.convert("RGBA")))
    elif mode in _WIDE_MODES:
        gray = _to_uint8(np.asarray(im), mode)
        arr = np.repeat(gray[..., None], 3, axis=2)
    else:
        # 1, L, P, CMYK (Pillow already un-inverts Adobe CMYK JPEGs), YCbCr, LAB, HSV, RGBX...
        try:
            arr = np.asarray(im.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise ImageDecodeError(f"unsupported pixel mode {mode!r}: {exc}") from None
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - guards Pillow surprises
        raise ImageDecodeError(f"unexpected decoded shape {arr.shape} for mode {mode!r}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def decode_image(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into an upright (H, W, 3) uint8 RGB array.

    Checks the size from the header before decoding pixels (over ``max_pixels`` -> error),
    applies EXIF orientation, flattens transparency onto white, scales 16-bit/float data by
    range, takes the first frame of animations and refuses truncated files. Pillow's own
    hard decompression-bomb limit (about 179 MP) still applies if ``max_pixels`` is higher.
    Raises ImageDecodeError with a user-readable message.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"decode_image expects bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")

    fmt = _sniff_format(data)
    if fmt is None:
        text = _looks_like_text(data[:4096])
        if text is not None:
            raise ImageDecodeError(_text_message(text))
    if fmt in ("HEIC",):
        raise ImageDecodeError("HEIC/HEIF images are not supported; convert to JPEG or PNG")

    header_size = image_size_from_header(data)
    if header_size is not None:
        _check_pixels(*header_size, max_pixels)

    # Someone may have flipped this global; with it on, Pillow returns half-grey pictures for
    # truncated uploads instead of failing.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        ImageFile.LOAD_TRUNCATED_IMAGES = False

    label = fmt or "image"
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        if header_size is not None:
            w, h = header_size
            raise ImageDecodeError(
                f"image is {w}x{h} = {w * h / 1e6:.1f} megapixels, over Pillow's decompression-bomb limit"
            ) from None
        m = re.search(r"\((\d+) pixels\)", str(exc))
        if m:
            limit = f"the {max_pixels / 1e6:g} megapixel limit" if max_pixels else "Pillow's limit"
            raise ImageDecodeError(
                f"image is {int(m.group(1)) / 1e6:.1f} megapixels, over {limit} (possible decompression bomb)"
            ) from None
        raise ImageDecodeError(f"image is too large (possible decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        if fmt is not None:
            raise ImageDecodeError(f"truncated or corrupt {label}: cannot read its header") from None
        raise ImageDecodeError(
            f"not an image: unrecognised file format (starts with {_hex_head(data)})"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt headers
        raise ImageDecodeError(f"truncated or corrupt {label}: {exc}") from None

    with im:
        label = im.format or label
        _check_pixels(im.width, im.height, max_pixels)
        try:
            im.seek(0)  # first frame of animations / first page of multi-page TIFFs
            im.load()
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - OSError/SyntaxError/EOFError/ValueError...
            raise ImageDecodeError(f"truncated or corrupt {label}: {exc}") from None
        try:
            upright = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the picture
            upright = im
        if upright is None:  # pragma: no cover - older Pillow in_place semantics
            upright = im
        try:
            return _to_rgb(upright)
        except ImageDecodeError:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - lazy decoders can still fail on convert
            raise ImageDecodeError(f"truncated or corrupt {label}: {exc}") from None


def _as_image(img: np.ndarray) -> Image.Image:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 2:
        return Image.fromarray(img, mode="L")
    if img.ndim == 3 and img.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(img), mode="RGB")
    raise ValueError(f"expected an (H, W, 3) or (H, W) image, got shape {img.shape}")


def resize_to_max(img: np.ndarray, max_size: int | None) -> np.ndarray:
    """Shrink so the longer side is at most ``max_size`` (aspect kept, Lanczos); never upscale.
    ``None`` or an image already small enough returns ``img`` unchanged."""
    if max_size is None:
        return img
    if max_size < 1:
        raise ValueError(f"max_size must be a positive integer or None, got {max_size}")
    h, w = img.shape[:2]
    longest = max(h, w)
    if longest <= max_size:
        return img
    scale = max_size / longest
    new_w = max(1, min(max_size, round(w * scale)))
    new_h = max(1, min(max_size, round(h * scale)))
    # reducing_gap lets Pillow box-reduce first for big ratios: much faster, same quality.
    resized = _as_image(img).resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(resized)


def resize_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to exactly ``height`` x ``width`` (Lanczos, either direction)."""
    if img.shape[:2] == (height, width):
        return img
    return np.asarray(_as_image(img).resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0))


def stylize_at_scale(stylize, imgs: list, style_scale: float) -> list:
    """``stylize(images) -> images`` run at the pictures' size divided by ``style_scale`` and resized
    back: the style's marks come out ``style_scale`` times larger relative to the picture (1: the
    model runs at full size)."""
    if style_scale == 1.0:
        return stylize(imgs)
    small = [resize_to(im, max(8, round(im.shape[0] / style_scale)), max(8, round(im.shape[1] / style_scale)))
             for im in imgs]
    return [resize_to(out, *im.shape[:2]) for out, im in zip(stylize(small), imgs)]


def encode_image(img: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 array in one of ``OUTPUT_FORMATS`` (aliases such as "jpg" are
    accepted). ``quality`` (1-100) applies to the lossy ones."""
    return output_format(fmt).encode(img, quality)
