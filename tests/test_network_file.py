"""The style network's file: fp16 and int8 storage, weights-only loading, clear errors."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from stylebatch.models.checkpoints import WeightsError
from stylebatch.models.network import NetworkConfig, StyleNetwork
from stylebatch.models.network_file import load_network, network_record, save_network
from tests.networks import TINY, tiny_network_file


def test_network_file_round_trip_is_fp16_and_weights_only(tmp_path):
    path = tiny_network_file(tmp_path / "n.pt")
    record = torch.load(path, weights_only=True)
    assert record["styles"] == ["a", "b"]
    assert all(v.dtype == torch.float16 for v in record["state_dict"].values())
    net, names = load_network(str(path))
    assert names == ["a", "b"] and net.n_styles == 2


def test_int8_network_files_are_a_quarter_of_fp32_and_stylize_within_a_few_grey_levels(tmp_path):
    torch.manual_seed(0)
    net = StyleNetwork(1, NetworkConfig(channels=16, residual_blocks=2))
    with torch.no_grad():  # a change of about 10 grey levels, as trained networks make, not saturation
        torch.nn.init.normal_(net.out.weight, std=0.003)
    save_network(net, ["a"], str(tmp_path / "fp32.pt"), storage="fp32")
    save_network(net, ["a"], str(tmp_path / "int8.pt"), storage="int8")
    record = torch.load(tmp_path / "int8.pt", weights_only=True)
    convs = [k for k, v in net.state_dict().items() if v.ndim == 4]
    assert convs and all(record["state_dict"][k].dtype == torch.int8 for k in convs)
    assert sorted(record["scales"]) == sorted(convs)
    assert (tmp_path / "int8.pt").stat().st_size < 0.35 * (tmp_path / "fp32.pt").stat().st_size
    img = torch.rand(1, 3, 40, 52)
    style = torch.tensor([0])
    with torch.no_grad():
        exact = net(img, style).clamp(0, 1) * 255
        packed = load_network(str(tmp_path / "int8.pt"))[0](img, style).clamp(0, 1) * 255
    assert not torch.equal(exact, img * 255)          # the network does change the photo
    assert (exact - packed).abs().mean() < 1.0


def test_int8_weights_without_their_scales_are_refused(tmp_path):
    record = network_record(StyleNetwork(1, NetworkConfig(**TINY)), ["a"], storage="int8")
    record["scales"].pop("out.weight")
    torch.save(record, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="out.weight is stored as int8 but has no per-channel scale"):
        load_network(str(tmp_path / "bad.pt"))


def test_pickled_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "stylebatch-style-network/1", "state_dict": Exploit()}))
    with pytest.raises(WeightsError, match="refused to load"):
        load_network(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["state_dict"].update({"out.weight": torch.zeros(3, 5, 9, 9)}), "out.weight has shape"),
    (lambda r: r["state_dict"].pop("out.bias"), "missing"),
    (lambda r: r.update(format="something-else"), "not a stylebatch style network"),
    (lambda r: r.update(styles=[]), "'styles' must be a non-empty list"),
    (lambda r: r.update(config={"channels": 8, "bogus": 1}), "bad network config"),
])
def test_network_files_that_do_not_fit_get_a_clear_error(tmp_path, mutate, message):
    record = network_record(StyleNetwork(1, NetworkConfig(**TINY)), ["a"])
    mutate(record)
    path = tmp_path / "bad.pt"
    torch.save(record, path)
    with pytest.raises(WeightsError, match=message):
        load_network(str(path))


def test_truncated_and_empty_network_files(tmp_path):
    good = tiny_network_file(tmp_path / "n.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_network(str(tmp_path / "cut.pt"))
    with pytest.raises(WeightsError, match="empty"):
        load_network(str(tmp_path / "empty.pt"))
