"""stylebatch: catalog-scale image restyling on Ray Data.

Python API (the CLI is a thin layer over it)::

    from stylebatch import JobConfig, restyle
    summary = restyle(JobConfig(manifest="catalog.parquet", style="cyberpunk", output="s3://bucket/out"))
    print(summary.metrics["counts"])

Heavy modules (Ray, torch) are imported only when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "JobConfig": ("stylebatch.config", "JobConfig"),
    "RunSummary": ("stylebatch.pipeline.driver", "RunSummary"),
    "restyle": ("stylebatch.pipeline.driver", "restyle"),
    "build_plan": ("stylebatch.pipeline.plan", "build_plan"),
    "stylize_one": ("stylebatch.single", "stylize_one"),
    "resolve_style": ("stylebatch.styles.catalog", "resolve_style"),
    "build_manifest": ("stylebatch.io.manifest", "build_manifest"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'stylebatch' has no attribute {name!r}")
