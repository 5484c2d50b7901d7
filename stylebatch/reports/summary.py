"""The plain-text summary ``stylebatch report`` prints: counts, a per-style table, throughput,
latency and the first errors."""

from __future__ import annotations

from stylebatch.io import results as _results
from stylebatch.io import storage as _storage
from stylebatch.reports.run import Run


def _fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def summary_text(run: Run, *, max_errors: int = 5) -> str:
    """Plain-text summary of one run: counts, per-style table, throughput, latency, first errors."""
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
