"""Everything ``stylebatch report`` writes for one run, built from what ``stylebatch.io.results``
keeps (result rows and ``metrics.json``) and written next to them, every byte through ``storage``::

    <out>/_runs/<run_id>/contact_sheet.jpg   a sample of the outputs on one image (contact_sheet.py)
    <out>/_runs/<run_id>/report.html         counts, timings, styles, errors, source/output pairs (html_page.py)

plus the plain-text summary it prints (summary.py). The run's results are read once (run.py).
"""

from __future__ import annotations

from typing import NamedTuple

from stylebatch.reports import contact_sheet, html_page, summary
from stylebatch.reports.run import Run


class RunReport(NamedTuple):
    summary: str               # the plain-text summary
    contact_sheet: str | None  # URI of contact_sheet.jpg; None when no ok output could be read
    html: str | None           # URI of report.html; None when not asked for


def report(out_uri: str, run_id: str, *, sample: int = 12, thumb: int = 256, columns: int = 4,
           with_html: bool = True, pairs: int = 200) -> RunReport:
    """The summary text, ``<run_dir>/contact_sheet.jpg`` from up to ``sample`` ok outputs and (with
    ``with_html``) ``<run_dir>/report.html`` with up to ``pairs`` source/output pairs; results are read once."""
    run = Run(out_uri, run_id)
    text = summary.summary_text(run)
    sheet = contact_sheet.write_run_sheet(run, sample=sample, thumb=thumb, columns=columns)
    page = html_page.write_page(run, pairs=pairs) if with_html else None
    return RunReport(text, sheet, page)
