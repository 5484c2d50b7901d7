"""Contact sheets: one image holding a grid of labelled thumbnails, optionally with a header row and
column (``tools/evaluate.py``: styles across, photos down), and ``contact_sheet.jpg``, a sample of
a run's ok outputs."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stylebatch.io import images as _images
from stylebatch.io import results as _results
from stylebatch.io import storage as _storage
from stylebatch.reports.run import MAX_READ_BYTES, Run, even_sample

log = logging.getLogger(__name__)

CONTACT_PAD = 6
CONTACT_LABEL_H = 18
CONTACT_BG = (24, 24, 24)
CONTACT_HEADER_BG = (48, 48, 48)
CONTACT_SHEET_NAME = "contact_sheet.jpg"


def _as_rgb(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"contact sheet images must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"contact sheet images must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])


def _fit_label(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    text = " ".join(str(text).split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


Tile = tuple[str, "np.ndarray | None"]


def contact_sheet(images: Sequence[Tile], *, thumb: int = 256, columns: int = 4,
                  column_headers: Sequence[Tile] | None = None, row_headers: Sequence[Tile] | None = None,
                  title: Sequence[str] = ()) -> np.ndarray:
    """Grid of thumbnails (each fitted into ``thumb``x``thumb``, centred) with a label strip under
    each, filled row by row; an image of None leaves its tile empty (label only).

    Size: ``cols*thumb + (cols+1)*PAD`` wide and ``rows*(thumb+LABEL_H) + (rows+1)*PAD`` high,
    cols = min(columns, n). ``column_headers`` (one per column, then cols = columns) adds a row on
    top and ``row_headers`` (one per row) a column on the left, both on a lighter background:
    e.g. styles across and photos down. ``title`` lines go in the corner cell both make."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if thumb < 8 or columns < 1:
        raise ValueError("thumb must be >= 8 and columns >= 1")
    n = len(images)
    cols = columns if column_headers is not None else min(columns, n)
    rows = math.ceil(n / cols)
    if column_headers is not None and len(column_headers) != cols:
        raise ValueError(f"column_headers needs one tile per column ({cols}), got {len(column_headers)}")
    if row_headers is not None and len(row_headers) != rows:
        raise ValueError(f"row_headers needs one tile per row ({rows}), got {len(row_headers)}")
    if title and (row_headers is None or column_headers is None):
        raise ValueError("title goes in the corner cell: it needs both column_headers and row_headers")
    lead_c, lead_r = int(row_headers is not None), int(column_headers is not None)
    w = (cols + lead_c) * thumb + (cols + lead_c + 1) * CONTACT_PAD
    h = (rows + lead_r) * (thumb + CONTACT_LABEL_H) + (rows + lead_r + 1) * CONTACT_PAD
    sheet = Image.new("RGB", (w, h), CONTACT_BG)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    def origin(r: int, c: int) -> tuple[int, int]:
        return CONTACT_PAD + c * (thumb + CONTACT_PAD), CONTACT_PAD + r * (thumb + CONTACT_LABEL_H + CONTACT_PAD)

    def put(r: int, c: int, label: str, img: np.ndarray | None, header: bool = False) -> None:
        x0, y0 = origin(r, c)
        if header:
            draw.rectangle((x0, y0, x0 + thumb - 1, y0 + thumb + CONTACT_LABEL_H - 1), fill=CONTACT_HEADER_BG)
        if img is not None:
            arr = _as_rgb(img)
            ih, iw = arr.shape[:2]
            scale = thumb / max(ih, iw)
            tw, th = max(1, round(iw * scale)), max(1, round(ih * scale))
            tile = Image.fromarray(arr)
            if (tw, th) != (iw, ih):
                tile = tile.resize((tw, th), Image.BICUBIC if scale > 1 else Image.LANCZOS)
            sheet.paste(tile, (x0 + (thumb - tw) // 2, y0 + (thumb - th) // 2))
        if label:
            draw.text((x0 + 2, y0 + thumb + 3), _fit_label(draw, label, font, thumb - 4), fill=(235, 235, 235), font=font)

    if title:
        x0, y0 = origin(0, 0)
        draw.rectangle((x0, y0, x0 + thumb - 1, y0 + thumb + CONTACT_LABEL_H - 1), fill=CONTACT_HEADER_BG)
        for k, line in enumerate(title):
            draw.text((x0 + 4, y0 + 4 + 14 * k), _fit_label(draw, line, font, thumb - 8),
                      fill=(255, 255, 255) if k == 0 else (180, 180, 180), font=font)
    for c, (label, img) in enumerate(column_headers or ()):
        put(0, c + lead_c, label, img, header=True)
    for r, (label, img) in enumerate(row_headers or ()):
        put(r + lead_r, 0, label, img, header=True)
    for i, (label, img) in enumerate(images):
        r, c = divmod(i, cols)
        put(r + lead_r, c + lead_c, label, img)
    return np.asarray(sheet).copy()


def write_run_sheet(run: Run, *, sample: int, thumb: int, columns: int) -> str | None:
    """``<run_dir>/contact_sheet.jpg`` from up to ``sample`` ok outputs of ``run`` (evenly spread over
    the run, by image id). Returns its URI, or None when no ok output could be read."""
    tiles = []
    for r in even_sample(run.ok_outputs(), sample):
        try:
            img = _images.decode_image(_storage.read_bytes(r["output_uri"], max_bytes=MAX_READ_BYTES))
            tiles.append((f"{r['image_id']} | {r['style']}", img))
        except Exception as exc:  # one vanished output should not sink the report
            log.warning("contact sheet: skipping %s: %s", _storage.redact(r["output_uri"]), exc)
    if not tiles:
        return None
    sheet = contact_sheet(tiles, thumb=thumb, columns=columns)
    uri = _storage.join(_results.run_dir(run.out_uri, run.run_id), CONTACT_SHEET_NAME)
    _storage.write_bytes(uri, _images.encode_image(sheet, fmt="jpeg", quality=88), content_type="image/jpeg")
    return uri
