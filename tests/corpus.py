"""A generated corpus of awkward inputs: every file is made here with Pillow/numpy, nothing is
third-party. Each Case says whether decoding should succeed ("ok") or fail ("error"), with the
substring a failing case's message must contain and the upright size a good case must have."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    expect: str  # "ok" or "error"
    message: str | None = None  # substring of the error message (error cases)
    size: tuple[int, int] | None = None  # expected (height, width) after decoding (ok cases)


# Colours used by the content-checking tests.
RED = (255, 0, 0)
GREEN = (0, 200, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

BOMB_SIDE = 30000


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def make_bomb_png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit PNG of width x height that is tiny on disk (all-zero rows compress to
    almost nothing) but would need width*height bytes of RAM once decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> None:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    path.write_bytes(buf.getvalue())


def _halves(w: int, h: int, left, right, mode: str = "RGB") -> Image.Image:
    img = Image.new(mode, (w, h), left)
    img.paste(Image.new(mode, (w - w // 2, h), right), (w // 2, 0))
    return img


def make_bad_input_corpus(directory: str | Path) -> list[Case]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    cases: list[Case] = []

    def add(name: str, filename: str, expect: str, message: str | None = None, size=None) -> Path:
        p = d / filename
        cases.append(Case(name, str(p), expect, message, size))
        return p

    # --- failures ------------------------------------------------------------------------
    add("zero_byte", "empty.jpg", "error", "empty file (0 bytes)").write_bytes(b"")

    noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="JPEG", quality=90)
    full = buf.getvalue()
    add("truncated_jpeg", "truncated.jpg", "error", "truncated or corrupt JPEG").write_bytes(
        full[: len(full) // 2]
    )

    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    png = buf.getvalue()
    add("truncated_png", "truncated.png", "error", "truncated or corrupt PNG").write_bytes(
        png[: len(png) * 2 // 3]
    )

    # Deterministic junk that starts with no known signature.
    junk = b"\x13\x37" + rng.integers(0, 256, 4094, dtype=np.uint8).tobytes()
    add("random_bytes", "random.jpg", "error", "not an image").write_bytes(junk)

    add("text", "notes.txt", "error", "not an image: looks like text").write_bytes(
        b"Shot list for the spring catalogue\n- blue dress, front\n- blue dress, back\n" * 5
    )
    add("html_error_page", "photo_0042.jpg", "error", "looks like HTML").write_bytes(
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
        b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
    )

    add("decompression_bomb", "bomb.png", "error",
        f"image is {BOMB_SIDE}x{BOMB_SIDE} = 900.0 megapixels, over the 64 megapixel limit").write_bytes(
        make_bomb_png()
    )

    cases.append(Case("missing", str(d / "does_not_exist" / "nope.jpg"), "error", "not found"))

    # --- images that must decode ---------------------------------------------------------
    ramp16 = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))
    _save(Image.fromarray(ramp16), add("png_16bit", "gray16.png", "ok", size=(16, 64)), "PNG")
    _save(
        Image.fromarray(ramp16.astype(">u2")),
        add("tiff_16bit_bigendian", "gray16be.tif", "ok", size=(16, 64)),
        "TIFF",
    )
    ramp_f = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (16, 1))
    _save(Image.fromarray(ramp_f, mode="F"), add("tiff_float", "float.tif", "ok", size=(16, 64)), "TIFF")

    cmyk = _halves(64, 32, (255, 0, 0, 0), (0, 0, 255, 0), mode="CMYK")  # cyan | yellow
    _save(cmyk, add("cmyk_jpeg", "cmyk.jpg", "ok", size=(32, 64)), "JPEG", quality=95)

    gray = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1)), mode="L")
    _save(gray, add("grayscale_png", "gray.png", "ok", size=(8, 64)), "PNG")

    bilevel = Image.fromarray(np.tile(np.array([0, 255] * 8, dtype=np.uint8), (4, 1))).convert("1")
    _save(bilevel, add("bilevel_png", "bilevel.png", "ok", size=(4, 16)), "PNG")

    pal = Image.new("P", (32, 16), 0)
    pal.putpalette([0, 0, 0, *RED] + [0] * (254 * 3))
    pal.paste(1, (16, 0, 32, 16))  # right half index 1 (red); left half index 0 (transparent)
    _save(pal, add("palette_transparent_png", "palette.png", "ok", size=(16, 32)), "PNG", transparency=0)

    rgba = np.zeros((16, 32, 4), dtype=np.uint8)  # left: fully transparent black
    rgba[:, 16:] = (0, 0, 255, 128)  # right: half-transparent blue
    _save(Image.fromarray(rgba, mode="RGBA"), add("rgba_png", "rgba.png", "ok", size=(16, 32)), "PNG")

    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0] = 0
    la[..., 1] = 0  # fully transparent black -> white
    _save(Image.fromarray(la, mode="LA"), add("la_png", "la.png", "ok", size=(8, 8)), "PNG")

    # Upright picture: 40 wide x 60 tall, red top half, blue bottom half. Stored rotated 90
    # degrees counter-clockwise (60 wide x 40 tall, red on the left) with EXIF orientation 6,
    # which tells viewers to rotate it clockwise back to upright.
    upright = Image.new("RGB", (40, 60), BLUE)
    upright.paste(Image.new("RGB", (40, 30), RED), (0, 0))
    stored = upright.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(stored, add("exif_rotated_jpeg", "rotated.jpg", "ok", size=(60, 40)), "JPEG",
          quality=95, exif=exif.tobytes())

    _save(Image.new("RGB", (1, 1), GREEN), add("one_pixel", "pixel.png", "ok", size=(1, 1)), "PNG")

    frames = [Image.new("RGB", (24, 16), c) for c in (RED, GREEN, BLUE)]
    _save(frames[0], add("animated_gif", "anim.gif", "ok", size=(16, 24)), "GIF",
          save_all=True, append_images=frames[1:], duration=100, loop=0)
    _save(frames[0], add("animated_webp", "anim.webp", "ok", size=(16, 24)), "WEBP",
          save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)

    _save(_halves(20, 10, RED, BLUE), add("bmp", "plain.bmp", "ok", size=(10, 20)), "BMP")
    return cases
