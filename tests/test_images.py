from __future__ import annotations

import io
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from stylebatch.io import storage
from stylebatch.io.images import (
    DEFAULT_MAX_PIXELS, OUTPUT_FORMATS, format_for_filename, output_format, IMAGE_EXTENSIONS,
    ImageDecodeError, decode_image, encode_image, image_size_from_header, resize_to_max,
)

from corpus import BLUE, GREEN, RED, WHITE, Case, make_bad_input_corpus, make_bomb_png

PHOTOS = Path("/work/shared/data/photos")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Case]:
    cases = make_bad_input_corpus(tmp_path_factory.mktemp("corpus"))
    return {c.name: c for c in cases}


def _load(case: Case) -> np.ndarray:
    return decode_image(storage.read_bytes(case.path))


def _case_names():
    # Names only (the files are generated per module); keeps test ids readable.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in make_bad_input_corpus(d)]


CASE_NAMES = _case_names()


def test_corpus_covers_the_required_inputs():
    required = {
        "zero_byte", "truncated_jpeg", "random_bytes", "text", "html_error_page", "png_16bit",
        "cmyk_jpeg", "grayscale_png", "palette_transparent_png", "rgba_png", "exif_rotated_jpeg",
        "one_pixel", "animated_gif", "decompression_bomb", "missing",
    }
    assert required <= set(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_corpus_case(corpus, name):
    case = corpus[name]
    if case.expect == "ok":
        img = _load(case)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert img.shape[:2] == case.size
        assert img.flags["C_CONTIGUOUS"]
    else:
        assert case.expect == "error"
        with pytest.raises((ImageDecodeError, storage.StorageError)) as ei:
            _load(case)
        assert case.message in str(ei.value)
        if name == "missing":
            assert isinstance(ei.value, storage.NotFoundError)
        else:
            assert isinstance(ei.value, ImageDecodeError)


def _close(pixel, expected, tol=3):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


def test_16bit_is_scaled_by_range_not_clipped(corpus):
    for name in ("png_16bit", "tiff_16bit_bigendian"):
        img = _load(corpus[name])
        row = img[0, :, 0].astype(int)
        assert row[0] == 0 and row[-1] == 255
        assert np.all(np.diff(row) >= 0)  # still a ramp
        assert 120 <= row[len(row) // 2] <= 135  # mid-grey, not saturated
        assert (row == 255).sum() == 1  # clipping would saturate almost everything
        assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_float_image_in_unit_range(corpus):
    row = _load(corpus["tiff_float"])[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


def test_cmyk_jpeg_colours(corpus):
    img = _load(corpus["cmyk_jpeg"])
    assert _close(img[16, 8], (0, 255, 255), tol=6)  # cyan
    assert _close(img[16, 56], (255, 255, 0), tol=6)  # yellow


def test_grayscale_and_bilevel(corpus):
    img = _load(corpus["grayscale_png"])
    assert np.array_equal(img[0, :, 0], np.arange(0, 256, 4))
    assert np.array_equal(img[..., 0], img[..., 2])
    bi = _load(corpus["bilevel_png"])
    assert bi[0, 0].tolist() == [0, 0, 0] and bi[0, 1].tolist() == [255, 255, 255]


def test_transparency_is_composited_over_white(corpus):
    pal = _load(corpus["palette_transparent_png"])
    assert pal[8, 4].tolist() == list(WHITE)  # transparent palette index
    assert pal[8, 28].tolist() == list(RED)
    rgba = _load(corpus["rgba_png"])
    assert rgba[8, 4].tolist() == list(WHITE)  # alpha 0 over black colour -> white, not black
    assert _close(rgba[8, 28], (127, 127, 255), tol=1)  # 50% blue over white
    assert _load(corpus["la_png"])[0, 0].tolist() == list(WHITE)


def test_exif_orientation_is_applied(corpus):
    img = _load(corpus["exif_rotated_jpeg"])
    assert img.shape[:2] == (60, 40)  # portrait, as the camera meant it
    assert _close(img[10, 20], RED, tol=8)  # top half red
    assert _close(img[50, 20], BLUE, tol=8)  # bottom half blue
    # Without applying orientation the stored image is landscape with red on the left.
    raw = np.asarray(Image.open(corpus["exif_rotated_jpeg"].path).convert("RGB"))
    assert raw.shape[:2] == (40, 60) and _close(raw[20, 10], RED, tol=8)


def test_one_pixel_and_bmp(corpus):
    assert _load(corpus["one_pixel"]).tolist() == [[list(GREEN)]]
    bmp = _load(corpus["bmp"])
    assert bmp[5, 2].tolist() == list(RED) and bmp[5, 17].tolist() == list(BLUE)


def test_animations_give_the_first_frame(corpus):
    for name in ("animated_gif", "animated_webp"):
        img = _load(corpus[name])
        assert np.all(img == np.array(RED, dtype=np.uint8)), name
        frames = Image.open(corpus[name].path).n_frames
        assert frames == 3


def test_decompression_bomb_is_refused_from_the_header(corpus):
    data = storage.read_bytes(corpus["decompression_bomb"].path)
    assert len(data) < 1_000_000  # tiny file ...
    assert image_size_from_header(data) == (30000, 30000)  # ... claiming 900 MP
    t0 = time.monotonic()
    with pytest.raises(ImageDecodeError,
                       match=r"30000x30000 = 900\.0 megapixels, over the 64 megapixel limit"):
        decode_image(data)
    assert time.monotonic() - t0 < 0.5  # no pixels were decoded
    # Pillow's own hard limit is also turned into ImageDecodeError when the limit is lifted.
    with pytest.raises(ImageDecodeError, match="decompression-bomb"):
        decode_image(data, max_pixels=None)


def test_bomb_in_format_without_header_parser_uses_pillow_size():
    # TIFF sizes are read by Pillow (no pixels decoded); a header claiming 30000x30000
    # must still come back as ImageDecodeError, never Pillow's DecompressionBombError.
    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, typ = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            fmt = "<H" if typ == 3 else "<I"
            data[entry + 8 : entry + 8 + struct.calcsize(fmt)] = struct.pack(fmt, 30000)
    with pytest.raises(ImageDecodeError, match=r"900\.0 megapixels, over the 64 megapixel limit"):
        decode_image(bytes(data))


def test_custom_max_pixels_limit():
    data = encode_image(np.zeros((100, 100, 3), np.uint8), "png")
    with pytest.raises(ImageDecodeError, match=r"100x100 = 0\.0 megapixels, over the 0\.005 megapixel limit"):
        decode_image(data, max_pixels=5000)
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)
    assert DEFAULT_MAX_PIXELS == 64_000_000


def test_small_bomb_with_pillow_format_check():
    # 9000x9000 (81 MP) PNG: over our 64 MP default, under Pillow's own warning threshold.
    with pytest.raises(ImageDecodeError, match=r"9000x9000 = 81\.0 megapixels"):
        decode_image(make_bomb_png(9000, 9000))


def test_truncated_images_stay_errors_even_if_global_flag_flipped(corpus, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageDecodeError, match="truncated or corrupt JPEG"):
        _load(corpus["truncated_jpeg"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    "data,message",
    [
        (b"\xef\xbb\xbfplain text with a BOM\n", "not an image: looks like text"),
        (b'{"error": "AccessDenied", "message": "token expired"}', "looks like text (JSON"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code></Error>',
         "XML error response"),
        (b"  \n<html><body>Service Unavailable</body></html>", "looks like HTML"),
        ("Ünïcödé caption text, ça va?\n".encode(), "looks like text"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated or corrupt JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated or corrupt PNG"),
        (b"GIF89a", "truncated or corrupt GIF"),
    ],
)
def test_clear_messages_for_non_images(data, message):
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(data)
    assert message in str(ei.value)


def test_decode_rejects_non_bytes_and_accepts_bytearray():
    png = encode_image(np.full((2, 3, 3), 7, np.uint8), "png")
    assert decode_image(bytearray(png)).shape == (2, 3, 3)
    assert decode_image(memoryview(png)).shape == (2, 3, 3)
    with pytest.raises(TypeError):
        decode_image("not bytes")  # type: ignore[arg-type]


def test_image_decode_error_pickles():
    err = pickle.loads(pickle.dumps(ImageDecodeError("empty file (0 bytes)")))
    assert isinstance(err, ImageDecodeError) and str(err) == "empty file (0 bytes)"
    assert isinstance(err, ValueError)


# ------------------------------------------------------------------------------------------
# resize / encode
# ------------------------------------------------------------------------------------------


def test_resize_to_max_keeps_aspect_and_never_upscales():
    img = np.zeros((50, 200, 3), np.uint8)
    assert resize_to_max(img, 100).shape == (25, 100, 3)
    assert resize_to_max(np.zeros((300, 120, 3), np.uint8), 100).shape == (100, 40, 3)
    assert resize_to_max(img, 500) is img  # no upscaling
    assert resize_to_max(img, 200) is img
    assert resize_to_max(img, None) is img
    assert resize_to_max(np.zeros((3, 1000, 3), np.uint8), 10).shape == (1, 10, 3)  # never 0
    with pytest.raises(ValueError):
        resize_to_max(img, 0)


def test_resize_is_high_quality():
    # A fine 1-pixel checkerboard must average to grey, not alias into black/white stripes
    # the way nearest-neighbour would.
    yy, xx = np.mgrid[0:400, 0:400]
    board = (((yy + xx) % 2) * 255).astype(np.uint8)
    img = np.repeat(board[..., None], 3, axis=2)
    small = resize_to_max(img, 97)
    assert small.shape == (97, 97, 3)
    assert abs(float(small.mean()) - 127.5) < 3
    assert small.std() < 10
    flat = resize_to_max(np.full((64, 64, 3), (10, 120, 230), np.uint8), 16)
    assert np.all(flat == np.array((10, 120, 230), np.uint8))


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "png", "webp", "PNG"])
def test_encode_round_trip(fmt):
    # Smooth content: lossy codecs (4:2:0 chroma) keep it close; PNG must keep it exactly.
    yy, xx = np.mgrid[0:32, 0:48]
    img = np.stack([xx * 5, yy * 7, (xx + yy) * 3], axis=2).astype(np.uint8)
    data = encode_image(img, fmt, quality=95)
    magic = {"jpeg": b"\xff\xd8\xff", "jpg": b"\xff\xd8\xff", "png": b"\x89PNG", "webp": b"RIFF"}[fmt.lower()]
    assert data.startswith(magic)
    back = decode_image(data)
    assert back.shape == img.shape
    if fmt.lower() == "png":
        assert np.array_equal(back, img)
    else:
        assert np.abs(back.astype(int) - img.astype(int)).mean() < 3


def test_encode_quality_and_bad_format():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(encode_image(noise, "jpeg", quality=20)) < len(encode_image(noise, "jpeg", quality=95))
    with pytest.raises(ValueError, match=r"unsupported output format 'gif'; supported: jpeg, png, webp"):
        encode_image(noise, "gif")
    with pytest.raises(ValueError, match="quality"):
        encode_image(noise, "jpeg", quality=0)
    with pytest.raises(ValueError, match="uint8"):
        encode_image(noise.astype(np.float32), "png")
    assert {n: f.extension for n, f in OUTPUT_FORMATS.items()} == {"jpeg": "jpg", "png": "png", "webp": "webp"}
    assert output_format("JPG") is OUTPUT_FORMATS["jpeg"] and format_for_filename("s3://b/x.webp").name == "webp"
    with pytest.raises(ValueError, match="unsupported output format 'gif'; supported: jpeg, png, webp"):
        output_format("gif")
    with pytest.raises(ValueError, match=r"must end in one of \.jpg, \.jpeg"):
        format_for_filename("/tmp/out.tiff")
    assert set(IMAGE_EXTENSIONS) == {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}


# ------------------------------------------------------------------------------------------
# Real photos
# ------------------------------------------------------------------------------------------


def test_real_photos_decode_resize_encode():
    if not PHOTOS.is_dir():
        pytest.skip(f"{PHOTOS} not present (shared sample photos are optional)")
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)[:3]
    if not photos:
        pytest.skip(f"no images in {PHOTOS}")
    for p in photos:
        data = storage.read_bytes(str(p))
        img = decode_image(data)
        with Image.open(p) as ref:
            w, h = ref.size
            orientation = ref.getexif().get(0x0112, 1)
        expected = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
        assert img.shape == (*expected, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank canvas
        small = resize_to_max(img, 256)
        assert max(small.shape[:2]) == min(256, max(img.shape[:2]))
        again = decode_image(encode_image(small, "jpeg", 90))
        assert again.shape == small.shape
        assert np.abs(again.astype(int) - small.astype(int)).mean() < 10
