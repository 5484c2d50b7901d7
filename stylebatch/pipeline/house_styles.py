"""--train-style: the house-style network a job needs, trained once before its rows are planned."""
from __future__ import annotations

from stylebatch.config import JobConfig
from stylebatch.io import storage
from stylebatch.pipeline.ray_runtime import init_ray
from stylebatch.styles import catalog


def prepare_house_styles(cfg: JobConfig, *, train: bool = True) -> None:
    """Set ``cfg.style_network`` to the network for ``--style-image``, cached under the output prefix
    by the style's content key and the training settings, so the next run (and every nightly) reuses
    it. Trained by one Ray task (a GPU when the cluster has one) unless cached or ``train`` is False;
    checkpoints sit next to it, so a killed run resumes."""
    if not (cfg.train_style and cfg.style_image) or cfg.style_network:
        return
    from stylebatch.training import house_style

    style = catalog.style_from_image(cfg.style_image)
    uri = house_style.cached_network_uri(cfg.output, style.key, cfg.train_steps)
    if storage.exists(uri):
        cfg.style_network = uri
        return
    if not train:
        return
    ray = init_ray(cfg.ray_address)
    gpus = 1 if cfg.gpu == "always" or (cfg.gpu == "auto" and ray.cluster_resources().get("GPU", 0) >= 1) else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(house_style.train_house_style)
    ray.get(task.remote(cfg.style_image, uri, steps=cfg.train_steps, device=cfg.device, precision=cfg.precision))
    cfg.style_network = uri
