"""Memory planned before the job runs: what a model actor and a fetch task reserve (Ray's ``memory``
resource), from the largest picture the job admits and each model kind's measured need.

Reserving it makes Ray queue an actor on a node whose memory is taken (large photos on a small
node wait their turn) instead of starting it and losing it to the out-of-memory killer. A picture
that would need more than the largest node offers never reaches a model: its row is an error that
says so (``fetch_batch`` checks it against ``pixel_limit``).
"""
from __future__ import annotations

from dataclasses import dataclass

from stylebatch.config import JobConfig
from stylebatch.models import registry

# Over the measured need: allocator fragmentation, Ray's own worker overhead.
HEADROOM = 1.25
# A fetch task: a Ray worker with the package imported, then each picture of its batch decoded
# (3 bytes a pixel) and resized.
FETCH_BASE = 160 * 2**20
FETCH_BYTES_PER_PIXEL = 6


@dataclass(frozen=True)
class MemoryPlan:
    kind: str
    actor_bytes: int     # what each model actor reserves
    pixel_limit: int     # the largest picture (pixels) an actor takes; larger rows are errors
    node_bytes: int      # the largest node's memory, for the error message
    fetch_bytes: int     # what each fetch task reserves


def job_pixels(cfg: JobConfig) -> int:
    """The largest picture (pixels) the job admits: --max-size squared, or the decoder's limit."""
    return min(cfg.max_size ** 2, cfg.max_pixels) if cfg.max_size else cfg.max_pixels


def plan_memory(kind: str, cfg: JobConfig, node_bytes: int) -> MemoryPlan:
    """An actor reserves what the largest admitted picture needs, at most the largest node's memory;
    when even that is short, the pictures it can take are capped to what fits."""
    need = registry.KINDS[kind].memory
    pixels = job_pixels(cfg)
    want = int(need.bytes_for(pixels) * HEADROOM)
    if node_bytes <= 0 or want <= node_bytes:
        actor, limit = want, pixels
    else:
        actor, limit = int(node_bytes), need.largest_pixels(int(node_bytes / HEADROOM))
    fetch = int((FETCH_BASE + cfg.batch_size * min(pixels, limit or pixels) * FETCH_BYTES_PER_PIXEL) * HEADROOM)
    return MemoryPlan(kind, actor, limit, int(node_bytes), min(fetch, int(node_bytes) or fetch))


def too_large(plan: MemoryPlan, height: int, width: int) -> str:
    """The error for a picture over ``plan.pixel_limit`` ("" when it fits)."""
    pixels = height * width
    if pixels <= plan.pixel_limit:
        return ""
    gib = registry.KINDS[plan.kind].memory.bytes_for(pixels) * HEADROOM / 2**30
    return (f"{width}x{height} ({pixels / 1e6:.0f} MP) needs about {gib:.1f} GiB to stylize with the {plan.kind} "
            f"model, more than the largest Ray node offers ({plan.node_bytes / 2**30:.1f} GiB): lower --max-size "
            f"or add a node with more memory")
