"""One construction path for every entry point: config -> {checkpoint name: network}."""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from torch import nn

from utils.config import load_config

_BUILDERS: dict[str, Callable[[dict], dict[str, nn.Module]]] = {}


def register_family(family: str, builder: Callable[[dict], dict[str, nn.Module]]) -> None:
    """Register the builder of a model family (see `utils.config.register_schema`)."""
    _BUILDERS[family] = builder


def build_tpsmm(config: dict) -> dict[str, nn.Module]:
    from modules.avd_network import AVDNetwork
    from modules.bg_motion_predictor import BGMotionPredictor
    from modules.dense_motion import DenseMotionNetwork
    from modules.inpainting_network import InpaintingNetwork
    from modules.keypoint_detector import KPDetector

    mp = config["model_params"]
    common = mp["common_params"]
    models: dict[str, nn.Module] = {
        "kp_detector": KPDetector(num_tps=common["num_tps"], num_channels=common["num_channels"]),
        "dense_motion_network": DenseMotionNetwork(
            num_tps=common["num_tps"], num_channels=common["num_channels"], bg=common["bg"],
            multi_mask=common["multi_mask"], **mp["dense_motion_params"]),
        "inpainting_network": InpaintingNetwork(
            num_channels=common["num_channels"], multi_mask=common["multi_mask"], **mp["generator_params"]),
    }
    if common["bg"]:
        models["bg_predictor"] = BGMotionPredictor(num_channels=common["num_channels"])
    models["avd_network"] = AVDNetwork(num_tps=common["num_tps"], **mp["avd_network_params"])
    return models


register_family("tpsmm", build_tpsmm)


def build_models(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, nn.Module]:
    """Build every network of the config's model family, keyed by the published checkpoint names.

    `config` is a YAML path or a (raw or resolved) config dict. Modules are on the CPU
    in train mode; callers move them with `.to(device)`.
    """
    resolved = load_config(config)
    family = resolved["model_family"]
    if family not in _BUILDERS:
        # families register themselves on import
        import importlib
        importlib.import_module(f"modules.{family}")
    return _BUILDERS[family](resolved)
