"""Style-transfer models. Tensors and pixels only: nothing here knows about Ray, URIs or rows.

Attributes load lazily (PEP 562) so that importing ``stylebatch.models.registry`` (what the
planner needs: the qualities, which kind runs a style) does not import torch.
"""
import importlib

_EXPORTS = {
    "AdaINDecoder": "adain", "AdaINStylizer": "adain", "StyleCache": "adain", "StyleSpec": "adain",
    "load_decoder": "adain", "WeightsError": "checkpoints", "GatysStylizer": "gatys",
    "NetworkStylizer": "network_stylizer", "StyleNetwork": "network", "VGG19Encoder": "vgg", "load_vgg19": "vgg",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
