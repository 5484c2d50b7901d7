"""Tiled inference: the same picture as an untiled run, and no tile border to be seen."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stylebatch.models import tiling
from stylebatch.models.adain import AdaINStylizer
from stylebatch.models.fast_neural_style import FastNeuralStyleStylizer
from stylebatch.styles.catalog import StyleCatalog, resolve_style
from tests.helpers import photo
from tests.published_checkpoints import write_checkpoint

pytestmark = pytest.mark.heavy  # real models on pictures split in many tiles: seconds each


def _border_ratio(img: np.ndarray, borders: list[int]) -> float:
    """Mean |row r+1 - row r| across the given tile borders over that across all other rows."""
    d = np.abs(np.diff(img.astype(float), axis=0)).mean(axis=(1, 2))
    at = [b - 1 for b in borders]
    others = np.delete(d, at)
    return float(d[at].mean() / others.mean())


@pytest.fixture
def johnson(tmp_path):
    write_checkpoint("fast-neural-style", tmp_path / "fns.pth", seed=3)
    style = StyleCatalog.from_dict({"styles": {"s": {"model": "fast-neural-style",
                                                     "weights": str(tmp_path / "fns.pth")}}}).resolve("s")
    return style


def test_tiles_give_the_untiled_picture(johnson):
    img = photo(256, 300, 1)
    whole = FastNeuralStyleStylizer(device="cpu", precision="fp32").stylize([img], johnson)[0]
    plan = tiling.TilePlan(tile=96, halo=64, blend=32, multiple=8)
    assert plan.needed(*img.shape[:2])
    tiled = FastNeuralStyleStylizer(device="cpu", precision="fp32", tiles=plan).stylize([img], johnson)[0]
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_no_seam_where_the_statistics_come_from_a_smaller_picture(johnson):
    img = photo(384, 384, 2)
    plan = tiling.TilePlan(tile=128, halo=64, blend=32, multiple=8, stats_pixels=100 * 100)
    tiled = FastNeuralStyleStylizer(device="cpu", precision="fp32", tiles=plan).stylize([img], johnson)[0]
    borders = [128, 256]
    assert _border_ratio(tiled, borders) < 1.3
    assert _border_ratio(np.ascontiguousarray(tiled.transpose(1, 0, 2)), borders) < 1.3
    # Each tile with its own statistics, as a naive tiler runs it: the borders show.
    naive = np.zeros_like(img)
    stylizer = FastNeuralStyleStylizer(device="cpu", precision="fp32")
    for y in range(0, 384, 128):
        for x in range(0, 384, 128):
            naive[y:y + 128, x:x + 128] = stylizer.stylize([np.ascontiguousarray(img[y:y + 128, x:x + 128])],
                                                           johnson)[0]
    assert _border_ratio(naive, borders) > 1.5 * _border_ratio(tiled, borders)


def test_adain_tiles_give_the_untiled_picture():
    img = photo(264, 280, 3)
    style = dataclasses.replace(resolve_style("mosaic"), network=None)
    stylizer = AdaINStylizer(device="cpu", precision="fp32")
    whole = stylizer.stylize([img], style)[0]
    stylizer.tiles = tiling.TilePlan(tile=96, halo=80, blend=32, multiple=8)
    tiled = stylizer.stylize([img], style)[0]
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_the_tape_replays_in_order_and_refuses_to_run_past_its_end():
    tape = tiling.StatsTape()
    with tiling._using(tape):
        assert tiling.taping()
        assert tiling.global_stat(lambda: 1) == 1 and tiling.global_stat(lambda: 2) == 2
    assert not tiling.taping()
    tape.rewind()
    with tiling._using(tape):
        assert [tiling.global_stat(lambda: 9), tiling.global_stat(lambda: 9)] == [1, 2]
        with pytest.raises(RuntimeError, match="more statistics"):
            tiling.global_stat(lambda: 9)


def test_tile_plans_are_checked_and_weights_cover_the_picture():
    with pytest.raises(ValueError, match="multiples of 8"):
        tiling.TilePlan(tile=100, halo=64)
    with pytest.raises(ValueError, match="blend"):
        tiling.TilePlan(tile=128, halo=32, blend=64)
    seen = torch.zeros(1, 3, 200, 260)

    def record(x):
        return torch.ones_like(x)

    out = tiling.run_tiled(record, seen, tiling.TilePlan(tile=64, halo=32, blend=16, multiple=8))
    assert torch.allclose(out, torch.ones_like(out))  # the blend weights add up to one everywhere


def test_a_preset_network_tiles_to_its_untiled_picture():
    from stylebatch.models.network_stylizer import NetworkStylizer
    from stylebatch.styles.catalog import read_network

    img = photo(264, 300, 4)
    style = resolve_style("ink")  # palette recolouring, a skip conv and the droplet fill
    whole = NetworkStylizer(device="cpu", precision="fp32", read_bytes=read_network).stylize([img], style)[0]
    plan = tiling.TilePlan(tile=96, halo=80, blend=32, multiple=8)
    tiled = NetworkStylizer(device="cpu", precision="fp32", read_bytes=read_network, tiles=plan).stylize([img], style)[0]
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.1


def test_a_gpu_tile_follows_its_free_memory(monkeypatch):
    assert tiling.plan_for(torch.device("cpu"), 480) == tiling.TilePlan()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 80 * 2**30))
    big = tiling.plan_for(torch.device("cuda"), 480)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * 2**30, 80 * 2**30))
    small = tiling.plan_for(torch.device("cuda"), 480)
    assert big.tile > small.tile >= 256 and big.tile % 8 == 0
    assert (big.tile + 2 * big.halo) ** 2 * 480 <= 0.5 * 8 * 2**30
    assert big.stats_pixels == (big.tile + 2 * big.halo) ** 2
