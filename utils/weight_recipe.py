"""The parity fixtures' RNG-free weight recipe: every tensor filled from its checkpoint key name.

A splitmix64 hash of (crc32(key), index) gives 24-bit uniforms u in [-1, 1), scaled
by a rule that depends only on the key's last component and the shapes (see
`tests/fixtures/README.md`). Lets tests build the reference-format checkpoint of
`tiny.yaml` without shipping 97 MB of weights, and benches seed full-size models.
"""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import torch
from torch import nn

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

FIXED_BUFFERS = {"dense_motion_network.down.weight", "mean", "std", "vgg.mean", "vgg.std"}


def hashed_uniform(key: str, count: int) -> np.ndarray:
    """`count` float64 values on a 24-bit grid in [-1, 1), a pure function of `key`."""
    with np.errstate(over="ignore"):
        state = np.arange(count, dtype=np.uint64) + np.uint64(zlib.crc32(key.encode("utf-8"))) * _GOLDEN + _GOLDEN
        state = (state ^ (state >> np.uint64(30))) * _MIX1
        state = (state ^ (state >> np.uint64(27))) * _MIX2
        state = state ^ (state >> np.uint64(31))
    return 2.0 * ((state >> np.uint64(40)).astype(np.float64) / float(1 << 24)) - 1.0


def _special(key: str, u: np.ndarray) -> np.ndarray | None:
    if key == "bg_predictor.bg_encoder.fc.weight":
        return 0.002 * u
    if key == "bg_predictor.bg_encoder.fc.bias":
        return np.array([1, 0, 0, 0, 1, 0], dtype=np.float64) + 0.02 * u
    if key == "kp_detector.fg_encoder.fc.weight":
        return 0.03 * u
    if key == "kp_detector.fg_encoder.fc.bias":
        return 0.3 * u
    if key == "avd_network.decoder.9.weight":
        return 0.02 * u
    return None


def recipe_value(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
    """The recipe's value for one tensor given all (prefixed) shapes of its state dict."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.array(100, dtype=np.int64)
    numel = int(np.prod(shape)) if shape else 1
    u = hashed_uniform(key, numel).reshape(shape)
    special = _special(key, u)
    if special is not None:
        return special
    if leaf == "running_mean":
        return 0.1 * u
    if leaf == "running_var":
        return 1.0 + 0.25 * u
    if leaf == "weight":
        return np.sqrt(6.0 / int(np.prod(shape[1:]))) * u if len(shape) >= 2 else 1.0 + 0.1 * u
    if leaf == "bias":
        weight_shape = shapes.get(key[: -len(leaf)] + "weight")
        return 0.1 * u if weight_shape is not None and len(weight_shape) == 1 else 0.05 * u
    raise KeyError(f"weight recipe has no rule for {key}")


def he_uniform(u: np.ndarray, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """`scale` x the He-uniform bound sqrt(6 / fan_in) times the hashed uniforms `u` (a conv or linear weight)."""
    return scale * np.sqrt(6.0 / int(np.prod(shape[1:]))) * u


def _keep_fixed_buffers(full_key: str, state_key: str) -> bool:
    return full_key in FIXED_BUFFERS or state_key in FIXED_BUFFERS


Value = Callable[[str, tuple[int, ...], dict[str, tuple[int, ...]]], np.ndarray]


def fill_module(prefix: str, module: nn.Module, value: Value = recipe_value,
                keep: Callable[[str, str], bool] = _keep_fixed_buffers) -> nn.Module:
    """Fill every tensor of `module` in place from the keys '<prefix>.<state_dict key>' with `value(full key,
    shape, shapes of the module)`, keeping those `keep(full key, state key)` names as constructed (TPSMM's rules
    by default; the FOMM and MRAA recipes pass their own)."""
    state = module.state_dict()
    shapes = {f"{prefix}.{k}": tuple(v.shape) for k, v in state.items()}
    new = {}
    for k, v in state.items():
        full = f"{prefix}.{k}"
        if keep(full, k):
            new[k] = v
            continue
        new[k] = torch.from_numpy(np.asarray(value(full, tuple(v.shape), shapes))).to(v.dtype).reshape(v.shape)
    module.load_state_dict(new)
    return module


def fill_models(models: dict[str, nn.Module]) -> dict[str, nn.Module]:
    for name, module in models.items():
        fill_module(name, module)
    return models
