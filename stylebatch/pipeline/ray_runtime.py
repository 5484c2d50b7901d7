"""Starting or joining Ray for the job, with Ray Data's console output replaced by our progress line."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Optional


def init_ray(address: Optional[str]):
    if not address and "ray" not in sys.modules:
        # Ray's default for a new local cluster (token auth), said explicitly so Ray does not print
        # a warning about having chosen it; RAY_AUTH_MODE=disabled still opts out. Ray reads it
        # when imported, so only before that (otherwise Ray's own default and warning stand).
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if address:
            kwargs["address"] = address
        else:
            kwargs["include_dashboard"] = False
        # Ray Data ships this package to workers via the driver's sys.path on a local cluster; on a
        # remote cluster the job's working_dir (ray job submit) provides it.
        ray.init(**kwargs)
    _quiet_ray_data(ray)
    return ray


def _quiet_ray_data(ray) -> None:
    """Our progress line replaces Ray Data's bars and per-dataset INFO lines on the console (they
    still go to Ray's ray-data.log); its warnings and errors still show."""
    from ray.util.debug import log_once

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    log_once("ray_data_progress_manager_disabled")  # marks Ray's "bars disabled" notice as shown
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":  # the console handler of Ray Data's config
            handler.setLevel(logging.WARNING)
