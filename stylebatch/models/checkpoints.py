"""Reading weight files safely: weights-only unpickling and clear errors for bad files."""
from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import torch


class WeightsError(ValueError):
    """A weights file is missing, unreadable, unsafe or does not fit the model."""


def load_weights_record(path: str) -> Any:
    """Unpickle a torch.save file without running pickled code: ``weights_only=True`` makes torch's
    unpickler refuse any global it does not know (a pickle carrying ``os.system`` and friends fails
    here, before anything executes). The result holds only tensors and plain data. ``path`` may be
    any storage URI (local, s3://)."""
    return load_weights_bytes(read_weights_file(path), path)


def read_weights_file(path: str, what: str = "weights file") -> bytes:
    """The bytes of a weights file through storage; a missing one is a WeightsError."""
    from stylebatch.io import storage

    try:
        return storage.read_bytes(path)
    except storage.NotFoundError:
        raise WeightsError(f"{what} not found: {storage.redact(path)}") from None


def load_weights_bytes(data: bytes, path: str) -> Any:
    """``load_weights_record`` for bytes already read (from S3, say); ``path`` names them in errors."""
    if len(data) == 0:
        raise WeightsError(f"weights file is empty (0 bytes): {path}")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"refused to load {path}: it is not a plain weights file (weights-only loading "
            f"rejected it: {str(exc).splitlines()[0]})"
        ) from exc
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        raise WeightsError(f"weights file {path} is truncated or corrupt: {str(exc).splitlines()[0]}") from exc


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Load a flat ``{name: tensor}`` mapping from a torch.save file without running pickled code."""
    state: Any = load_weights_record(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise WeightsError(f"weights file {path} does not hold a mapping of names to tensors")
    return state
