"""Loading a config's networks for animation: device checks, strict checkpoint loading, a per-process cache.

Shared by the command line (`animate.py`), the web page and live sessions.
"""
from __future__ import annotations

import json
import os
import threading

import torch

from utils.errors import UserError

# Networks a checkpoint may lack for animation (the TPSMM and FOMM families' `Family.optional`).
OPTIONAL_MODELS = ("avd_network", "bg_predictor", "discriminator")


class AnimateError(UserError):
    """Bad arguments or inputs for an animation (one-line, user-facing message)."""


# ----------------------------------------------------------------------------- set-up

def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps' or 'auto' (CUDA when available) -> torch.device, checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise AnimateError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AnimateError(f"device {device!r} asked for but CUDA is not available; use --cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AnimateError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise AnimateError("device 'mps' asked for but it is not available; use --cpu")
    return dev


def load_models(config: dict, checkpoint: str, mode: str, device: torch.device) -> dict[str, torch.nn.Module]:
    """Build the config's networks, load the checkpoint (strict for the networks used), eval mode, on `device`.

    Mode 'avd' also needs the checkpoint's avd_network (trained with run.py --mode train_avd).
    """
    from modules import CheckpointError, build_models, family_of, load_checkpoint, load_config

    config = load_config(config)
    family = family_of(config)
    if mode not in family.modes:
        raise AnimateError(f"mode {mode!r} is not available for the {family.name} family "
                           f"(use one of {', '.join(family.modes)})")
    models = build_models(config)
    needed = {name: m for name, m in models.items() if name not in family.optional}
    rest = load_checkpoint(checkpoint, needed, strict=True)
    if mode == "avd":
        if "avd_network" not in models:
            raise AnimateError("mode 'avd' is not available for this model family")
        if "avd_network" not in rest:
            raise AnimateError(f"mode 'avd' needs a checkpoint with an avd_network (train one with "
                               f"run.py --mode train_avd); {checkpoint} has none: use --mode relative")
        try:
            models["avd_network"].load_state_dict(rest["avd_network"], strict=True)
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[1 if len(str(err).strip().splitlines()) > 1 else 0].strip()
            raise CheckpointError(f"checkpoint {checkpoint}: avd_network does not match the config ({first[:200]})") from None
        needed["avd_network"] = models["avd_network"]
    for model in needed.values():
        model.eval().to(device)
    return needed


_MODEL_CACHE: dict[tuple, dict[str, torch.nn.Module]] = {}
_MODEL_CACHE_LOCK = threading.Lock()


def cached_models(config: dict, checkpoint: str, mode: str, device: torch.device) -> dict[str, torch.nn.Module]:
    """`load_models`, remembering the last result (keyed by config, checkpoint file and its mtime, mode, device).

    Repeated animations in one process (the web app, tests) skip rebuilding and reloading.
    The networks are only read during animation, never modified.
    """
    try:
        stat = os.stat(checkpoint)
    except OSError:
        return load_models(config, checkpoint, mode, device)  # raises the one-line "not found"
    key = (json.dumps(config, sort_keys=True, default=str), os.path.abspath(checkpoint), stat.st_mtime_ns,
           stat.st_size, mode == "avd", str(device))
    with _MODEL_CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()
            _MODEL_CACHE[key] = load_models(config, checkpoint, mode, device)
        return _MODEL_CACHE[key]
