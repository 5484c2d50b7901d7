"""Style-transfer models. Tensors and pixels only: nothing here knows about Ray, URIs or rows."""
from .adain import AdaINDecoder, AdaINStylizer, StyleCache, StyleSpec, load_decoder
from .checkpoints import WeightsError
from .gatys import GatysStylizer
from .vgg import VGG19Encoder, load_vgg19

__all__ = ["AdaINDecoder", "AdaINStylizer", "GatysStylizer", "StyleCache", "StyleSpec", "VGG19Encoder",
           "WeightsError", "load_decoder", "load_vgg19"]
