"""The network trainer: exact resume, starting from a file, the loss terms, the schedule."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stylebatch.models import runtime
from stylebatch.models.network import NetworkConfig, StyleNetwork
from stylebatch.models.network_file import load_network, save_network
from stylebatch.training.network_trainer import NetworkTrainer
from stylebatch.training.photo_terms import PHOTO_TERMS
from stylebatch.training.recipe import TrainConfig
from tests.helpers import photo
from tests.networks import TINY, TINY_TRAIN, stationary, tiny_network_file


# -- training ----------------------------------------------------------------------------------

def _straight_and_resumed(tmp_path: Path, config: TrainConfig) -> tuple[dict, dict, dict]:
    """Train ``config`` straight (straight.pt) and as 2 steps + resume (resumed.pt); assert both files
    hold the same weights. Returns the training kwargs and the two files' records."""
    from stylebatch.training.house_style import train_style_network

    content = [photo(60, 80, s) for s in range(3)]
    kwargs = dict(content_images=content, device="cpu", precision="fp32", checkpoint_every=1, progress=None)
    train_style_network({"ink": "ink"}, str(tmp_path / "straight.pt"), config=config, **kwargs)
    resumed = str(tmp_path / "resumed.pt")
    train_style_network({"ink": "ink"}, resumed, config=replace(config, steps=2), **kwargs)
    train_style_network({"ink": "ink"}, resumed, config=config, resume=True, **kwargs)
    a, b = (torch.load(tmp_path / f, weights_only=True) for f in ("straight.pt", "resumed.pt"))
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    return kwargs, a, b


def test_training_resumes_exactly(tmp_path):
    from stylebatch.training.house_style import train_style_network

    kwargs, a, b = _straight_and_resumed(tmp_path, TINY_TRAIN)
    assert a["styles"] == b["styles"] == ["ink"]
    fresh = tmp_path / "fresh.pt"
    train_style_network({"ink": "ink"}, str(fresh), config=replace(TINY_TRAIN, seed=1), **kwargs)
    c = torch.load(fresh, weights_only=True)
    assert not all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])
    assert (tmp_path / "straight.json").exists()


def test_resume_with_other_settings_is_refused_by_name_and_keeps_the_checkpoint(tmp_path):
    """A resumed run keeps its checkpoint's settings; asking for others is an error naming each one
    (not silently ignored), and the checkpoint is untouched. More steps are allowed."""
    from stylebatch.training.house_style import ResumeError, train_style_network

    kwargs = dict(content_images=[photo(60, 80, 0)], device="cpu", precision="fp32", checkpoint_every=1,
                  progress=None)
    out = str(tmp_path / "run.pt")
    train_style_network({"ink": "ink"}, out, config=replace(TINY_TRAIN, steps=2), **kwargs)
    saved = (tmp_path / "run.pt.ckpt").read_bytes()
    with pytest.raises(ResumeError, match=r"edge_weight: checkpoint 0\.0, given 0\.5.*lr: checkpoint"):
        train_style_network({"ink": "ink"}, out, config=replace(TINY_TRAIN, edge_weight=0.5, lr=0.1),
                            resume=True, **kwargs)
    assert (tmp_path / "run.pt.ckpt").read_bytes() == saved
    record = train_style_network({"ink": "ink"}, out, config=replace(TINY_TRAIN, steps=3), resume=True, **kwargs)
    assert record["steps"] == 3


def test_with_ema_decay_the_file_holds_the_averaged_weights_and_resume_stays_exact(tmp_path):
    """ema_decay: the exported file holds a moving average of the training weights (between where
    training started and its last step), the checkpoint keeps both, and a resumed run exports the
    same file as a straight one."""
    from stylebatch.training.house_style import checkpoint_uri

    kwargs, a, _ = _straight_and_resumed(tmp_path, replace(TINY_TRAIN, ema_decay=0.6, lr=1e-2))
    ckpt = torch.load(checkpoint_uri(str(tmp_path / "straight.pt")), weights_only=True)
    last, average = ckpt["network"]["state_dict"], ckpt["ema"]
    for k in ("out.weight", "down.0.conv.weight"):
        assert torch.allclose(a["state_dict"][k].float(), average[k], atol=1e-3), k
    # The untrained network's last conv is zero: the average trails the last step towards it.
    assert 0 < float(average["out.weight"].abs().sum()) < float(last["out.weight"].abs().sum())
    with pytest.raises(ValueError, match="ema_decay"):
        NetworkTrainer({"a": stationary(64, 64)}, kwargs["content_images"], replace(TINY_TRAIN, ema_decay=1.0),
                       device="cpu", precision="fp32")


def test_init_from_keeps_a_known_style_own_parameters_and_gives_a_new_one_the_mean(tmp_path):
    source = tiny_network_file(tmp_path / "src.pt", ("a", "b"))
    record = torch.load(source, weights_only=True)
    styles_ = {"b": stationary(64, 64), "new": stationary(64, 64, seed=1)}
    trainer = NetworkTrainer(styles_, [photo(60, 80, 0)], TINY_TRAIN, device="cpu", precision="fp32",
                             init_network=record)
    own = trainer.net.state_dict()
    scales = [k for k in record["state_dict"] if k.endswith((".scale", ".shift"))]
    assert scales
    for k in scales:
        src = record["state_dict"][k].float()
        assert torch.equal(own[k][0], src[1]), k           # "b" is the source's second style
        assert torch.allclose(own[k][1], src.mean(0)), k   # "new" starts from the mean
    assert torch.equal(own["out.weight"], record["state_dict"]["out.weight"].float())


def test_init_from_an_int8_file_starts_from_its_scaled_weights(tmp_path):
    """The shipped presets are int8: a fine-tune from one starts from the weights the file stands for
    (integers times their per-channel scales), not from the raw integers."""
    net = StyleNetwork(1, NetworkConfig(**TINY))
    torch.nn.init.normal_(net.out.weight, std=0.02)  # untrained, the last conv is all zeros
    save_network(net, ["a"], str(tmp_path / "int8.pt"), storage="int8")
    record = torch.load(tmp_path / "int8.pt", weights_only=True)
    trainer = NetworkTrainer({"a": stationary(64, 64)}, [photo(60, 80, 0)], TINY_TRAIN, device="cpu",
                             precision="fp32", init_network=record)
    loaded, _ = load_network(str(tmp_path / "int8.pt"))
    for k, v in loaded.state_dict().items():
        assert torch.allclose(trainer.net.state_dict()[k], v.float()), k
    assert not torch.allclose(trainer.net.state_dict()["out.weight"], record["state_dict"]["out.weight"].float())


def test_a_skip_network_starts_as_the_network_it_is_fine_tuned_from_and_learns_its_skip(tmp_path):
    """NetworkConfig.skip adds a zero-initialised output conv: fine-tuned from a file without one,
    the network first gives that file's outputs exactly, then training moves the skip conv."""
    source = tiny_network_file(tmp_path / "src.pt", ("a",))
    record = torch.load(source, weights_only=True)
    cfg = replace(TINY_TRAIN, network={**TINY, "skip": True})
    trainer = NetworkTrainer({"a": stationary(64, 64)}, [photo(60, 80, 0)], cfg, device="cpu", precision="fp32",
                             init_network=record)
    plain, _ = load_network(str(source))
    x = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        assert torch.allclose(trainer.net(x, torch.tensor([0])), plain(x, torch.tensor([0])), atol=1e-4)
    assert float(trainer.net.skip_out.weight.abs().max()) == 0.0
    trainer.train(2, progress=None)
    assert float(trainer.net.skip_out.weight.abs().max()) > 0.0
    save_network(trainer.net, ["a"], str(tmp_path / "skip.pt"))
    loaded, _ = load_network(str(tmp_path / "skip.pt"))
    assert loaded.config.skip and torch.allclose(loaded.skip_out.weight, trainer.net.skip_out.weight, atol=1e-3)


@pytest.mark.parametrize("other", [{"channels": 12}, {"residual_blocks": 2}], ids=["wider", "deeper"])
def test_a_file_of_another_width_or_depth_is_refused_as_a_start(tmp_path, other):
    """--init-from takes a file of this run's width and depth only: a network is not grown from a
    smaller one, and the error names what does not fit."""
    record = torch.load(tiny_network_file(tmp_path / "src.pt", ("a",)), weights_only=True)
    cfg = replace(TINY_TRAIN, network={**TINY, **other})
    with pytest.raises(ValueError, match=r"the network to start from is not this run's network \(channels "
                                         r"\d+, residual_blocks \d+\): .* missing or of another shape"):
        NetworkTrainer({"a": stationary(64, 64)}, [photo(60, 80, 0)], cfg, device="cpu", precision="fp32",
                       init_network=record)


def test_structure_term_ignores_colour_and_contrast_but_not_moved_outlines():
    from stylebatch.training.photo_terms import coarse_structure

    x = torch.from_numpy(photo(96, 128, 3)).permute(2, 0, 1)[None].float() / 255

    def term(y):
        return 1 - torch.nn.functional.cosine_similarity(coarse_structure(y).flatten(1),
                                                         coarse_structure(x).flatten(1)).item()

    assert term(x) == pytest.approx(0.0, abs=1e-5)
    assert term(0.4 * x + 0.3) == pytest.approx(0.0, abs=1e-5)              # contrast and brightness
    assert term(x[:, [2, 0, 1]] * 0.8) < term(x.roll(12, dims=-1))           # recoloured vs moved
    assert term(x.roll(12, dims=-1)) > 0.3


@pytest.mark.parametrize("term", [t for t in PHOTO_TERMS if t.name != "contrast"], ids=lambda t: t.name)
def test_a_term_weight_adds_that_term_to_the_loss(term):
    """0 for the untrained network (the identity), up once the output moves, and weighted into the total.
    (The contrast term counts only a shortfall: its own test below.)"""
    cfg = replace(TINY_TRAIN, **{**{t.weight: 0.0 for t in PHOTO_TERMS}, term.weight: 2.0})
    weight, term = term.weight, term.name
    trainer = NetworkTrainer({"a": stationary(64, 64)}, [photo(60, 80, 0)], cfg, device="cpu", precision="fp32")
    x = torch.from_numpy(photo(32, 32, 1)).permute(2, 0, 1)[None].float() / 255
    _, identity = trainer.loss(x, torch.zeros(1, dtype=torch.long))
    assert identity[term] == pytest.approx(0.0, abs=1e-4)
    with torch.no_grad():
        torch.nn.init.normal_(trainer.net.out.weight, std=0.05)
    _, moved = trainer.loss(x, torch.zeros(1, dtype=torch.long))
    assert moved[term] > 0.01
    plain = NetworkTrainer({"a": stationary(64, 64)}, [photo(60, 80, 0)], replace(cfg, **{weight: 0.0}),
                           device="cpu", precision="fp32")
    plain.net.load_state_dict(trainer.net.state_dict())
    _, without = plain.loss(x, torch.zeros(1, dtype=torch.long))
    assert without[term] == 0.0
    assert moved["total"] - without["total"] == pytest.approx(2.0 * moved[term], rel=1e-3)


def test_the_contrast_term_counts_only_a_shortfall_of_the_photo_layout_contrast():
    """contrast_weight: relu(1 - slope) of the output's block luminance on the photo's.
    An output at half the contrast scores 0.5, the same layout at more contrast 0 (the style may add
    it), a flat one 1; and the term is weighted into the total."""
    cfg = replace(TINY_TRAIN, structure_weight=0.0, contrast_weight=2.0)
    trainer = NetworkTrainer({"a": stationary(64, 64)}, [photo(60, 80, 0)], cfg, device="cpu", precision="fp32")
    plain = NetworkTrainer({"a": stationary(64, 64)}, [photo(60, 80, 0)], replace(cfg, contrast_weight=0.0),
                           device="cpu", precision="fp32")
    x = torch.from_numpy(photo(32, 32, 1)).permute(2, 0, 1)[None].float() / 255
    style = torch.zeros(1, dtype=torch.long)
    scores = {}
    for name, out in {"half": 0.5 * x + 0.25, "double": 2.0 * x - 0.5,
                      "flat": torch.full_like(x, 0.4)}.items():
        for t in (trainer, plain):
            t.net.forward = lambda _x, _s, out=out: out
        _, with_term = trainer.loss(x, style)
        _, without = plain.loss(x, style)
        assert without["contrast"] == 0.0
        assert with_term["total"] - without["total"] == pytest.approx(2.0 * with_term["contrast"], rel=1e-3, abs=1e-6)
        scores[name] = with_term["contrast"]
    assert scores["half"] == pytest.approx(0.5, abs=0.01)
    assert scores["double"] == pytest.approx(0.0, abs=1e-4)
    assert scores["flat"] == pytest.approx(1.0, abs=1e-4)


def test_tonal_layout_correlation_ignores_brightness_and_contrast_not_inversion():
    from stylebatch.models.losses import correlation, tonal_layout

    x = torch.from_numpy(photo(32, 32, 1)).permute(2, 0, 1)[None].float() / 255
    assert correlation(tonal_layout(0.3 * x + 0.5), tonal_layout(x)).item() == pytest.approx(1.0, abs=1e-4)
    assert correlation(tonal_layout(1 - x), tonal_layout(x)).item() == pytest.approx(-1.0, abs=1e-4)


def test_edge_magnitude_correlation_sees_where_outlines_are_not_their_contrast():
    from stylebatch.models.losses import correlation, edge_magnitude

    x = torch.from_numpy(photo(48, 64, 1)).permute(2, 0, 1)[None].float() / 255
    assert edge_magnitude(x).shape == (1, 1, 22, 30)  # half size, less the Sobel kernel's border
    edges = edge_magnitude(x).flatten(1)
    assert correlation(edge_magnitude(0.4 * x + 0.3).flatten(1), edges).item() == pytest.approx(1.0, abs=1e-3)
    assert correlation(edge_magnitude(x.roll(12, dims=-1)).flatten(1), edges).item() < 0.5
    flat = torch.full_like(x, 0.5)
    assert correlation(edge_magnitude(flat).flatten(1), edges).item() == pytest.approx(0.0, abs=1e-4)


def test_colour_layout_sees_which_hue_is_where_not_brightness():
    from stylebatch.models.losses import colour_layout, correlation

    x = torch.from_numpy(photo(32, 32, 1)).permute(2, 0, 1)[None].float() / 255
    assert colour_layout(x).shape == (3, 16)  # one row per RGB channel, 4 x 4 blocks of 8 px
    same = correlation(colour_layout(0.5 * x + 0.2), colour_layout(x)).mean().item()
    assert same == pytest.approx(1.0, abs=1e-4)  # darker, lower contrast: every region keeps its hue
    swapped = correlation(colour_layout(x[:, [2, 0, 1]]), colour_layout(x)).mean().item()
    moved = correlation(colour_layout(x.roll(16, dims=-1)), colour_layout(x)).mean().item()
    assert swapped < 0.5 and moved < 0.5
    grey = x.mean(1, keepdim=True).expand_as(x)
    assert colour_layout(grey).abs().max().item() < 1e-5  # no hue at all


def test_a_palette_network_starts_from_its_style_colours_and_keeps_them_in_its_file(tmp_path):
    """Untrained (the identity plus the recolouring), a palette network's output has its style's mean
    colour, not the photo's; the statistics travel in the file (int8 too) and are set by training."""
    style_img = np.zeros((64, 64, 3), np.uint8)
    style_img[..., 0], style_img[..., 2] = 40, 200
    style_img[::4] = (200, 30, 220)                      # some spread: a covariance to match
    trainer = NetworkTrainer({"a": style_img}, [photo(60, 80, 0)],
                             replace(TINY_TRAIN, network={**TINY, "palette": True}), device="cpu", precision="fp32")
    from stylebatch.training.network_trainer import resize_longer
    want = runtime.color_stats([resize_longer(style_img, TINY_TRAIN.style_side).permute(1, 2, 0).numpy()])[0]
    assert torch.allclose(trainer.net.palette_mean[0], want)
    save_network(trainer.net, ["a"], str(tmp_path / "p.pt"), storage="int8")
    net, _ = load_network(str(tmp_path / "p.pt"))
    assert torch.allclose(net.palette_mean[0], want, atol=1e-3)
    img = photo(48, 64, 5)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = net(x, torch.zeros(1, dtype=torch.long)).clamp(0, 1)
    got = y.mean((0, 2, 3))
    assert (got - want).abs().max() < 0.03
    assert (x.mean((0, 2, 3)) - want).abs().max() > 0.2  # the photo's own colours were far from it


def test_learning_rate_warms_up_then_decays_to_its_final_value():
    from stylebatch.training.network_trainer import learning_rate

    constant = TrainConfig(steps=100, lr=2e-3, warmup_steps=10, lr_final=None)
    assert learning_rate(constant, 0) == pytest.approx(2e-4)
    assert [learning_rate(constant, s) for s in (9, 50, 99)] == pytest.approx([2e-3] * 3)
    decaying = replace(constant, lr_final=1e-4)
    rates = [learning_rate(decaying, s) for s in range(100)]
    assert rates[:10] == pytest.approx([learning_rate(constant, s) for s in range(10)])
    assert rates[10] == pytest.approx(2e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # falls monotonically after warmup
    assert rates[55] == pytest.approx((2e-3 + 1e-4) / 2)  # half way through the decay
    assert learning_rate(decaying, 100) == pytest.approx(1e-4)
    assert learning_rate(decaying, 150) == pytest.approx(1e-4)  # a resume past the end stays at the floor


@pytest.mark.heavy
def test_training_brings_an_unseen_photo_closer_to_the_style():
    """Forty steps of a tiny network cut the style loss of a photo it never saw by about half
    (0.51-0.55 of it with 1 or 2 torch threads). At lr 1e-2 this had been chaotic: the cut ranged from
    about 50% to 6% with the thread count (the order of float reductions), which made it depend on what
    earlier tests left set in the process; at 1e-3 (warming up over the 40 steps) it does not."""
    target = np.zeros((64, 64, 3), np.uint8)
    target[..., 0], target[..., 2] = 230, 40
    target[::8] = 255 - target[::8]  # stripes, so the Grams have texture to match
    content = [photo(60, 80, s) for s in range(3)]
    trainer = NetworkTrainer({"red": target}, content, replace(TINY_TRAIN, lr=1e-3), device="cpu", precision="fp32")
    unseen = torch.from_numpy(photo(32, 32, 99)).permute(2, 0, 1)[None].float() / 255
    style = torch.tensor([0])
    with torch.no_grad():
        before = trainer.loss(unseen, style)[1]["style"]
    trainer.train(40, progress=None)
    with torch.no_grad():
        after = trainer.loss(unseen, style)[1]["style"]
    assert after < 0.75 * before, (before, after)


def test_training_refuses_empty_inputs():
    with pytest.raises(ValueError, match="at least one content photo"):
        NetworkTrainer({"a": photo(32, 32, 1)}, [], TINY_TRAIN, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="at least one style"):
        NetworkTrainer({}, [photo(32, 32, 1)], TINY_TRAIN, device="cpu", precision="fp32")
