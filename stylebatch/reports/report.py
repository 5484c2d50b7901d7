"""Human-readable reports of one run, built from what ``results.py`` keeps (result rows and
``metrics.json``) and written next to them, every byte through ``storage``::

    <out>/_runs/<run_id>/contact_sheet.jpg   a sample of the outputs on one image
    <out>/_runs/<run_id>/report.html         counts, timings, styles, errors, source/output pairs

``summarize`` is the plain-text summary ``stylebatch report`` prints; ``contact_sheet`` is the one
thumbnail grid (also used by ``jobs/evaluate.py``, with header row and column); ``html_report``
renders a single self-contained page (thumbnails as data: URIs, an inline pager, no external
resources) that opens the same from a laptop or from S3.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageFont

from stylebatch.io import images as _images
from stylebatch.io import results as _results
from stylebatch.io import storage as _storage

log = logging.getLogger(__name__)

CONTACT_PAD = 6
CONTACT_LABEL_H = 18
CONTACT_BG = (24, 24, 24)
CONTACT_HEADER_BG = (48, 48, 48)
HTML_NAME = "report.html"
CONTACT_SHEET_NAME = "contact_sheet.jpg"
_MAX_READ_BYTES = 256 * 1024 * 1024  # an output or source bigger than this is not thumbnailed
_COLUMNS = ["image_id", "uri", "style", "quality", "status", "error", "output_uri", "read_ms", "model_ms",
            "write_ms", "input_bytes", "output_bytes", "finished_at"]


class RunReport(NamedTuple):
    summary: str               # the plain-text summary
    contact_sheet: str | None  # URI of contact_sheet.jpg; None when no ok output could be read
    html: str | None           # URI of report.html; None when not asked for


class _Run:
    """One run's rows (sorted by finish time), its RunMetrics and metrics.json (None if absent)."""

    def __init__(self, out_uri: str, run_id: str):
        self.out_uri, self.run_id = out_uri, run_id
        self.table = _results.read_results(out_uri, run_id, columns=_COLUMNS).sort_by([("finished_at", "ascending")])
        self.metrics = _results.RunMetrics(run_id).add(self.table)
        self.metrics_json: dict[str, Any] | None = None
        if _storage.exists(_results.metrics_uri(out_uri, run_id)):
            try:
                self.metrics_json = _results.read_metrics(out_uri, run_id)
            except Exception as exc:
                log.warning("cannot read metrics for run %s: %s", run_id, exc)

    def ok_outputs(self) -> list[dict[str, Any]]:
        """The run's ok rows, one per output (a retried output counts once: its latest row), in
        image-id order."""
        t = self.table
        t = t.filter(pc.equal(t.column("status"), "ok")).sort_by([("image_id", "ascending"), ("finished_at", "ascending")])
        latest: dict[str, dict[str, Any]] = {}
        for r in t.select(["image_id", "uri", "style", "output_uri"]).to_pylist():
            latest[r["output_uri"]] = r  # the latest row of a retried output, at its first place
        return list(latest.values())


def _even_sample(items: list, n: int) -> list:
    """At most ``n`` items spread evenly over ``items`` (first and last included), order kept."""
    if n <= 0:
        return []
    if len(items) <= n:
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in picks]


# --------------------------------------------------------------------------
# text summary
# --------------------------------------------------------------------------


def _fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def summarize(out_uri: str, run_id: str, *, max_errors: int = 5) -> str:
    """Plain-text summary of one run: counts, per-style table, throughput, latency, first errors."""
    return _summary_text(_Run(out_uri, run_id), max_errors=max_errors)


def _summary_text(run: _Run, *, max_errors: int = 5) -> str:
    m, metrics, STATUSES = run.metrics, run.metrics_json, _results.STATUSES
    lines = [f"run {run.run_id}  ({_storage.redact(run.out_uri)})"]
    lines.append(f"rows: {m.total}  " + "  ".join(f"{s}: {m.counts[s]}" for s in STATUSES))
    if metrics and metrics.get("wall_s"):
        ips = metrics.get("images_per_s")
        lines.append(f"wall: {metrics['wall_s']:.1f} s  throughput: " + ("n/a" if ips is None else f"{ips:.2f} images/s"))
    else:
        lines.append("wall: n/a  throughput: n/a (no metrics.json)")
    lat = m.latency_summary()
    lines.append(f"latency per ok row (read+model+write): p50 {_fmt_ms(lat['p50'])}  p95 {_fmt_ms(lat['p95'])}  max {_fmt_ms(lat['max'])}")
    lines.append(f"bytes: in {m.bytes_in}  out {m.bytes_out}")
    lines.append("")

    styles_ = sorted(m.per_style)
    width = max([len("style")] + [len(s) for s in styles_])
    header = f"{'style':<{width}}  " + "  ".join(f"{s:>7}" for s in STATUSES) + f"  {'total':>7}"
    lines += [header, "-" * len(header)]
    for s in styles_:
        c = m.per_style[s]
        lines.append(f"{s:<{width}}  " + "  ".join(f"{c.get(k, 0):>7}" for k in STATUSES) + f"  {sum(c.values()):>7}")
    if m.counts["error"]:
        shown = m.errors[:max_errors]
        lines += ["", f"errors (first {len(shown)} of {m.counts['error']}):"]
        for e in shown:
            msg = " ".join(str(e["error"]).split())
            lines.append(f"  {e['image_id']}: {msg[:200]}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# contact sheets
# --------------------------------------------------------------------------


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


def write_contact_sheet(out_uri: str, run_id: str, *, sample: int = 12, thumb: int = 256, columns: int = 4) -> str | None:
    """``<run_dir>/contact_sheet.jpg`` from up to ``sample`` ok outputs (evenly spread over the run,
    by image id). Returns its URI, or None when no ok output could be read."""
    return _write_contact_sheet(_Run(out_uri, run_id), sample=sample, thumb=thumb, columns=columns)


def _write_contact_sheet(run: _Run, *, sample: int, thumb: int, columns: int) -> str | None:
    tiles = []
    for r in _even_sample(run.ok_outputs(), sample):
        try:
            img = _images.decode_image(_storage.read_bytes(r["output_uri"], max_bytes=_MAX_READ_BYTES))
            tiles.append((f"{r['image_id']} | {r['style']}", img))
        except Exception as exc:  # one vanished output should not sink the report
            log.warning("contact sheet: skipping %s: %s", _storage.redact(r["output_uri"]), exc)
    if not tiles:
        return None
    sheet = contact_sheet(tiles, thumb=thumb, columns=columns)
    uri = _storage.join(_results.run_dir(run.out_uri, run.run_id), CONTACT_SHEET_NAME)
    _storage.write_bytes(uri, _images.encode_image(sheet, fmt="jpeg", quality=88), content_type="image/jpeg")
    return uri


# --------------------------------------------------------------------------
# HTML report
# --------------------------------------------------------------------------

# Collects script errors, failed loads and blocked resources into <body data-errors>, so a
# headless browser (or a person with dev tools) can tell the page ran cleanly.
_ERRORS_JS = """(function () {
  var errs = [];
  function flush() {
    if (errs.length && document.body) document.body.setAttribute('data-errors', errs.join(' | '));
  }
  function note(msg) { errs.push(String(msg)); flush(); }
  window.addEventListener('error', function (e) {
    var t = e.target;
    note(e.message || ('failed to load ' + ((t && (t.currentSrc || t.src || t.href)) || 'a resource').slice(0, 80)));
  }, true);
  document.addEventListener('securitypolicyviolation', function (e) {
    note('blocked by the page policy: ' + e.violatedDirective);
  });
  document.addEventListener('DOMContentLoaded', flush);  // errors noted before <body> existed
})();"""

# Shows one page of pairs at a time (page in the URL's #page=N), then marks the body ready.
_PAGER_JS = """(function () {
  var grid = document.getElementById('grid');
  if (!grid) { document.body.setAttribute('data-ready', '1'); return; }
  var per = parseInt(grid.getAttribute('data-per-page'), 10) || 24;
  var pairs = Array.prototype.slice.call(grid.querySelectorAll('.pair'));
  var pages = Math.max(1, Math.ceil(pairs.length / per));
  var prev = document.getElementById('prev'), next = document.getElementById('next');
  var label = document.getElementById('page-label'), page = 1;
  function wanted() {
    var m = /^#page=(\\d+)$/.exec(window.location.hash);
    return m ? parseInt(m[1], 10) : 1;
  }
  function show(p) {
    page = Math.min(pages, Math.max(1, p));
    pairs.forEach(function (el, i) { el.hidden = Math.floor(i / per) + 1 !== page; });
    label.textContent = 'page ' + page + ' of ' + pages;
    prev.disabled = page <= 1;
    next.disabled = page >= pages;
    document.body.setAttribute('data-page', String(page));
  }
  function go(p) { window.location.hash = 'page=' + Math.min(pages, Math.max(1, p)); }
  prev.addEventListener('click', function () { go(page - 1); });
  next.addEventListener('click', function () { go(page + 1); });
  window.addEventListener('hashchange', function () { show(wanted()); });
  document.getElementById('pager').hidden = false;
  show(wanted());
  window.addEventListener('load', function () {
    var broken = Array.prototype.filter.call(document.images, function (im) { return !im.complete || !im.naturalWidth; });
    document.body.setAttribute('data-broken-images', String(broken.length));
    document.body.setAttribute('data-ready', '1');
  });
})();"""

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d1d1f; background: #f6f6f7; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #ececee; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #dcdce0; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #efeff2; }
.n { text-align: right; font-variant-numeric: tabular-nums; }
.msg { max-width: 720px; white-space: pre-wrap; word-break: break-word; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid #dcdce0; border-radius: 6px; padding: 8px 16px; min-width: 110px; }
.card b { display: block; font-size: 24px; font-variant-numeric: tabular-nums; }
.card.ok b { color: #1a7f37; } .card.error b { color: #c62828; } .card.skipped b { color: #8a6d00; }
.note { color: #555; }
.pager { display: flex; gap: 10px; align-items: center; margin: 8px 0 12px; }
.pager button { font: inherit; padding: 3px 14px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(%(pair_w)dpx, 1fr)); gap: 12px; }
.pair { margin: 0; background: #fff; border: 1px solid #dcdce0; border-radius: 6px; padding: 8px; }
.imgs { display: flex; gap: 8px; }
.cell { width: %(t)dpx; }
.frame { width: %(t)dpx; height: %(t)dpx; display: flex; align-items: center; justify-content: center; background: #e9e9ec; }
.frame img { width: 100%%; height: 100%%; object-fit: contain; display: block; }
.missing { color: #777; font-size: 12px; text-align: center; padding: 8px; }
.side { font-size: 11px; color: #777; text-transform: uppercase; letter-spacing: .04em; }
figcaption { font-size: 12px; margin-top: 6px; word-break: break-all; }
[hidden] { display: none !important; }
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _thumbnail(uri: str | None, size: int) -> tuple[str | None, str | None]:
    """(data: URI of a JPEG thumbnail, None) or (None, why not). Never raises."""
    if not uri:
        return None, "no URI"
    try:
        img = Image.fromarray(_images.decode_image(_storage.read_bytes(uri, max_bytes=_MAX_READ_BYTES)))
        img.thumbnail((size, size), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), None
    except Exception as exc:  # a gone or unreadable image becomes a placeholder, not a broken page
        return None, _storage.redact(" ".join(str(exc).split()))[:300] or type(exc).__name__


def _error_groups(table: pa.Table, examples: int) -> list[tuple[str, int, list[str]]]:
    """(message, count, first ``examples`` image ids) per distinct error message, most frequent first."""
    err = table.filter(pc.equal(table.column("status"), "error"))
    groups: dict[str, list] = {}
    for image_id, msg in zip(err.column("image_id").to_pylist(), err.column("error").to_pylist()):
        key = " ".join(_storage.redact("" if msg is None else str(msg)).split()) or "(no message)"
        g = groups.setdefault(key, [0, []])
        g[0] += 1
        if len(g[1]) < examples:
            g[1].append(image_id)
    return sorted(((k, c, ids) for k, (c, ids) in groups.items()), key=lambda g: (-g[1], g[0]))


def _fmt_num(v: Any, fmt: str, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{fmt}}{unit}"


def html_report(out_uri: str, run_id: str, *, pairs: int = 200, thumb: int = 160, per_page: int = 24,
                max_error_groups: int = 50, examples: int = 3, workers: int = 8) -> str:
    """The HTML text of ``report.html`` (see :func:`write_html_report`)."""
    return _html(_Run(out_uri, run_id), pairs=pairs, thumb=thumb, per_page=per_page,
                 max_error_groups=max_error_groups, examples=examples, workers=workers)


def write_html_report(out_uri: str, run_id: str, **kw: Any) -> str:
    """Write ``<run_dir>/report.html``: one self-contained page with the run's counts, timings,
    per-style table, errors grouped by message and a paged grid of source/output thumbnails of
    up to ``pairs`` ok rows (evenly sampled when there are more). Returns its URI."""
    return _write_html(_Run(out_uri, run_id), **kw)


def _write_html(run: _Run, **kw: Any) -> str:
    uri = _storage.join(_results.run_dir(run.out_uri, run.run_id), HTML_NAME)
    _storage.write_bytes(uri, _html(run, **kw).encode("utf-8"), content_type="text/html; charset=utf-8")
    return uri


def _html(run: _Run, *, pairs: int = 200, thumb: int = 160, per_page: int = 24, max_error_groups: int = 50,
          examples: int = 3, workers: int = 8) -> str:
    if thumb < 16 or per_page < 1 or pairs < 0:
        raise ValueError("thumb must be >= 16, per_page >= 1 and pairs >= 0")
    m, mj, STATUSES = run.metrics, run.metrics_json or {}, _results.STATUSES
    css = _CSS % {"t": thumb, "pair_w": 2 * thumb + 26}
    csp = ("default-src 'none'; img-src data:; style-src " + _csp_hash(css) + "; script-src "
           + _csp_hash(_ERRORS_JS) + " " + _csp_hash(_PAGER_JS) + "; base-uri 'none'; form-action 'none'")
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',  # our own text: no quotes or <>
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>stylebatch run {_e(run.run_id)}</title>",
        f"<style>{css}</style>",
        f"<script>{_ERRORS_JS}</script>",
        "</head>",
        '<body data-ready="0">',
        f"<h1>stylebatch run <code>{_e(run.run_id)}</code></h1>",
        f'<p class="meta">output <code>{_e(_storage.redact(run.out_uri))}</code>'
        + (f" &middot; started {_e(mj['started_at'])}" if mj.get("started_at") else "")
        + (f" &middot; finished {_e(mj['finished_at'])}" if mj.get("finished_at") else "") + "</p>",
    ]

    # counts and timings
    out.append('<h2>Rows</h2><div class="cards" id="counts">')
    out.append(f'<div class="card total"><b>{_n(m.total)}</b>rows</div>')
    for s in STATUSES:
        out.append(f'<div class="card {s}" data-status="{s}"><b>{_n(m.counts[s])}</b>{s}</div>')
    out.append("</div>")
    lat = m.latency_summary()
    wall, ips = mj.get("wall_s"), mj.get("images_per_s")
    timing_rows = [
        ("wall time", _fmt_num(wall, ".1f", " s") if wall else "n/a" + ("" if run.metrics_json else " (no metrics.json)")),
        ("throughput", _fmt_num(ips, ".2f", " images/s") if wall else "n/a"),
        ("latency p50 (read+model+write, per ok row)", _fmt_num(lat["p50"], ".1f", " ms")),
        ("latency p95", _fmt_num(lat["p95"], ".1f", " ms")),
        ("latency max", _fmt_num(lat["max"], ".1f", " ms")),
        ("bytes in / out", f"{_n(m.bytes_in)} / {_n(m.bytes_out)}"),
    ]
    out.append('<h2>Timings</h2><table id="timings">')
    out += [f'<tr><th>{_e(k)}</th><td class="n">{_e(v)}</td></tr>' for k, v in timing_rows]
    out.append("</table>")

    # per style
    out.append('<h2>Styles</h2><table id="styles"><tr><th>style</th>'
               + "".join(f'<th class="n">{s}</th>' for s in STATUSES) + '<th class="n">total</th></tr>')
    for style in sorted(m.per_style):
        c = m.per_style[style]
        out.append(f"<tr><td>{_e(style)}</td>" + "".join(f'<td class="n">{_n(c.get(s, 0))}</td>' for s in STATUSES)
                   + f'<td class="n">{_n(sum(c.values()))}</td></tr>')
    out.append("</table>")

    # errors
    groups = _error_groups(run.table, examples)
    out.append('<h2>Errors</h2>')
    if not groups:
        out.append('<p class="note" id="no-errors">No errors.</p>')
    else:
        out.append(f'<p class="note">{_n(m.counts["error"])} error rows, {_n(len(groups))} distinct messages.</p>')
        out.append('<table id="errors"><tr><th class="n">rows</th><th>message</th><th>examples (image id)</th></tr>')
        for msg, count, ids in groups[:max_error_groups]:
            shown = msg if len(msg) <= 2000 else msg[:2000] + "..."
            out.append(f'<tr class="error-group"><td class="n count">{_n(count)}</td><td class="msg">{_e(shown)}</td>'
                       f'<td>{"<br>".join(f"<code>{_e(i)}</code>" for i in ids)}</td></tr>')
        out.append("</table>")
        if len(groups) > max_error_groups:
            rest = groups[max_error_groups:]
            out.append(f'<p class="note">and {_n(len(rest))} more messages ({_n(sum(g[1] for g in rest))} rows).</p>')

    # source/output pairs
    ok = run.ok_outputs()
    chosen = _even_sample(ok, pairs)
    out.append('<h2>Sources and outputs</h2>')
    if len(chosen) < len(ok):
        out.append(f'<p class="note" id="sampled">Showing {_n(len(chosen))} of {_n(len(ok))} ok outputs, evenly '
                   f"sampled by image id (stylebatch report --pairs N to change).</p>")
    elif ok:
        out.append(f'<p class="note">All {_n(len(ok))} ok outputs.</p>')
    else:
        out.append('<p class="note">No ok outputs.</p>')
    if chosen:
        uris = [u for r in chosen for u in (r["uri"], r["output_uri"])]
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(uris)))) as pool:
            thumbs = list(pool.map(lambda u: _thumbnail(u, thumb), uris))
        out.append('<nav class="pager" id="pager" hidden><button id="prev" type="button">Prev</button>'
                   '<span id="page-label"></span><button id="next" type="button">Next</button></nav>')
        out.append(f'<div class="grid" id="grid" data-per-page="{per_page}">')
        for i, r in enumerate(chosen):
            cells = []
            for side, u, (data, why) in (("source", r["uri"], thumbs[2 * i]), ("output", r["output_uri"], thumbs[2 * i + 1])):
                where = _e(_storage.redact(u or ""))
                if data:
                    body = f'<img src="{data}" alt="{side} of {_e(r["image_id"])}" title="{where}">'
                else:
                    body = f'<div class="missing" title="{_e(why)}">{side} unavailable</div>'
                cells.append(f'<div class="cell"><div class="side">{side}</div><div class="frame">{body}</div></div>')
            out.append(f'<figure class="pair" data-index="{i}"><div class="imgs">{"".join(cells)}</div>'
                       f"<figcaption><code>{_e(r['image_id'])}</code> &middot; {_e(r['style'])}</figcaption></figure>")
        out.append("</div>")
    out.append(f"<script>{_PAGER_JS}</script>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# everything `stylebatch report` writes
# --------------------------------------------------------------------------


def report(out_uri: str, run_id: str, *, sample: int = 12, thumb: int = 256, columns: int = 4,
           with_html: bool = True, pairs: int = 200) -> RunReport:
    """The summary text, ``<run_dir>/contact_sheet.jpg`` from up to ``sample`` ok outputs and (with
    ``with_html``) ``<run_dir>/report.html`` with up to ``pairs`` source/output pairs; results are read once."""
    run = _Run(out_uri, run_id)
    summary = _summary_text(run)
    sheet = _write_contact_sheet(run, sample=sample, thumb=thumb, columns=columns)
    page = _write_html(run, pairs=pairs) if with_html else None
    return RunReport(summary, sheet, page)
