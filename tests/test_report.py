"""stylebatch.reports: the HTML run report (contents, escaping, sampling, S3, a real headless
browser), the contact sheet's header row/column and `stylebatch report`."""
from __future__ import annotations

import base64
import datetime as dt
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stylebatch.reports import contact_sheet as CS
from stylebatch.reports import html_page
from stylebatch.reports import report as REP
from stylebatch.reports.run import Run
from stylebatch.io import results as R
from stylebatch.io import storage
from tests.helpers import photo, write_photo

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 21, 22, 0, 0, tzinfo=UTC)
RID = "20261121T220000Z-aaaa"
HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_MSG = 'bad header <img src=x onerror="alert(2)"> & more'
ERRORS = ["boom: decode failed"] * 3 + ["timeout reading source"] * 2 + [HOSTILE_MSG]
ERROR_IDS = [f"e{i}" for i in range(5)] + [HOSTILE_ID]


def _row(image_id, status, *, uri, out, style="cyberpunk", error=None, t=0, ms=(5.0, 40.0, 3.0)):
    return {"image_id": image_id, "uri": uri, "style": style, "quality": "fast", "output_uri": out,
            "status": status, "error": error, "read_ms": ms[0], "model_ms": ms[1], "write_ms": ms[2],
            "input_bytes": 1000, "output_bytes": 400 if status == "ok" else None, "attempt": 1,
            "finished_at": T0 + dt.timedelta(seconds=t)}


def make_run(root: Path, n_ok: int = 30, *, gone: tuple[int, ...] = (1,), wall_s: float = 12.5) -> tuple[str, list[dict]]:
    """A finished run on local disk: ``n_ok`` ok rows with real source and output images (the
    sources numbered in ``gone`` deleted afterwards), six errors (three messages, one hostile id and
    message), one skipped row and metrics.json. Returns (output root, rows)."""
    out = root / "out"
    rows = []
    for i in range(n_ok):
        src = write_photo(root / "src" / f"p{i:03d}.jpg", 48, 64, seed=i)
        dst = out / "cyberpunk" / f"p{i:03d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - photo(48, 64, i)).save(dst)
        rows.append(_row(f"p{i:03d}", "ok", uri=str(src), out=str(dst), style="ink" if i % 3 == 0 else "cyberpunk",
                         t=i, ms=(5.0 + i, 40.0, 3.0)))
    for i, (image_id, msg) in enumerate(zip(ERROR_IDS, ERRORS)):
        rows.append(_row(image_id, "error", uri=f"/nope/{i}.jpg", out=str(out / "ink" / f"e{i}.png"), style="ink",
                         error=msg, t=100 + i, ms=(5.0, None, None)))
    rows.append(_row("s0", "skipped", uri="/nope/s0.jpg", out=str(out / "ink" / "s0.png"), style="ink", t=200))
    R.write_results_part(str(out), RID, rows[: n_ok // 2])
    R.write_results_part(str(out), RID, rows[n_ok // 2:])
    R.write_metrics(str(out), RID, R.RunMetrics(RID).add(rows).finish(wall_s, {}, {}))
    for i in gone:
        (root / "src" / f"p{i:03d}.jpg").unlink()
    return str(out), rows


class _Page(HTMLParser):
    """What the tests look at in a report: body attributes, pairs (hidden or not), error groups,
    texts by element id, script/link/src attributes."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.body: dict[str, str | None] = {}
        self.pairs: list[dict[str, str | None]] = []
        self.error_groups: list[list[str]] = []
        self.texts: dict[str, str] = {}
        self.scripts = 0
        self.srcs: list[str] = []
        self.captions: list[str] = []
        self._stack: list[tuple[str, dict]] = []
        self._text_for: list[str] = []
        self._cells: list[str] | None = None
        self._caption: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            if a.get(k) is not None:
                self.srcs.append(a[k])
        cls = (a.get("class") or "").split()
        if tag == "figure" and "pair" in cls:
            self.pairs.append(a)
        if tag == "figcaption":
            self._caption = ""
        if tag == "tr" and "error-group" in cls:
            self._cells = []
        if tag == "td" and self._cells is not None:
            self._cells.append("")
        if a.get("id"):
            self.texts[a["id"]] = ""
            self._text_for.append(a["id"])
        else:
            self._text_for.append("")
        if tag in ("img", "br", "meta", "input"):  # void elements
            self._text_for.pop()

    def handle_endtag(self, tag):
        if tag == "tr" and self._cells is not None:
            self.error_groups.append([c.strip() for c in self._cells])
            self._cells = None
        if tag == "figcaption" and self._caption is not None:
            self.captions.append(" ".join(self._caption.split()))
            self._caption = None
        if self._text_for and tag not in ("img", "br", "meta", "input"):
            self._text_for.pop()

    def handle_data(self, data):
        for i in self._text_for:
            if i:
                self.texts[i] += data
        if self._cells:
            self._cells[-1] += data + (" " if data.strip() else "")
        if self._caption is not None:
            self._caption += data

    @property
    def visible_pairs(self) -> list[dict]:
        return [p for p in self.pairs if "hidden" not in p]


def _html(out: str) -> str:
    return Path(R.run_dir(out, RID), html_page.HTML_NAME).read_text(encoding="utf-8")


def _page_text(out: str, **kw) -> str:
    return html_page.page_text(Run(out, RID), **kw)


def _write_page(out: str, **kw) -> str:
    return html_page.write_page(Run(out, RID), **kw)


# --------------------------------------------------------------------------------------------
# contents
# --------------------------------------------------------------------------------------------


def test_html_report_counts_timings_errors_and_pairs(tmp_path):
    out, rows = make_run(tmp_path, 30)
    uri = _write_page(out)
    assert uri == f"{R.run_dir(out, RID)}/report.html"
    text = _html(out)
    page = _Page(text)
    assert page.body.get("data-ready") == "0"  # the pager script sets it in a browser
    # counts
    assert re.search(r'data-status="ok"><b>30</b>', text) and re.search(r'data-status="error"><b>6</b>', text)
    assert re.search(r'data-status="skipped"><b>1</b>', text) and "<b>37</b>rows" in text
    # timings: wall and images/s from metrics.json, latency from the rows
    timings = page.texts["timings"]
    assert "12.5 s" in timings and f"{30 / 12.5:.2f} images/s" in timings
    lat = np.array([5.0 + i + 43.0 for i in range(30)])
    assert f"{np.percentile(lat, 50):.1f} ms" in timings and f"{np.percentile(lat, 95):.1f} ms" in timings
    # per style
    cells = '<td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>'
    assert "<tr><td>cyberpunk</td>" + cells.format(20, 0, 0, 20) in text  # ok, error, skipped, total
    assert "<tr><td>ink</td>" + cells.format(10, 6, 1, 17) in text
    # errors grouped by message, most frequent first, with example ids
    groups = [(int(g[0]), g[1], g[2].split()) for g in page.error_groups]
    assert groups == [(3, "boom: decode failed", ["e0", "e1", "e2"]), (2, "timeout reading source", ["e3", "e4"]),
                      (1, HOSTILE_MSG, [HOSTILE_ID])]
    # one pair per ok row, in image-id order; the vanished source is a placeholder, not a broken image
    assert len(page.pairs) == 30 and "sampled" not in page.texts
    assert page.captions[0] == "p000 · ink" and page.captions[-1] == "p029 · cyberpunk"
    assert text.count("source unavailable") == 1 and "output unavailable" not in text
    assert sum(s.startswith("data:image/jpeg;base64,") for s in page.srcs) == 59
    # self-contained: nothing but data: URIs, no external resources
    assert all(s.startswith("data:") for s in page.srcs)
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text


def test_thumbnails_are_small_jpegs(tmp_path):
    out, _ = make_run(tmp_path, 2, gone=())
    big = write_photo(tmp_path / "big.jpg", 600, 900, seed=5)
    R.write_results_part(out, RID, [_row("zz-big", "ok", uri=str(big), out=str(big), t=300)])
    srcs = _Page(_page_text(out, thumb=120)).srcs
    sizes = {Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).size for s in srcs}
    assert (120, 80) in sizes and max(max(s) for s in sizes) == 120


def test_user_data_is_escaped(tmp_path):
    out, rows = make_run(tmp_path, 3, gone=())
    hostile_style = '"><svg onload=alert(3)>'
    src = write_photo(tmp_path / "src" / "h.jpg", 20, 20, seed=9)
    R.write_results_part(out, RID, [_row('"><img src=x onerror=alert(4)>', "ok", uri=str(src), out=str(src),
                                         style=hostile_style, t=400)])
    text = _page_text(out)
    for raw in (HOSTILE_ID, "<img src=x", "<svg", 'onerror="alert(2)"'):
        assert raw not in text, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt; &amp; more" in text
    page = _Page(text)
    assert page.scripts == 2  # the report's own: error catcher and pager
    assert any(hostile_style in c for c in page.captions)  # shown as text


def test_pairs_are_capped_and_evenly_sampled(tmp_path):
    out, _ = make_run(tmp_path, 30)
    page = _Page(_page_text(out, pairs=7))
    assert len(page.pairs) == 7
    assert "Showing 7 of 30 ok outputs" in page.texts["sampled"]
    ids = [c.split(" · ")[0] for c in page.captions]
    assert ids[0] == "p000" and ids[-1] == "p029" and ids == sorted(ids)

    none = _page_text(out, pairs=0)
    assert 'class="pair"' not in none and "Showing 0 of 30" in none and "</html>" in none


def test_retried_output_appears_once(tmp_path):
    out, _ = make_run(tmp_path, 3, gone=())
    again = _row("p001", "ok", uri=str(tmp_path / "src" / "p001.jpg"), out=str(Path(out) / "cyberpunk" / "p001.png"),
                 t=500)
    R.write_results_part(out, RID, [again])
    page = _Page(_page_text(out))
    assert [c.split(" · ")[0] for c in page.captions] == ["p000", "p001", "p002"]


def test_run_without_ok_rows_or_metrics(tmp_path):
    out = str(tmp_path / "out")
    R.write_results_part(out, RID, [_row("e0", "error", uri="/x", out="/y", error="nope")])
    text = _page_text(out)
    assert "No ok outputs." in text and "n/a (no metrics.json)" in text and 'id="grid"' not in text


def test_report_writes_sheet_and_page(tmp_path):
    out, _ = make_run(tmp_path, 5)
    rep = REP.report(out, RID, sample=4, pairs=3)
    assert "ok: 5" in rep.summary and "error: 6" in rep.summary
    assert rep.contact_sheet == f"{R.run_dir(out, RID)}/contact_sheet.jpg" and Path(rep.contact_sheet).exists()
    assert rep.html == f"{R.run_dir(out, RID)}/report.html" and len(_Page(_html(out)).pairs) == 3
    assert REP.report(out, RID, with_html=False).html is None


def test_cli_report_prints_where_report_html_went(tmp_path):
    from stylebatch.cli import app

    out, _ = make_run(tmp_path, 4)
    done = CliRunner().invoke(app, ["report", "latest", "--output", out, "--pairs", "2"])
    assert done.exit_code == 0, done.output
    assert f"html report: {R.run_dir(out, RID)}/report.html" in done.output
    assert "contact sheet: " in done.output and "rows: 11" in done.output
    assert len(_Page(_html(out)).pairs) == 2


def test_html_report_on_s3(s3_server, s3_prefix, tmp_path):
    out = f"{s3_prefix}/out"
    rows = []
    for i in range(3):
        src, dst = f"{s3_prefix}/src/p{i}.jpg", f"{out}/cyberpunk/p{i}.jpg"
        buf = write_photo(tmp_path / f"p{i}.jpg", 30, 40, seed=i)
        storage.write_bytes(src, buf.read_bytes())
        storage.write_bytes(dst, buf.read_bytes())
        rows.append(_row(f"p{i}", "ok", uri=src, out=dst, t=i))
    rows.append(_row("p9", "ok", uri=f"{s3_prefix}/src/gone.jpg", out=f"{out}/cyberpunk/p9.jpg", t=9))
    R.write_results_part(out, RID, rows)
    uri = _write_page(out)
    assert uri == f"{out}/_runs/{RID}/report.html"
    page = _Page(storage.read_bytes(uri).decode("utf-8"))
    assert len(page.pairs) == 4 and sum(s.startswith("data:image/jpeg") for s in page.srcs) == 6
    p = storage.parse_uri(uri)
    head = s3_server.client().head_object(Bucket=p.bucket, Key=p.key_or_path)
    assert head["ContentType"].startswith("text/html")


# --------------------------------------------------------------------------------------------
# a real browser
# --------------------------------------------------------------------------------------------

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


def _browse(path: str, profile: Path, fragment: str = "") -> tuple[_Page, list[str]]:
    """The DOM after the page's scripts ran, and the console messages chromium logged."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", Path(path).as_uri() + fragment],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]
    return _Page(done.stdout), console


@pytest.mark.heavy
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium); .ci/run installs it")
def test_report_pages_cleanly_in_headless_chromium(tmp_path):
    out, _ = make_run(tmp_path, 30)
    path = _write_page(out, per_page=24)

    page, console = _browse(path, tmp_path / "profile")
    assert console == []
    assert page.body.get("data-ready") == "1", page.body  # the pager ran and the page finished loading
    assert "data-errors" not in page.body, page.body["data-errors"]
    assert page.body.get("data-broken-images") == "0"
    assert len(page.pairs) == 30 and len(page.visible_pairs) == 24
    assert [p["data-index"] for p in page.visible_pairs] == [str(i) for i in range(24)]
    assert page.texts["page-label"] == "page 1 of 2"

    page2, console = _browse(path, tmp_path / "profile", "#page=2")
    assert console == [] and page2.body.get("data-ready") == "1" and "data-errors" not in page2.body
    assert [p["data-index"] for p in page2.visible_pairs] == [str(i) for i in range(24, 30)]
    assert page2.texts["page-label"] == "page 2 of 2"

    # The checks above can fail: a script that is not the report's own is blocked and caught.
    tampered = Path(path).with_name("tampered.html")
    tampered.write_text(Path(path).read_text().replace("'page ' + page", "'Page ' + page"))
    bad, console = _browse(str(tampered), tmp_path / "profile")
    assert bad.body.get("data-ready") == "0" and "script-src" in bad.body.get("data-errors", "")
    assert console and "Content Security Policy" in " ".join(console)


# --------------------------------------------------------------------------------------------
# contact sheet with headers (tools/evaluate.py's grid)
# --------------------------------------------------------------------------------------------


def test_contact_sheet_with_header_row_column_and_empty_cells():
    pad, lab, t = CS.CONTACT_PAD, CS.CONTACT_LABEL_H, 32
    red, blue = np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    grey = np.full((20, 20, 3), 128, np.uint8)
    cells = [("", red), ("", None), ("", blue), ("", red)]  # 2 photos x 2 styles, one missing output
    sheet = CS.contact_sheet(cells, thumb=t, columns=2, column_headers=[("s1", grey), ("s2", grey)],
                              row_headers=[("c1", grey), ("c2", grey)], title=["adain", "rows: content"])
    assert sheet.shape == (3 * (t + lab) + 4 * pad, 3 * t + 4 * pad, 3)

    def at(r, c):
        x0, y0 = pad + c * (t + pad), pad + r * (t + lab + pad)
        return sheet[y0:y0 + t, x0:x0 + t]

    assert (at(0, 1) == 128).all() and (at(2, 0) == 128).all()  # style across, photos down
    assert (at(1, 1) == (255, 0, 0)).all() and (at(2, 1) == (0, 0, 255)).all()
    assert (at(1, 2) == CS.CONTACT_BG).all()  # the missing output leaves its cell empty
    corner = at(0, 0)
    assert (corner == CS.CONTACT_HEADER_BG).any() and corner.max() > 200  # title text on the header shade
    with pytest.raises(ValueError, match="one tile per column"):
        CS.contact_sheet(cells, thumb=t, columns=2, column_headers=[("s1", grey)])
    with pytest.raises(ValueError, match="one tile per row"):
        CS.contact_sheet(cells, thumb=t, columns=2, row_headers=[("c1", grey)])
    with pytest.raises(ValueError, match="corner"):
        CS.contact_sheet(cells, thumb=t, columns=2, title=["x"])
