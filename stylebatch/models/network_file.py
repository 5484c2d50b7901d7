"""The style network's file: a weights-only ``torch.save`` of ``{"format", "styles", "config",
"state_dict"}`` (plus ``"scales"`` when its convolution weights are stored as int8): plain strings,
numbers and tensors, so loading it never runs pickled code. ``config`` is the ``NetworkConfig``;
a setting a file lacks takes that field's default.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict

import torch

from stylebatch.models.checkpoints import WeightsError, load_weights_record, read_weights_file
from stylebatch.models.network import NetworkConfig, StyleNetwork

FORMAT = "stylebatch-style-network/1"
STORAGE = ("fp32", "fp16", "int8")


def pack_state(state: dict[str, torch.Tensor], storage: str = "fp16") -> dict:
    """A state dict as a file stores it: ``state_dict`` (and ``scales`` for int8).

    fp16 halves the bytes; its outputs differ from fp32 weights by under one grey level. int8
    quarters them (the shipped per-preset networks: nine in the space of three at fp16): each
    convolution weight is rounded per output channel to 127 steps of that channel's largest
    magnitude, one fp32 scale per channel; everything else (biases, norm scales/shifts) stays fp16."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}, got {storage!r}")
    out, scales = {}, {}
    for k, v in state.items():
        v = v.detach().float().cpu()
        if storage == "int8" and v.ndim == 4:  # conv weights: out, in, kh, kw
            scale = v.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0
            out[k] = (v / scale[:, None, None, None]).round().clamp(-127, 127).to(torch.int8)
            scales[k] = scale
        else:
            out[k] = v if storage == "fp32" else v.half()
    return {"state_dict": out, **({"scales": scales} if scales else {})}


def unpack_state(record: dict, source: str) -> dict[str, torch.Tensor]:
    """``pack_state``'s inverse: fp32 tensors; an int8 tensor without a fitting scale is a WeightsError."""
    state, scales = record["state_dict"], record.get("scales", {})
    if not isinstance(scales, dict):
        raise WeightsError(f"{source}: 'scales' must map weight names to tensors")
    out = {}
    for k, v in state.items():
        if not torch.is_tensor(v):
            raise WeightsError(f"{source}: {k} is not a tensor")
        if v.dtype == torch.int8:
            scale = scales.get(k)
            if not torch.is_tensor(scale) or v.ndim < 1 or scale.shape != (v.shape[0],):
                raise WeightsError(f"{source}: {k} is stored as int8 but has no per-channel scale of shape "
                                   f"({v.shape[0] if v.ndim else '?'},)")
            out[k] = v.float() * scale.float().view(-1, *([1] * (v.ndim - 1)))
        else:
            out[k] = v.float()
    return out


def network_record(net: StyleNetwork, styles: Sequence[str], *, storage: str = "fp16") -> dict:
    """What ``save_network`` writes: plain data plus tensors (see ``pack_state`` for ``storage``)."""
    if len(styles) != net.n_styles or len(set(styles)) != len(styles):
        raise ValueError(f"need {net.n_styles} distinct style names, got {list(styles)}")
    return {"format": FORMAT, "styles": list(styles), "config": asdict(net.config),
            **pack_state(net.state_dict(), storage)}


def save_network(net: StyleNetwork, styles: Sequence[str], path: str, *, storage: str = "fp16") -> None:
    from stylebatch.io import storage as _storage

    buf = io.BytesIO()
    torch.save(network_record(net, styles, storage=storage), buf)
    _storage.write_bytes(path, buf.getvalue())  # atomic


def network_from_record(record: dict, source: str) -> tuple[StyleNetwork, list[str]]:
    """Build the network a file describes; anything that does not fit raises WeightsError."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise WeightsError(f"{source}: not a stylebatch style network (format {got!r}, expected {FORMAT!r})")
    styles, config, state = record.get("styles"), record.get("config"), record.get("state_dict")
    if not (isinstance(styles, list) and styles and all(isinstance(s, str) for s in styles)):
        raise WeightsError(f"{source}: 'styles' must be a non-empty list of names, got {styles!r}")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise WeightsError(f"{source}: missing 'config' or 'state_dict'")
    try:
        net = StyleNetwork(len(styles), NetworkConfig(**config))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{source}: bad network config {config!r}: {exc}") from exc
    state = unpack_state(record, source)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise WeightsError(f"{source}: state_dict does not fit the network (missing {missing[:3]}, "
                           f"unexpected {extra[:3]})")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise WeightsError(f"{source}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    net.load_state_dict(state)
    return net.eval(), list(styles)


def load_network(path: str) -> tuple[StyleNetwork, list[str]]:
    return network_from_record(load_weights_record(path), path)


def read_network_file(path: str) -> bytes:
    """A local network file's bytes (what the stylizer reads by default)."""
    return read_weights_file(path, "network file")
