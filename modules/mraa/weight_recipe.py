"""The MRAA parity fixture's RNG-free weight recipe (mraa_tiny.pth.tar was filled with it).

Same splitmix64 hash and base rules as `utils.weight_recipe` (TPSMM), with MRAA's fixed buffers (the
anti-alias kernels `region_predictor.down.weight`, `generator.pixelwise_flow_predictor.down.weight`, kept as
constructed) and overrides that keep an untrained tiny model's outputs in a sane range: a damped
regression head, an almost-identity background transform, a damped final conv, and an AVD decoder whose
affines are about 0.4 I. Tests build the tiny checkpoint with it instead of shipping 10 MB; benches seed
full-size MRAA models with it.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from utils.weight_recipe import fill_module, hashed_uniform, he_uniform, recipe_value

KEEP = {"region_predictor.down.weight", "generator.pixelwise_flow_predictor.down.weight", "vgg.mean", "vgg.std"}
BG_IDENTITY = {2: [0.0, 0.0], 6: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 8: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]}
AVD_AFFINE_DIAG = 0.4


def mraa_recipe_value(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
    """The recipe's value (float64 / int64 array) for the full key '<top>.<state key>'."""
    numel = int(np.prod(shape)) if shape else 1

    def u() -> np.ndarray:
        return hashed_uniform(key, numel).reshape(shape)

    if key == "region_predictor.jacobian.weight":
        return he_uniform(u(), shape, 0.2)
    if key == "region_predictor.jacobian.bias":
        return np.array([1.0, 0.0, 0.0, 1.0]) + 0.1 * u()
    if key == "bg_predictor.fc.weight":
        return he_uniform(u(), shape, 0.01)
    if key == "bg_predictor.fc.bias":
        return np.array(BG_IDENTITY[shape[0]]) + 0.02 * u()
    if key == "generator.final.weight":
        return he_uniform(u(), shape, 0.25)
    if key == "avd_network.decoder.9.weight":
        return 0.01 * u()
    if key == "avd_network.decoder.9.bias":  # per region: shift x, shift y, affine 00, 01, 10, 11
        regions = shape[0] // 6
        scale = np.tile([0.3, 0.3, 0.1, 0.1, 0.1, 0.1], regions)
        base = np.tile([0.0, 0.0, AVD_AFFINE_DIAG, 0.0, 0.0, AVD_AFFINE_DIAG], regions)
        return base + scale * u()
    return recipe_value(key, shape, shapes)


def fill_mraa_module(prefix: str, module: nn.Module) -> nn.Module:
    """Fill `module` in place from the keys '<prefix>.<state_dict key>' (KEEP stays as constructed)."""
    return fill_module(prefix, module, value=mraa_recipe_value, keep=lambda full, key: full in KEEP)


def fill_mraa_models(models: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Fill every network of an MRAA `build_models` dict (generator, region_predictor, bg_predictor, avd_network)."""
    for name, module in models.items():
        fill_mraa_module(name, module)
    return models
