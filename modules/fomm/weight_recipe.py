"""The FOMM parity fixture's RNG-free weight recipe (tests/fixtures/fomm_tiny.pth.tar was filled with it).

Same splitmix64 hash and base rules as `utils.weight_recipe` (TPSMM), plus FOMM's rules:
spectral-norm tensors (`weight_orig` like a conv weight, `weight_v` = u / |u|,
`weight_u` = normalize(W v)), and overrides that keep an untrained tiny model's outputs
unsaturated (identity-centred Jacobian head, a damped final conv). The Gaussian
anti-alias kernels (`*.down.weight`) are kept as constructed. Handy to seed full-size
FOMM models for benchmarks without a checkpoint.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from utils.weight_recipe import fill_module, hashed_uniform, he_uniform, recipe_value

KEEP = {"kp_detector.down.weight", "generator.dense_motion_network.down.weight", "vgg.mean", "vgg.std"}


def fomm_recipe_value(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
    """The recipe's value (float64 / int64 array) for the full key '<top>.<state key>'."""
    leaf = key.rsplit(".", 1)[-1]
    prefix = key[: -len(leaf)]
    numel = int(np.prod(shape)) if shape else 1
    if key == "kp_detector.jacobian.weight":
        return he_uniform(hashed_uniform(key, numel).reshape(shape), shape, 0.2)
    if key == "kp_detector.jacobian.bias":
        return np.tile(np.array([1.0, 0.0, 0.0, 1.0]), shape[0] // 4) + 0.1 * hashed_uniform(key, numel)
    if key == "generator.final.weight":
        return he_uniform(hashed_uniform(key, numel).reshape(shape), shape, 0.25)
    if leaf == "weight_orig":
        return he_uniform(hashed_uniform(key, numel).reshape(shape), shape)
    if leaf == "weight_v":
        u = hashed_uniform(key, numel)
        return u / np.linalg.norm(u)
    if leaf == "weight_u":
        w_shape = shapes[prefix + "weight_orig"]
        w = fomm_recipe_value(prefix + "weight_orig", w_shape, shapes).astype(np.float32).astype(np.float64)
        v = fomm_recipe_value(prefix + "weight_v", shapes[prefix + "weight_v"], shapes)
        wv = w.reshape(w_shape[0], -1) @ v.astype(np.float32).astype(np.float64)
        return wv / np.linalg.norm(wv)
    if leaf == "bias" and prefix + "weight_orig" in shapes:
        return 0.05 * hashed_uniform(key, numel)  # bias of a spectral-norm conv (its weight is n-D)
    return recipe_value(key, shape, shapes)


def fill_fomm_module(prefix: str, module: nn.Module) -> nn.Module:
    """Fill `module` in place from the keys '<prefix>.<state_dict key>' (KEEP stays as constructed)."""
    return fill_module(prefix, module, value=fomm_recipe_value, keep=lambda full, key: full in KEEP)


def fill_fomm_models(models: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Fill every network of a FOMM `build_models` dict (kp_detector, generator, discriminator)."""
    for name, module in models.items():
        fill_fomm_module(name, module)
    return models
