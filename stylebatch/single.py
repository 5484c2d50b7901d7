"""One image, no Ray: for trying a style before running a catalog."""
from __future__ import annotations

import time
from typing import Optional

from stylebatch.io import images, storage
from stylebatch.styles import catalog


def stylize_one(content_uri: str, out_uri: str, *, style: str = "cyberpunk", style_catalog: Optional[str] = None,
                alpha: Optional[float] = None, preserve_color: Optional[bool] = None, quality: Optional[str] = None,
                max_size: Optional[int] = 1024, iterations: int = 100, device: str = "auto",
                precision: str = "auto", encoder_weights: Optional[str] = None,
                decoder_weights: Optional[str] = None, jpeg_quality: int = 92, style_scale: float = 1.0) -> dict:
    """Stylize ``content_uri`` with a preset, catalog style or style image and write ``out_uri``
    (format from its extension). Returns what was done, with timings."""
    from stylebatch.models import registry

    user_catalog = catalog.StyleCatalog.load(style_catalog) if style_catalog else None
    resolved = catalog.resolve_style(style, catalog=user_catalog)
    alpha = resolved.alpha if alpha is None else alpha
    preserve_color = resolved.preserve_color if preserve_color is None else preserve_color
    quality = quality or resolved.quality
    kind = registry.kind_for(quality, resolved)
    out_format = images.format_for_filename(out_uri)
    t0 = time.perf_counter()
    img = images.resize_to_max(images.decode_image(storage.read_bytes(content_uri)), max_size)
    t1 = time.perf_counter()
    options = registry.ModelOptions(device=device, precision=precision, encoder_weights=encoder_weights,
                                    decoder_weights=decoder_weights, premium_iterations=iterations,
                                    read_bytes=catalog.read_network)
    registry.check(options, [kind.name])
    model = registry.build(kind.name, options)
    out = images.stylize_at_scale(lambda xs: model.stylize(xs, resolved, alpha=alpha, preserve_color=preserve_color),
                                  [img], style_scale)[0]
    t2 = time.perf_counter()
    storage.write_bytes(out_uri, out_format.encode(out, jpeg_quality), content_type=out_format.content_type)
    return {"output": out_uri, "style": resolved.name, "quality": quality, "model": kind.name, "alpha": alpha,
            "size": [int(out.shape[1]), int(out.shape[0])], "read_ms": (t1 - t0) * 1000,
            "model_ms": (t2 - t1) * 1000}
