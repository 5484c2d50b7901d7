"""The methods an evaluation compares, each run on one content/style pair:

* ``baseline``: the photo itself;
* ``network``: the style's trained network (a preset's, or a house style's);
* ``adain``: AdaIN with the shipped (or a chosen) decoder;
* ``gatys100``: the reference: Gatys, a given number of L-BFGS iterations from the photo, single
  scale (``REFERENCE_ITERATIONS``, "Gatys@100", by default). Its outputs are cached on disk, keyed
  by photo, style, size, iterations and seed, so a rerun only pays for what changed;
* ``premium``: what ``--quality premium`` runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stylebatch.models import registry
from stylebatch.models.gatys import REFERENCE_ITERATIONS

METHODS = ("baseline", "network", "adain", "gatys100", "premium")


class MethodError(Exception):
    """A method cannot run: its model does not load, or the style has no network for it."""


class MethodRunner:
    """Builds each model kind through the registry on first use and stylizes one pair with it."""

    def __init__(self, options: registry.ModelOptions, *, reference_iterations: int = REFERENCE_ITERATIONS,
                 seed: int = 0, cache: Path | None = None):
        self.options = options
        self.reference_iterations = reference_iterations
        self.seed = seed
        self.cache = cache
        self.models: dict[str, registry.Stylizer] = {}

    def model(self, kind: str):
        if kind not in self.models:
            try:
                registry.check(self.options, [kind])
                self.models[kind] = registry.build(kind, self.options)
            except ValueError as exc:  # an unusable file (WeightsError) or a mismatched pair
                raise MethodError(f"cannot load the {kind} model: {exc}") from exc
        return self.models[kind]

    def _gatys100(self, content: np.ndarray, style, cache_name: str) -> tuple[np.ndarray, float]:
        """The reference, from the cache when it holds this pair (with the seconds it took then): one
        folder per iterations, content longer side and seed, one file per ``cache_name``."""
        path = None
        if self.cache is not None:
            key = f"gatys{self.reference_iterations}_{max(content.shape[:2])}_{self.seed}"
            path = self.cache / key / f"{cache_name}.png"
            if path.exists() and path.with_suffix(".json").exists():
                return np.asarray(Image.open(path).convert("RGB")), json.loads(path.with_suffix(".json").read_text())["seconds"]
        t0 = time.perf_counter()
        out = self.model("gatys").reference([content], style, iterations=self.reference_iterations, seed=self.seed)[0]
        seconds = time.perf_counter() - t0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(out).save(path)
            path.with_suffix(".json").write_text(json.dumps({"seconds": seconds}))
        return out, seconds

    def run(self, method: str, content: np.ndarray, style, cache_name: str) -> tuple[np.ndarray, float]:
        """The output and the seconds it took."""
        if method == "gatys100":
            return self._gatys100(content, style, cache_name)
        t0 = time.perf_counter()
        return self._run(method, content, style), time.perf_counter() - t0

    def _run(self, method: str, content: np.ndarray, style) -> np.ndarray:
        if method == "baseline":
            return content
        kind = {"network": "network", "adain": "adain", "premium": "gatys"}[method]
        if kind == "network" and not getattr(style, "network", None):
            raise MethodError(f"style {style.name!r} has no trained network (--set presets, or --set paintings "
                              f"with --network FOLDER holding {Path(style.name).stem}.pt)")
        return self.model(kind).stylize([content], style, alpha=1.0)[0]

    def describe(self) -> dict:
        return {k: {a: str(getattr(m, a)) for a in ("device", "precision") if hasattr(m, a)}
                for k, m in self.models.items()}
