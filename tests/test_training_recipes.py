"""Training recipes: TrainConfig read from records, the training commands (jobs.train_network,
``stylebatch styles train``, ``--train-style``), and the shipped networks' recipes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stylebatch.models.network import NetworkConfig
from stylebatch.models.network_file import load_network
from stylebatch.models.network_stylizer import NetworkStylizer
from stylebatch.styles import catalog, presets
from stylebatch.training.recipe import TrainConfig


# -- training from the command line --------------------------------------------------------------

@pytest.mark.heavy
def test_styles_train_command_writes_a_network_and_resumes(tmp_path):
    from PIL import Image

    from tests.helpers import run_cli, write_photo

    for i in range(3):
        write_photo(tmp_path / "photos" / f"p{i}.jpg", 60, 80, 10 + i)
    Image.fromarray(presets.preset_image("pop")).save(tmp_path / "brand.png")
    out = tmp_path / "brand.pt"
    args = ("styles", "train", "brand", "--image", str(tmp_path / "brand.png"), "--content", str(tmp_path / "photos"),
            "-o", str(out), "--precision", "fp32")
    first = run_cli(*args, "--steps", "2")
    assert first.returncode == 0, first.stderr
    assert "step 2/2" in first.stderr and "ETA" in first.stderr
    assert load_network(str(out))[1] == ["brand"]
    # By default a palette network: from its first steps it paints a photo in the brand image's colours.
    photo = np.asarray(Image.open(tmp_path / "photos" / "p0.jpg").convert("RGB"))
    style = catalog.with_network(catalog.resolve_style(str(tmp_path / "brand.png")), str(out))
    painted = NetworkStylizer(device="cpu", precision="fp32").stylize([photo], style)[0]
    brand = presets.preset_image("pop").reshape(-1, 3).mean(0)
    assert (np.abs(painted.reshape(-1, 3).mean(0) - brand).max()
            < 0.5 * np.abs(photo.reshape(-1, 3).mean(0) - brand).max())
    more = run_cli(*args, "--steps", "3", "--resume")
    assert more.returncode == 0, more.stderr
    assert "resuming" in more.stderr and "at step 2" in more.stderr and "step 3/3" in more.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    for where, message in (("empty", "no content images"), ("missing", "not found")):
        failed = run_cli("styles", "train", "x", "--image", "pop", "--content", str(tmp_path / where), "-o",
                         str(tmp_path / "x.pt"))
        assert failed.returncode == 2 and message in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.ray
def test_train_style_trains_once_and_the_next_run_reuses_it(tmp_path):
    from PIL import Image

    from tests.helpers import run_cli, write_manifest, write_photo

    rows = [{"image_id": f"p{i}", "uri": str(write_photo(tmp_path / f"p{i}.jpg", 64, 80, 30 + i))} for i in range(2)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    Image.fromarray(presets.preset_image("ink")).save(tmp_path / "brand.png")
    out = tmp_path / "out"
    args = ("submit", str(manifest), "--style-image", str(tmp_path / "brand.png"), "--train-style", "always",
            "--train-steps", "2", "--output", str(out), "--precision", "fp32")
    first = run_cli(*args, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "step 2/2" in first.stdout + first.stderr  # the Ray task's progress reaches the driver
    cached = list((out / "_styles").glob("*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = run_cli(*args, "--overwrite", timeout=600)
    assert second.returncode == 0, second.stderr
    assert "step 2/2" not in second.stdout + second.stderr
    assert cached[0].stat().st_mtime_ns == stamp
    # The outputs are the cached network's pixels (JPEG aside), not AdaIN's.
    folder = next(p for p in out.iterdir() if p.name.startswith("brand-"))
    got = np.asarray(Image.open(folder / "p0.jpg").convert("RGB")).astype(float)
    src = np.asarray(Image.open(tmp_path / "p0.jpg").convert("RGB"))
    style = catalog.with_network(catalog.resolve_style(str(tmp_path / "brand.png")), str(cached[0]))
    want = NetworkStylizer(device="cpu", precision="fp32").stylize([src], style)[0].astype(float)
    from stylebatch.models import AdaINStylizer

    adain = AdaINStylizer(device="cpu", precision="fp32").stylize([src], style)[0].astype(float)
    assert np.abs(got - want).mean() < 6.0  # JPEG noise on a noisy synthetic photo
    assert np.abs(got - want).mean() < 0.5 * np.abs(got - adain).mean()


# -- recipes: TrainConfig from a record ---------------------------------------------------------------

def _write_record(path, config, **rest):
    path.write_text(json.dumps({"styles": {"x": "x"}, **rest, "config": config}))
    return str(path)


def test_train_config_from_record_round_trips_and_takes_defaults_for_what_a_recipe_leaves_out():
    made = TrainConfig(lr=3e-4, structure_weight=0.15, network={**TrainConfig().network, "palette_luma": 0.5})
    assert TrainConfig.from_record(json.loads(json.dumps(made.describe()))) == made
    partial = {"moment_weight": 9.0, "network": {"skip": True}}  # a hand-written recipe: what differs
    again = TrainConfig.from_record(partial)
    assert again == TrainConfig(moment_weight=9.0, network={"skip": True})
    assert again.network["palette"] is False and again.network["droplet_energy"] == NetworkConfig().droplet_energy


def test_train_config_from_record_refuses_settings_it_does_not_know():
    bad = TrainConfig().describe()
    bad["gram_scale"] = 2.0
    bad["network"]["depth"] = 9
    with pytest.raises(ValueError, match=r"rec\.json: unknown training settings gram_scale, network\.depth"):
        TrainConfig.from_record(bad, source="rec.json")
    with pytest.raises(ValueError, match=r"unknown training settings teacher_photos, teacher_weight"):
        TrainConfig.from_record({**TrainConfig().describe(), "teacher_weight": 0.0, "teacher_photos": 0})
    with pytest.raises(ValueError, match=r"rec\.json: .*droplet_energy is a multiple of the mean energy"):
        TrainConfig.from_record({"network": {"droplet_energy": 0.5}}, source="rec.json")
    with pytest.raises(ValueError, match=r"rec\.json: .*palette_luma needs palette"):
        TrainConfig.from_record({"network": {"palette": False, "palette_luma": 0.5}}, source="rec.json")


def test_the_defaults_are_the_house_style_recipe(monkeypatch):
    """What TrainConfig's docstring says: --train-style, `styles train` and the training command
    without --recipe all train with the defaults (and their step count)."""
    from stylebatch.training import house_style
    from stylebatch.training.recipe import recipe_config

    seen = {}
    monkeypatch.setattr(house_style, "train_style_network", lambda styles, out, **kw: seen.update(kw))
    house_style.train_house_style("pop", "house.pt", steps=40)
    assert seen["config"] == TrainConfig(steps=40)
    assert recipe_config(None) == (TrainConfig(), {})
    assert recipe_config(None, 40)[0] == TrainConfig(steps=40)


def test_a_recipe_gives_the_settings_styles_and_file_precision_and_the_command_may_choose_others(tmp_path):
    from jobs.train_network import _styles, build_parser
    from stylebatch.training.recipe import recipe_config

    made = TrainConfig(steps=300, lr=3e-4, batch=12, network={**TrainConfig().network, "skip": True})
    recipe = _write_record(tmp_path / "ukiyo.json", made.describe(), styles={"ukiyo": "ukiyo"},
                           weights_precision="int8")
    config, record = recipe_config(recipe)
    assert config == made and record["weights_precision"] == "int8"
    assert recipe_config(recipe, 2)[0] == TrainConfig(**{**made.describe(), "steps": 2})
    parse = build_parser().parse_args
    assert _styles(parse(["--recipe", recipe, "-o", "u.pt"]), record) == {"ukiyo": "ukiyo"}
    assert _styles(parse(["--style", "b=pop", "-o", "u.pt"]), record) == {"b": "pop"}
    assert set(_styles(parse(["--presets", "-o", "u.pt"]), record)) == set(presets.preset_names())
    with pytest.raises(SystemExit, match="nothing to train"):
        _styles(parse(["-o", "u.pt"]), {})


def test_the_training_command_has_at_most_15_options_and_its_help_lists_every_recipe_setting():
    from jobs.train_network import build_parser
    from stylebatch.training.recipe import settings_help

    parser = build_parser()
    assert len(parser._actions) <= 15  # --help included
    text = " ".join(parser.format_help().split())
    names = [name for name, _ in settings_help()]
    assert {n for n in names if "." not in n} == {f for f in TrainConfig().describe() if f != "network"}
    assert {n.split(".")[1] for n in names if "." in n} == set(TrainConfig().network)
    for name, help_text in settings_help():
        assert len(help_text) > 15 and f"{name} [" in text and " ".join(help_text.split()) in text, name


def test_recipe_errors_name_the_file_and_what_is_wrong(tmp_path):
    from jobs.train_network import main

    argv = ["--style", "u=ukiyo", "-o", str(tmp_path / "u.pt"), "--recipe"]
    with pytest.raises(SystemExit, match=r"--recipe .*missing\.json"):
        main(argv + [str(tmp_path / "missing.json")])
    (tmp_path / "torn.json").write_text('{"config": {"lr": ')
    with pytest.raises(SystemExit, match=r"torn\.json: not a network record \(invalid JSON"):
        main(argv + [str(tmp_path / "torn.json")])
    (tmp_path / "other.json").write_text('{"rows": 3}')
    with pytest.raises(SystemExit, match=r"other\.json: not a network record \(no 'config'"):
        main(argv + [str(tmp_path / "other.json")])
    bad = _write_record(tmp_path / "bad.json", {"lr": 3e-4, "momentum": 0.9})
    with pytest.raises(SystemExit, match=r"bad\.json: unknown training settings momentum"):
        main(argv + [bad])
    assert not (tmp_path / "u.pt").exists()


def test_jobs_import_nothing_from_tools():
    """Production entry points run from an installed package, which has no tools/ (research data)."""
    import ast
    from pathlib import Path

    for path in Path(__file__).resolve().parents[1].joinpath("jobs").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "tools" or n.startswith("tools.") for n in names), path.name


# -- content photos --------------------------------------------------------------------------------

def test_default_content_is_scikit_images_photos_only():
    from stylebatch.training import house_style

    photos = house_style.load_content(None)
    assert len(photos) == len(house_style.SKIMAGE_PHOTOS)
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in photos)


def test_the_training_manifest_lists_the_training_photos_in_order(tmp_path, monkeypatch):
    """tools.datasets training-manifest: the shared photos less the held-out ones, then Debian's
    nature photos, as a manifest the training reads in that order."""
    import pyarrow.parquet as pq

    from stylebatch.training.house_style import content_uris
    from tests.helpers import write_photo
    from tools import datasets

    shared, nature = tmp_path / "shared", tmp_path / "nature"
    for name in ("b.jpg", datasets.HOLDOUT_PHOTOS[0], "a.jpg"):
        write_photo(shared / "photos" / name, 20, 20, 1)
    write_photo(nature / "tree.jpg", 20, 20, 2)
    monkeypatch.setattr(datasets, "SHARED_DATA", shared)
    monkeypatch.setattr(datasets, "DEBIAN_NATURE", nature)
    out = tmp_path / "training.parquet"
    assert datasets.main(["training-manifest", "-o", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column("image_id").to_pylist() == ["photos__a", "photos__b", "nature__tree"]
    assert content_uris(str(out)) == [str(shared / "photos" / "a.jpg"), str(shared / "photos" / "b.jpg"),
                                      str(nature / "tree.jpg")]


# -- the shipped networks' recipes ------------------------------------------------------------------

SHIPPED_RECIPES = [catalog.BASE_NETWORK_FILE.replace(".pt", ".json")] + [
    f"{catalog.PRESET_NETWORK_DIR}/{name}.json" for name in presets.preset_names()]


@pytest.fixture(scope="module")
def one_loss_network():
    """The trainer's VGG19, loaded once for every recipe below, on one thread: tiny crops gain
    nothing from two, and on a busy machine OpenMP workers waiting for each other make a 2-step run
    several times slower."""
    import torch

    from stylebatch.models.vgg import load_vgg19

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_vgg19(last_layer="relu5_1", padding="reflect")
    torch.set_num_threads(threads)


@pytest.mark.parametrize("recipe", SHIPPED_RECIPES)
def test_every_shipped_network_is_reproduced_by_its_recipe(recipe, tmp_path, monkeypatch, one_loss_network):
    """Each shipped record spells out every setting its network trained with (read as a recipe it
    changes none), names the file's styles and network, and the training command trains from it:
    two steps at a tiny size, started from the shipped file, write a record with the recipe's settings."""
    from pathlib import Path

    from jobs.train_network import main
    from stylebatch.training import network_trainer
    from tests.helpers import write_photo

    path = Path(catalog.WEIGHTS_DIR, recipe)
    record = json.loads(path.read_text())
    assert TrainConfig.from_record(record["config"]).describe() == record["config"]
    shipped = str(path.with_suffix(".pt"))
    net, styles = load_network(shipped)
    assert NetworkConfig(**record["config"]["network"]) == net.config and styles == list(record["styles"])

    tiny = {**record, "config": {**record["config"], "batch": 2, "crop": 32, "content_side": 48, "style_side": 64}}
    (tmp_path / "recipe.json").write_text(json.dumps(tiny))
    for i in range(2):
        write_photo(tmp_path / "photos" / f"p{i}.jpg", 48, 64, i)
    monkeypatch.setattr(network_trainer, "load_vgg19", lambda **_: one_loss_network)
    out = tmp_path / "again.pt"
    assert main(["--recipe", str(tmp_path / "recipe.json"), "--steps", "2", "--content", str(tmp_path / "photos"),
                 "--init-from", shipped, "--device", "cpu", "--precision", "fp32", "-o", str(out)]) == 0
    made = json.loads((tmp_path / "again.json").read_text())
    assert made["config"] == {**tiny["config"], "steps": 2}
    assert made["styles"] == record["styles"]
    assert made["weights_precision"] == record.get("weights_precision", "fp16")
    assert load_network(str(out))[0].config == net.config
