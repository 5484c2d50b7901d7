"""The catalog manifest: a Parquet table with one row per image.

Columns: ``image_id`` (string, unique, safe to use as an output file name), ``uri`` (local path,
file:// or s3://) and optionally ``style`` (string), ``alpha`` (float in [0, 1]) and ``quality``
("fast" or "premium"). Nulls in the optional columns mean "use the job's default".
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Any, Collection, Iterable

import pyarrow as pa

from stylebatch.io import storage
from stylebatch.io.images import IMAGE_EXTENSIONS
from stylebatch.models.registry import QUALITIES

__all__ = [
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "COLUMNS",
    "QUALITY_VALUES",
    "ManifestError",
    "read_manifest",
    "validate_manifest",
    "check_manifest",
    "ManifestCheck",
    "build_manifest",
    "image_id_for",
]

REQUIRED_COLUMNS = ("image_id", "uri")
OPTIONAL_COLUMNS = ("style", "alpha", "quality")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
QUALITY_VALUES = QUALITIES  # the registry's, so a new quality needs no edit here
_STRING_COLUMNS = ("image_id", "uri", "style", "quality")

MAX_LISTED = 10  # rows/ids named per problem before "... and N more"

# Any base works: output_uri's verdict on a part does not depend on it.
_PROBE_BASE = "/stylebatch-output"


class ManifestError(ValueError):
    """Everything wrong with a manifest, collected. ``problems`` lists them one by one;
    str() is a single readable message."""

    def __init__(self, problems: list[str] | str, uri: str | None = None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.uri = uri
        where = f" {uri}" if uri else ""
        if len(self.problems) == 1:
            message = f"manifest{where}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"manifest{where} has {len(self.problems)} problems:\n{lines}"
        super().__init__(message)

    def __reduce__(self):
        return (ManifestError, (self.problems, self.uri))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _is_stringish(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _normalize_column(name: str, col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Lenient typing on read: dictionary-encoded columns are decoded, integer ids and
    string/large_string are unified, integer alphas become floats. Anything else is left
    alone for validate_manifest to report."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if name in _STRING_COLUMNS:
        if pa.types.is_large_string(col.type) or (name == "image_id" and pa.types.is_integer(col.type)):
            col = col.cast(pa.string())
    elif name == "alpha" and pa.types.is_integer(col.type):
        col = col.cast(pa.float64())
    return col


def read_manifest(uri: str) -> pa.Table:
    """Read a Parquet manifest and keep only the known columns (extras are ignored).
    Raises ManifestError naming the URI when it is missing, unreadable or not Parquet."""
    try:
        table = storage.read_parquet_table(uri)
    except storage.StorageError as exc:
        raise ManifestError([f"cannot read manifest: {exc}"], uri=storage.redact(str(uri))) from None
    keep = [c for c in COLUMNS if c in table.column_names]
    return pa.table({c: _normalize_column(c, table.column(c)) for c in keep})


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _fmt_value(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return storage.redact(text)


def _capped(items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = len(items) - len(shown)
    text = "; ".join(shown)
    return text + (f"; ... and {more} more" if more > 0 else "")


def _row_label(i: int, ids: list[Any] | None, extra: str | None = None) -> str:
    bits = []
    if ids is not None and i < len(ids) and ids[i] is not None:
        bits.append(f"image_id {_fmt_value(ids[i])}")
    if extra:
        bits.append(extra)
    return f"row {i}" + (f" ({', '.join(bits)})" if bits else "")


def _rows_problem(what: str, rows: list[str]) -> str:
    n = len(rows)
    return f"{what} in {n} row{'s' if n != 1 else ''}: {_capped(rows)}"


# Ids made only of these characters (not starting with ".") can never be rejected by
# output_uri; checking them with a regex keeps validation of 10M-row manifests fast.
_PLAINLY_SAFE_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\- ]{0,199}")


def _check_unsafe_id(image_id: str) -> str | None:
    if _PLAINLY_SAFE_ID.fullmatch(image_id):
        return None
    # Checked as a file name (id + ".jpg") and as a bare path part, since callers may use the
    # id either way; "..", for one, only fails the latter.
    for part in (image_id + ".jpg", image_id):
        try:
            storage.output_uri(_PROBE_BASE, "x", part)
        except storage.UnsafePathError as exc:
            # Keep only the reason ("contains a '..' segment"), not the probe base.
            return str(exc).rsplit(": ", 1)[-1]
    return None


class ManifestCheck:
    """What is wrong with a manifest, in two kinds:

    * ``structural``: the table itself cannot be used (missing columns, wrong column types);
      nothing can run.
    * per-row problems: ``row_errors`` maps a row index to one message naming everything wrong
      with that row. A nightly run fails just those rows; ``--strict`` refuses the whole manifest.

    ``problems()`` is everything, grouped by kind, as ``ManifestError`` lists it.
    """

    def __init__(self, ids: list[Any] | None):
        self.structural: list[str] = []
        self.ids = ids
        self._groups: dict[str, list[str]] = {}       # grouped message head -> row labels
        self._tails: dict[str, str] = {}              # grouped message head -> text after the list
        self._rows: dict[int, list[str]] = defaultdict(list)
        self._duplicates: list[str] = []

    def add(self, i: int, head: str, label: str, message: str, tail: str = "") -> None:
        self._groups.setdefault(head, []).append(label)
        if tail:
            self._tails[head] = tail
        self._rows[i].append(message)

    @property
    def row_errors(self) -> dict[int, str]:
        return {i: "; ".join(msgs) for i, msgs in sorted(self._rows.items())}

    def problems(self) -> list[str]:
        out = list(self.structural)
        for head, labels in self._groups.items():
            if head == _DUPLICATE:
                out.append(f"duplicate image_id ({len(self._duplicates)} ids repeated): {_capped(self._duplicates)}")
            else:
                out.append(_rows_problem(head, labels) + self._tails.get(head, ""))
        return out


_DUPLICATE = "duplicate image_id"


def looks_like_image_uri(value: Any) -> bool:
    """A row's ``style`` that names an image (a path, ``file://`` or ``s3://`` URI) rather than a style."""
    if not isinstance(value, str):
        return False
    return "://" in value or "/" in value or value.lower().rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


def check_manifest(table: pa.Table, *, known_styles: Collection[str] | None = None) -> ManifestCheck:
    """Check every row; never raises for content problems (see ``ManifestCheck``).

    Checks: required columns present and of string type; no null/empty image_id or uri; unique
    image_ids (the first of a repeated id is fine, later ones are the problem); image_ids usable
    as output file names (storage.output_uri accepts them); uri schemes supported; style in
    ``known_styles`` (when given) or an image URI; alpha numeric in [0, 1]; quality in ``models.registry.QUALITIES``.
    """
    names = table.column_names
    columns: dict[str, list[Any]] = {}
    structural: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        structural.append(
            "missing required column"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(repr(c) for c in missing)
            + f" (columns present: {', '.join(names) if names else 'none'})"
        )
    for name in COLUMNS:
        if name not in names:
            continue
        col = _normalize_column(name, table.column(name))
        if name in _STRING_COLUMNS and not (_is_stringish(col.type) or pa.types.is_null(col.type)):
            structural.append(f"column {name!r} must contain strings, got {col.type}")
            continue
        columns[name] = col.to_pylist()
    alphas, alpha_problem = _alpha_values(table.column("alpha")) if "alpha" in names else (None, None)
    if alpha_problem:
        structural.append(alpha_problem)

    ids = columns.get("image_id")
    check = ManifestCheck(ids)
    check.structural = structural

    if ids is not None:
        first_row: dict[str, int] = {}
        repeated: dict[str, list[int]] = defaultdict(list)
        for i, v in enumerate(ids):
            if v is None or v.strip() == "":
                check.add(i, "missing or empty image_id", _row_label(i, None), "missing or empty image_id")
                continue
            if v in first_row:
                if not repeated[v]:
                    repeated[v].append(first_row[v])
                repeated[v].append(i)
                check.add(i, _DUPLICATE, "", f"duplicate image_id {_fmt_value(v)} (first in row {first_row[v]})")
            else:
                first_row[v] = i
            why = _check_unsafe_id(v)
            if why is not None:
                check.add(i, "unsafe image_id (must be usable as an output file name)", _row_label(i, ids, why),
                          f"unsafe image_id {_fmt_value(v)}: {why}")
        check._duplicates = [f"{_fmt_value(v)} in rows {', '.join(map(str, rows))}" for v, rows in repeated.items()]

    uris = columns.get("uri")
    if uris is not None:
        bad = storage.uri_errors(uris)  # one vectorised pass for the plainly valid forms
        supported = storage.supported_locations()
        unsupported = f"unsupported uri (supported: {supported})"
        for i, v in enumerate(uris):
            if v is None or v.strip() == "":
                check.add(i, "missing or empty uri", _row_label(i, ids), "missing or empty uri")
                continue
            exc = bad.get(i)
            if isinstance(exc, storage.UnsupportedSchemeError):
                scheme = v.split(":", 1)[0].lower()
                check.add(i, unsupported, _row_label(i, ids, f"uri {_fmt_value(v)}, scheme {scheme!r}"),
                          f"unsupported uri scheme {scheme!r} in {_fmt_value(v)} (supported: {supported})")
            elif exc is not None:
                check.add(i, unsupported, _row_label(i, ids, f"uri {_fmt_value(v)}: {exc}"),
                          f"bad uri {_fmt_value(v)}: {exc}")

    styles = columns.get("style")
    if styles is not None and known_styles is not None:
        allowed = set(known_styles)
        listed = ", ".join(sorted(allowed)) if allowed else "none"
        for i, v in enumerate(styles):
            # An image URI is a style of its own, read and checked when the run is planned.
            if v is not None and v not in allowed and not looks_like_image_uri(v):
                check.add(i, "unknown style", _row_label(i, ids, f"style {_fmt_value(v)}"),
                          f"unknown style {_fmt_value(v)} (available: {_capped(sorted(allowed))})",
                          tail=f" (available styles: {listed})")

    for i, v in enumerate(alphas or ()):
        # "not (0 <= v <= 1)" is also True for NaN.
        if v is None:
            continue
        if isinstance(v, str):
            if not _parses_as_float(v):
                check.add(i, "alpha is not a number", _row_label(i, ids, f"alpha {_fmt_value(v)}"),
                          f"alpha {_fmt_value(v)} is not a number")
        elif not (0 <= v <= 1):
            check.add(i, "alpha must be a number between 0 and 1", _row_label(i, ids, f"alpha {_fmt_value(v)}"),
                      f"alpha {_fmt_value(v)} is not a number between 0 and 1")

    qualities = columns.get("quality")
    if qualities is not None:
        for i, v in enumerate(qualities):
            if v is not None and v not in QUALITY_VALUES:
                check.add(i, f"quality must be one of {', '.join(QUALITY_VALUES)}",
                          _row_label(i, ids, f"quality {_fmt_value(v)}"),
                          f"quality {_fmt_value(v)} is not one of {', '.join(QUALITY_VALUES)}")
    return check


def validate_manifest(table: pa.Table, *, known_styles: Collection[str] | None = None) -> None:
    """Raise one ManifestError listing every problem (structural and per row); None if valid."""
    problems = check_manifest(table, known_styles=known_styles).problems()
    if problems:
        raise ManifestError(problems)


def _alpha_values(col: pa.ChunkedArray) -> tuple[list[Any] | None, str | None]:
    """(values to check row by row, or a problem with the whole column)."""
    col = _normalize_column("alpha", col)
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return col.to_pylist(), None
    if _is_stringish(t):
        # Not accepted even when the text is numeric: downstream code reads alpha as a float.
        values = col.to_pylist()
        if any(v is not None and not _parses_as_float(v) for v in values):
            return values, None  # the non-numeric rows are named one by one
        return None, f"column 'alpha' must be stored as numbers (float), got {t}"
    return None, f"column 'alpha' must be numeric, got {t}"


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Building from a folder / prefix
# --------------------------------------------------------------------------------------------


def image_id_for(relative_path: str) -> str:
    """Stable id for an image: its path relative to the scanned root, extension dropped,
    "/" replaced by "__" (e.g. "shoes/red/01.JPG" -> "shoes__red__01")."""
    stem, _ext = os.path.splitext(relative_path)
    return stem.replace("/", "__")


def _sanitize_id(image_id: str) -> str:
    # Names that output_uri would refuse (backslashes, control chars, %-escapes that decode
    # to separators or dots) are rewritten deterministically instead of failing the build.
    if _check_unsafe_id(image_id) is None:
        return image_id
    cleaned = "".join(
        "_" if (c in "\\%" or ord(c) < 32 or ord(c) == 127) else c for c in image_id
    )
    cleaned = "__".join(seg if seg not in ("", ".", "..") else "_" for seg in cleaned.split("__"))
    return cleaned if _check_unsafe_id(cleaned) is None else "_"


def _assign_ids(relpaths: list[str]) -> list[str]:
    base = [_sanitize_id(image_id_for(r)) for r in relpaths]
    counts: dict[str, int] = defaultdict(int)
    for b in base:
        counts[b] += 1
    # "photo.jpg" + "photo.png": both keep their extension to stay distinguishable.
    ids = [
        _sanitize_id(r.replace("/", "__")) if counts[b] > 1 else b for r, b in zip(relpaths, base)
    ]
    seen: dict[str, int] = defaultdict(int)
    final = []
    for i in ids:
        seen[i] += 1
        # Pathological leftovers (e.g. "a.jpg" plus "a.jpg.png"): numbered in sorted order.
        final.append(i if seen[i] == 1 else f"{i}__{seen[i]}")
    return final


def _relative(root_uri: str, object_uri: str) -> str:
    prefix = root_uri if root_uri.endswith("/") else root_uri + "/"
    if not object_uri.startswith(prefix):  # pragma: no cover - list_objects joins under root
        raise ManifestError([f"listed object {object_uri!r} is not under {root_uri!r}"])
    return object_uri[len(prefix):]


def _iter_images(root: str) -> Iterable[storage.ObjectInfo]:
    suffixes = [f".{e}" for e in IMAGE_EXTENSIONS]
    for info in storage.list_objects(root, suffixes=suffixes):
        rel = _relative(root, info.uri)
        # Hidden files/folders (".thumbnails/", macOS "._photo.jpg" resource forks) are not photos.
        if any(seg.startswith(".") for seg in rel.split("/")):
            continue
        yield info


def build_manifest(src_uri: str, out_uri: str) -> int:
    """Scan a local folder or s3://bucket/prefix for images (IMAGE_EXTENSIONS, any case),
    write a manifest (image_id, uri) sorted by path to ``out_uri`` and return its row count.

    Local roots are made absolute so the manifest works from any working directory. Hidden
    files are skipped. Raises ManifestError when nothing is found or the source is unreadable.
    """
    root = storage.absolute(str(src_uri))
    root = root.rstrip("/") if root.rstrip("/") else root
    try:
        infos = list(_iter_images(root))
    except storage.StorageError as exc:
        raise ManifestError(
            [f"cannot list images under {root}: {exc}"], uri=storage.redact(out_uri)
        ) from None
    if not infos:
        raise ManifestError(
            [f"no images found under {storage.redact(root)} "
             f"(looked for: {', '.join('.' + e for e in IMAGE_EXTENSIONS)})"],
            uri=storage.redact(out_uri),
        )
    rels = [_relative(root, i.uri) for i in infos]
    table = pa.table(
        {
            "image_id": pa.array(_assign_ids(rels), type=pa.string()),
            "uri": pa.array([i.uri for i in infos], type=pa.string()),
        }
    )
    storage.write_parquet_table(table, out_uri)
    return table.num_rows
