"""Planning, on the driver: validate the manifest, resolve styles, and decide for each row its
output URI, model kind and parameter key, and whether an earlier run already finished it. Rows that
cannot run are kept, with the reason (``plan_error``). Only strings: a 10k-row plan is ~1 MB."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from stylebatch.config import JobConfig
from stylebatch.io import images, manifest, results, storage
from stylebatch.models import registry
from stylebatch.styles import catalog

# The plan's columns: what the driver decided for each manifest row. ``plan_error`` is set for a
# row that cannot run (its message), and such a row has no model and no output_uri.
PLAN_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("uri", pa.string()), ("style", pa.string()), ("alpha", pa.float64()),
    ("preserve_color", pa.bool_()), ("quality", pa.string()), ("model", pa.string()), ("output_uri", pa.string()),
    ("params_key", pa.string()), ("done_fingerprint", pa.string()), ("plan_error", pa.string()), ("note", pa.string()),
])
PLAN_COLUMNS = tuple(PLAN_SCHEMA.names)


@dataclass
class Plan:
    table: pa.Table                     # one row per manifest row, plus output_uri/params_key/done_fingerprint
    styles: dict                        # style name -> ResolvedStyle
    counts: dict = field(default_factory=dict)
    decisions: list = field(default_factory=list)  # house_styles.StyleDecision per style without a network


def _params_key(style: catalog.ResolvedStyle, alpha: float, preserve: bool, quality: str, cfg: JobConfig,
                kind: str) -> str:
    """Everything that changes the output pixels; a change means the row is redone."""
    parts = [style.key, f"{alpha:.4f}", str(bool(preserve)), quality, cfg.output_format, str(cfg.output_quality),
             str(cfg.max_size), _model_id(cfg, kind, style)]
    if cfg.style_scale != 1.0:  # (at 1, the keys of runs made before the option existed still match)
        parts.append(f"scale={cfg.style_scale:g}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _file_id(uri: str) -> str:
    try:
        return storage.stat(uri).fingerprint[:12]
    except storage.StorageError:
        return os.path.basename(uri)


def _model_id(cfg: JobConfig, kind: str, style: catalog.ResolvedStyle) -> str:
    """The weights that make a row's pixels: a retrained network or a new decoder redoes the rows."""
    from stylebatch.models.adain import default_decoder_path

    if kind not in ("adain", "gatys"):  # a kind that runs the file the style names
        return f"{kind}-{_file_id(catalog.network_location(style.network))}-{style.network_style or ''}"
    ident = _file_id(cfg.decoder_weights or default_decoder_path())
    return ident + (f"-gatys{cfg.premium_iterations}" if kind == "gatys" else "")


def _resolve_styles(cfg: JobConfig, names: set[str], image_styles: dict[str, str]) -> tuple[dict, dict]:
    """(name -> ResolvedStyle, name -> why it cannot be used). The job's own style (``--style`` /
    ``--style-image``) must resolve: a bad command line stops the run. A row's style that does
    not resolve (a catalog entry whose image is gone, an unreadable style image: ``image_styles``
    maps their names to their URIs) fails those rows, or the run with --strict."""
    user_catalog = catalog.StyleCatalog.load(cfg.style_catalog) if cfg.style_catalog else None
    out, broken = {}, {}
    for name in sorted(names):
        if name == cfg.style and cfg.style_image:
            out[name] = catalog.resolve_style(cfg.style_image, catalog=user_catalog)
            if cfg.style_networks.get(name):
                out[name] = catalog.with_network(out[name], cfg.style_networks[name])
            continue
        try:
            if name in image_styles:
                out[name] = catalog.style_from_image(image_styles[name], name=name)
            else:
                out[name] = catalog.resolve_style(name, catalog=user_catalog)
            if cfg.style_networks.get(name):  # trained (or found) by the job for this style
                out[name] = catalog.with_network(out[name], cfg.style_networks[name])
        except catalog.StyleError as exc:
            if name == cfg.style or cfg.strict:
                raise
            broken[name] = str(exc)
    return out, broken


def custom_style_name(style_image: str) -> str:
    """A stable folder name for --style-image outputs: file stem + hash of the URI (no secrets)."""
    stem = os.path.splitext(os.path.basename(storage.parse_uri(style_image).key_or_path.rstrip("/")))[0]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)[:40] or "custom"
    return f"{stem}-{hashlib.sha256(style_image.encode()).hexdigest()[:8]}"


def _check_weights(cfg: JobConfig, kinds: set[str], resolved: dict) -> None:
    """Refuse missing, corrupt or unsafe (pickled code) weights files on the driver, before any work;
    otherwise every model actor dies on them inside Ray and the run ends in an actor traceback.
    Weights-only loading never executes pickled code. Each style's network file is read and checked
    to hold that style in the layout of the kind that runs it."""
    options = cfg.model_options()
    registry.check(options, sorted(kinds))
    checking = dataclasses.replace(options, device="cpu", precision="fp32", read_bytes=catalog.read_network)
    registry.check_styles(checking, list(resolved.values()), sorted(kinds))


def precheck(cfg: JobConfig) -> tuple[pa.Table, manifest.ManifestCheck]:
    """Everything that can refuse a job without writing anything: the options, the named weights
    files, and the manifest (raises ManifestError when nothing can run: a structural problem, or
    any problem at all with ``--strict``). Returns the manifest and its per-row problems."""
    cfg.validate()
    registry.check(cfg.model_options())  # named weights files, before reading the manifest
    style_name = custom_style_name(cfg.style_image) if cfg.style_image else cfg.style
    table = manifest.read_manifest(cfg.manifest)
    catalog_names = set(catalog.available_styles(catalog.StyleCatalog.load(cfg.style_catalog))) if cfg.style_catalog \
        else set(catalog.available_styles())
    check = manifest.check_manifest(table, known_styles=catalog_names | {style_name})
    if check.structural or (cfg.strict and check.row_errors):
        raise manifest.ManifestError(check.problems())
    # The job's own style must resolve (a bad --style or --style-image stops the run, unlike a row's).
    if cfg.style_image:
        catalog.style_from_image(cfg.style_image)
    else:
        catalog.resolve_style(cfg.style, catalog=catalog.StyleCatalog.load(cfg.style_catalog) if cfg.style_catalog else None)
    return table, check


def build_plan(cfg: JobConfig, *, checked: Optional[tuple[pa.Table, manifest.ManifestCheck]] = None) -> Plan:
    """Validate everything before any work; raise ManifestError/StyleError with every problem named.
    ``checked``: what ``precheck(cfg)`` returned, if the caller ran it already (the manifest is then
    not read again)."""
    table, check = checked or precheck(cfg)
    if cfg.style_image:
        cfg.style = custom_style_name(cfg.style_image)
    row_styles = table.column("style").to_pylist() if "style" in table.column_names else [None] * table.num_rows
    row_errors = check.row_errors
    # A row's style that is an image URI runs under a safe folder name, as --style-image does.
    image_styles = {v: custom_style_name(v) for i, v in enumerate(row_styles)
                    if i not in row_errors and manifest.looks_like_image_uri(v) and v != cfg.style}
    row_styles = [image_styles.get(v, v) for v in row_styles]
    wanted = {s for i, s in enumerate(row_styles) if s and i not in row_errors} | {cfg.style}
    resolved, broken = _resolve_styles(cfg, wanted, {name: uri for uri, name in image_styles.items()})

    ids = table.column("image_id").to_pylist()
    uris = table.column("uri").to_pylist()
    alphas = table.column("alpha").to_pylist() if "alpha" in table.column_names else [None] * len(ids)
    quals = table.column("quality").to_pylist() if "quality" in table.column_names else [None] * len(ids)
    ext = images.OUTPUT_FORMATS[cfg.output_format].extension
    cols: dict[str, list] = {k: [] for k in PLAN_COLUMNS}
    params: dict[tuple, str] = {}  # a handful of distinct settings in a catalog: hash (and stat weights) once each
    for i, (image_id, uri, style_name, alpha, quality) in enumerate(zip(ids, uris, row_styles, alphas, quals)):
        style_name = style_name or cfg.style
        problem = row_errors.get(i) or (f"style {style_name!r} cannot be used: {broken[style_name]}"
                                        if style_name in broken else "")
        if not problem:
            style = resolved[style_name]
            # Precedence: manifest row > command line > style catalog default.
            quality = quality or cfg.quality or style.quality
            try:
                kind = registry.kind_for(quality, style).name
            except ValueError as exc:  # a checkpoint-only style asked for premium
                problem = str(exc)
        if problem:
            # Never run and never given an output key: an unsafe or repeated id must not name a file.
            values = (image_id, uri, style_name, None, False, quality, "", None, "", "", problem, "")
        else:
            alpha = float(alpha) if alpha is not None else (cfg.alpha if cfg.alpha is not None else style.alpha)
            preserve = cfg.preserve_color or style.preserve_color
            out_uri = storage.output_uri(cfg.output, style_name, f"{image_id}.{ext}")
            setting = (style_name, alpha, preserve, quality, kind)
            if setting not in params:
                params[setting] = _params_key(style, alpha, preserve, quality, cfg, kind)
            values = (image_id, uri, style_name, alpha, preserve, quality, kind, out_uri, params[setting], "", "",
                      cfg.style_notes.get(style_name, ""))
        for name, value in zip(PLAN_COLUMNS, values):
            cols[name].append(value)
    if not cfg.overwrite:
        # What earlier runs finished, looked up for every row in one pass; fetch skips a row when
        # its source still has this fingerprint and the settings are the same.
        done = results.completed_index(cfg.output).lookup(cols["output_uri"])
        cols["done_fingerprint"] = [prev[0] if prev and prev[1] == pkey else ""
                                    for prev, pkey in zip(done, cols["params_key"])]
    _check_weights(cfg, {k for k in cols["model"] if k}, resolved)
    plan_table = pa.table(cols, schema=PLAN_SCHEMA)
    valid = [q for q, e in zip(cols["quality"], cols["plan_error"]) if not e]
    counts = {
        "rows": plan_table.num_rows,
        "fast": valid.count("fast"),
        "premium": valid.count("premium"),
        "invalid": sum(1 for e in cols["plan_error"] if e),
        "models": {k: cols["model"].count(k) for k in sorted(set(cols["model"]) - {""})},
        "previously_done": sum(1 for f in cols["done_fingerprint"] if f),
        "styles": sorted(resolved),
    }
    return Plan(plan_table, resolved, counts)


def plan_summary(plan: Plan, cfg: JobConfig) -> str:
    c = plan.counts
    return json.dumps({
        "manifest": storage.redact(cfg.manifest), "output": storage.redact(cfg.output), "rows": c["rows"],
        "fast": c["fast"], "premium": c["premium"], "already_done_candidates": c["previously_done"],
        "styles": c["styles"], "format": cfg.output_format, "max_size": cfg.max_size,
        "invalid_rows": c["invalid"], "invalid_examples": invalid_examples(plan),
        "style_networks": [d.line() for d in plan.decisions],
        "example_output": next((u for u in plan.table.column("output_uri").to_pylist() if u), None),
    }, indent=2)


def invalid_examples(plan: Plan, limit: int = 10) -> list[str]:
    """'image_id: why' for the first rows that cannot run."""
    t = plan.table.filter(pc.not_equal(plan.table.column("plan_error"), "")).slice(0, limit)
    return [f"{i}: {e}" for i, e in zip(t.column("image_id").to_pylist(), t.column("plan_error").to_pylist())]
