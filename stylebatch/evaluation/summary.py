"""Per-method means over the scored pairs, ratios to the reference (gatys100) and the acceptance
targets. Acceptance, as ratios to gatys100's means: network and adain style <= 1.5x, content <=
1.5x, structure >= 0.8x; premium style <= 1.0x, content <= 1.0x, structure >= 1.0x. Layout,
colour, face, style inside the margin and style with the margin repainted are reported as ratios
with no target of their own; a score only some pairs have (face) is the mean over those."""

from __future__ import annotations

import numpy as np

from stylebatch.models.vgg import ADAIN_STYLE_LAYERS

SCORES = ("content", "style", "style_inner", "style_repainted", "gram", "structure", "layout", "colour", "face",
          "seconds")
# Targets as ratios to gatys100: (style at most, content at most, structure at least).
TARGETS = {"network": (1.5, 1.5, 0.8), "adain": (1.5, 1.5, 0.8), "premium": (1.0, 1.0, 1.0)}


def summarize(results: list[dict], methods: list[str]) -> dict:
    """``{"methods": {method: means}, "acceptance": {method: ratios, targets, passed}}`` over
    ``results``, one ``{"methods": {method: scores}}`` a pair; ratios compare a method's means with
    gatys100's (ratios of per-pair ratios would overweight easy pairs)."""
    summary: dict = {"methods": {}, "acceptance": {}}
    for m in methods:
        rows = [r["methods"][m] for r in results if m in r["methods"]]
        if rows:
            # A score only some pairs have (face) is the mean over those; None where none has it.
            summary["methods"][m] = {"pairs": len(rows), **{
                k: float(np.mean([r[k] for r in rows if k in r])) if any(k in r for r in rows) else None
                for k in SCORES},
                "style_layers": {k: float(np.mean([r["style_layers"][k] for r in rows])) for k in ADAIN_STYLE_LAYERS}}
    means = summary["methods"]
    base = means.get("baseline")
    if base:
        for v in means.values():
            v["style_gap_closed"] = 1.0 - v["style"] / base["style"] if base["style"] > 0 else None
    ref = means.get("gatys100")
    for m, (style_max, content_max, structure_min) in TARGETS.items():
        if ref is None or m not in means:
            continue
        # Ratios of per-pair ratios' means would overweight easy pairs; the issue's figures are ratios of means.
        v = means[m]
        ratios = {"style": v["style"] / ref["style"], "content": v["content"] / ref["content"],
                  "style_inner": v["style_inner"] / ref["style_inner"] if ref["style_inner"] else float("nan"),
                  "style_repainted": (v["style_repainted"] / ref["style_repainted"]
                                      if v["style_repainted"] is not None and ref["style_repainted"] else float("nan")),
                  "structure": v["structure"] / ref["structure"] if ref["structure"] else float("nan"),
                  "layout": v["layout"] / ref["layout"] if ref["layout"] else float("nan"),
                  "colour": v["colour"] / ref["colour"] if ref["colour"] else float("nan"),
                  "face": v["face"] / ref["face"] if v["face"] is not None and ref["face"] else float("nan"),
                  "seconds": v["seconds"] / ref["seconds"] if ref["seconds"] else float("nan"),
                  "style_layers": {k: v["style_layers"][k] / ref["style_layers"][k] if ref["style_layers"][k] else float("nan")
                                   for k in ADAIN_STYLE_LAYERS}}
        summary["acceptance"][m] = {
            "ratios_to_gatys100": ratios,
            "targets": {"style_at_most": style_max, "content_at_most": content_max, "structure_at_least": structure_min},
            "passed": bool(ratios["style"] <= style_max and ratios["content"] <= content_max
                           and ratios["structure"] >= structure_min),
            "pairs_compared": min(v["pairs"], ref["pairs"]),
        }
    return summary
