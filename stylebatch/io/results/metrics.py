"""Run metrics: counts per status, quality and style, latencies, bytes and a sample of errors,
accumulated over result rows as they stream by, and ``metrics.json`` beside the run's results."""

from __future__ import annotations

import datetime as _dt
import json
import math
from array import array
from collections import Counter, defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from stylebatch.io import storage as _storage
from stylebatch.io.results.layout import metrics_uri, utcnow
from stylebatch.io.results.schema import STATUSES


def _batch_columns(rows: Any, names: Sequence[str]) -> tuple[int, dict[str, list]]:
    """Columns ``names`` of a batch given as list of dicts, pyarrow Table,
    pandas DataFrame or dict of arrays (Ray's numpy batch format)."""
    if isinstance(rows, pa.Table):
        return rows.num_rows, {n: rows.column(n).to_pylist() if n in rows.column_names else [None] * rows.num_rows for n in names}
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return _batch_columns(pa.Table.from_pandas(rows, preserve_index=False), names)
    if isinstance(rows, Mapping):
        n = len(next(iter(rows.values()))) if rows else 0
        out = {}
        for name in names:
            col = rows.get(name)
            out[name] = [None] * n if col is None else [v.item() if isinstance(v, np.generic) else v for v in list(col)]
        return n, out
    rows = list(rows)
    return len(rows), {n: [r.get(n) for r in rows] for n in names}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


class RunMetrics:
    """Streaming accumulator over result rows; memory is O(ok rows) floats."""

    _COLUMNS = ("status", "quality", "style", "read_ms", "model_ms", "write_ms", "input_bytes", "output_bytes", "image_id", "error")
    MAX_ERRORS = 20

    def __init__(self, run_id: str | None = None, started_at: _dt.datetime | None = None):
        self.run_id = run_id
        self.started_at = (started_at or utcnow()).astimezone(_dt.timezone.utc)
        self.counts: dict[str, int] = {s: 0 for s in STATUSES}
        self.per_quality: dict[str, Counter] = defaultdict(Counter)
        self.per_style: dict[str, Counter] = defaultdict(Counter)
        self.latencies_ms = array("d")
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors: list[dict[str, Any]] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, rows: Any) -> "RunMetrics":
        n, c = _batch_columns(rows, self._COLUMNS)
        bad = sorted({str(s) for s in c["status"] if s not in STATUSES})
        if bad:
            raise ValueError(f"invalid status value(s) {', '.join(bad)}; expected one of {', '.join(STATUSES)}")
        for i in range(n):
            status = c["status"][i]
            self.counts[status] += 1
            self.per_quality[str(c["quality"][i])][status] += 1
            self.per_style[str(c["style"][i])][status] += 1
            ib = _num(c["input_bytes"][i])
            if ib is not None:
                self.bytes_in += int(ib)
            if status == "ok":
                ob = _num(c["output_bytes"][i])
                if ob is not None:
                    self.bytes_out += int(ob)
                parts = [_num(c[k][i]) for k in ("read_ms", "model_ms", "write_ms")]
                if any(p is not None for p in parts):
                    self.latencies_ms.append(sum(p for p in parts if p is not None))
            elif status == "error" and len(self.errors) < self.MAX_ERRORS:
                self.errors.append({"image_id": c["image_id"][i], "error": _storage.redact(str(c["error"][i]))})
        return self

    def latency_summary(self) -> dict[str, float | None]:
        if not self.latencies_ms:
            return {"p50": None, "p95": None, "max": None, "mean": None}
        lat = np.frombuffer(self.latencies_ms, dtype=np.float64)
        p50, p95 = np.percentile(lat, [50, 95])
        return {"p50": float(p50), "p95": float(p95), "max": float(lat.max()), "mean": float(lat.mean())}

    def finish(self, wall_s: float, config: Mapping[str, Any] | None = None, versions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ok = self.counts["ok"]
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "finished_at": utcnow().isoformat().replace("+00:00", "Z"),
            "wall_s": float(wall_s),
            "total_rows": self.total,
            "counts": dict(self.counts),
            "per_quality": {q: {s: int(v.get(s, 0)) for s in STATUSES} for q, v in sorted(self.per_quality.items())},
            "per_style": {q: {s: int(v.get(s, 0)) for s in STATUSES} for q, v in sorted(self.per_style.items())},
            "images_per_s": ok / wall_s if wall_s and wall_s > 0 else None,
            "latency_ms": self.latency_summary(),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "errors_sample": list(self.errors),
            "config": dict(config or {}),
            "versions": dict(versions or {}),
        }


def collect_versions() -> dict[str, str]:
    """Versions of the packages that shape outputs, for metrics.json."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("stylebatch", "torch", "torchvision", "ray", "pyarrow", "numpy", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def write_metrics(out_uri: str, run_id: str, metrics: Mapping[str, Any]) -> str:
    uri = metrics_uri(out_uri, run_id)
    text = json.dumps(metrics, indent=2, default=_json_default, allow_nan=False) + "\n"
    _storage.write_bytes(uri, text.encode("utf-8"), content_type="application/json")
    return uri


def read_metrics(out_uri: str, run_id: str) -> dict[str, Any]:
    return json.loads(_storage.read_bytes(metrics_uri(out_uri, run_id)).decode("utf-8"))
