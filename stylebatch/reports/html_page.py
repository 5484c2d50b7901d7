"""``report.html``: one self-contained page per run (counts, timings, per-style table, errors grouped
by message, a paged grid of source/output thumbnails as data: URIs), with no external resources,
so it opens the same from a laptop or from S3.

The page's skeleton, stylesheet and scripts are static files under ``static/``, read at run time:
``page.html`` (a ``string.Template``), ``report.css`` (a %-format template: the thumbnail size),
``errors.js`` (collects script errors, failed loads and blocked resources into
``<body data-errors>``, so a headless browser or a person with dev tools can tell the page ran
cleanly) and ``pager.js`` (shows one page of pairs at a time, the page in the URL's ``#page=N``,
then marks the body ready). A Content-Security-Policy allows exactly these inline texts, by hash.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import string
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from stylebatch.io import images as _images
from stylebatch.io import results as _results
from stylebatch.io import storage as _storage
from stylebatch.reports.run import MAX_READ_BYTES, Run, even_sample

HTML_NAME = "report.html"


@functools.cache
def _static(name: str) -> str:
    """The text of ``static/<name>`` without its final newline."""
    text = (resources.files("stylebatch.reports") / "static" / name).read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


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
        img = Image.fromarray(_images.decode_image(_storage.read_bytes(uri, max_bytes=MAX_READ_BYTES)))
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


def write_page(run: Run, **kw: Any) -> str:
    """Write ``<run_dir>/report.html`` (see :func:`page_text` for ``kw``). Returns its URI."""
    uri = _storage.join(_results.run_dir(run.out_uri, run.run_id), HTML_NAME)
    _storage.write_bytes(uri, page_text(run, **kw).encode("utf-8"), content_type="text/html; charset=utf-8")
    return uri


def page_text(run: Run, *, pairs: int = 200, thumb: int = 160, per_page: int = 24, max_error_groups: int = 50,
              examples: int = 3, workers: int = 8) -> str:
    """The HTML text of ``report.html``: the run's counts, timings, per-style table, errors grouped by
    message (the ``max_error_groups`` most frequent, ``examples`` image ids each) and a grid of
    source/output thumbnails (``thumb`` px, ``per_page`` pairs a page, fetched by ``workers``
    threads) of up to ``pairs`` ok rows, evenly sampled when there are more."""
    if thumb < 16 or per_page < 1 or pairs < 0:
        raise ValueError("thumb must be >= 16, per_page >= 1 and pairs >= 0")
    m, mj, STATUSES = run.metrics, run.metrics_json or {}, _results.STATUSES
    # One rule a line, set off from the <style> tags by newlines: the CSP hash covers exactly this text.
    css = "\n" + _static("report.css") % {"t": thumb, "pair_w": 2 * thumb + 26} + "\n"
    errors_js, pager_js = _static("errors.js"), _static("pager.js")
    csp = ("default-src 'none'; img-src data:; style-src " + _csp_hash(css) + "; script-src "
           + _csp_hash(errors_js) + " " + _csp_hash(pager_js) + "; base-uri 'none'; form-action 'none'")
    out: list[str] = [
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
    chosen = even_sample(ok, pairs)
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
    # the csp is our own text (no quotes or <>); every other value is escaped above
    return string.Template(_static("page.html")).substitute(
        csp=csp, run_id=_e(run.run_id), css=css, errors_js=errors_js, body="\n".join(out), pager_js=pager_js) + "\n"
