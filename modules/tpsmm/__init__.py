"""The Thin-Plate Spline Motion Model (Zhao & Zhang, CVPR 2022) as a model family.

The networks keep the reference's module paths (`modules.keypoint_detector`,
`modules.dense_motion`, `modules.inpainting_network`, `modules.bg_motion_predictor`,
`modules.avd_network`), so scripts written against the reference import them
unchanged; this package describes the family: its schema (`modules.tpsmm.config`),
how its networks are built, trained (`modules.tpsmm_training`) and animated
(`modules.animation.Animator`).
"""
from __future__ import annotations

from torch import nn

from modules.animation import size_multiple
from modules.family import Family, register_family
from modules.tpsmm.config import TPSMM_SCHEMA
from utils.config import ConfigError


def build_tpsmm(config: dict) -> dict[str, nn.Module]:
    """{'kp_detector', 'dense_motion_network', 'inpainting_network', ['bg_predictor'], 'avd_network'} (CPU, train mode)."""
    from modules.avd_network import AVDNetwork
    from modules.bg_motion_predictor import BGMotionPredictor
    from modules.dense_motion import DenseMotionNetwork
    from modules.inpainting_network import InpaintingNetwork
    from modules.keypoint_detector import KPDetector

    mp = config["model_params"]
    common = mp["common_params"]
    encoder = mp["kp_encoder_params"]
    if encoder["pretrained"] and (encoder["backbone"] != "mobilenet_v2" or common["num_channels"] != 3):
        raise ConfigError("model_params.kp_encoder_params.pretrained: ImageNet weights exist for backbone "
                          "mobilenet_v2 on 3-channel images only")
    dense, gen = mp["dense_motion_params"], mp["generator_params"]
    models: dict[str, nn.Module] = {
        "kp_detector": KPDetector(num_tps=common["num_tps"], num_channels=common["num_channels"],
                                  backbone=encoder["backbone"], pretrained=encoder["pretrained"]),
        "dense_motion_network": DenseMotionNetwork(
            block_expansion=dense["block_expansion"], num_blocks=dense["num_blocks"],
            max_features=dense["max_features"], num_tps=common["num_tps"], num_channels=common["num_channels"],
            scale_factor=dense["scale_factor"], bg=common["bg"], multi_mask=common["multi_mask"]),
        "inpainting_network": InpaintingNetwork(
            num_channels=common["num_channels"], block_expansion=gen["block_expansion"],
            max_features=gen["max_features"], num_down_blocks=gen["num_down_blocks"],
            multi_mask=common["multi_mask"]),
    }
    if common["bg"]:
        models["bg_predictor"] = BGMotionPredictor(num_channels=common["num_channels"])
    avd = mp["avd_network_params"]
    models["avd_network"] = AVDNetwork(num_tps=common["num_tps"], id_bottle_size=avd["id_bottle_size"],
                                       pose_bottle_size=avd["pose_bottle_size"])
    return models


FAMILY = register_family(Family(
    name="tpsmm",
    schema=TPSMM_SCHEMA,
    build=build_tpsmm,
    training="modules.tpsmm_training:TPSMMTraining",
    animator="modules.animation:Animator",
    networks=("kp_detector", "dense_motion_network", "inpainting_network"),
    optional=("avd_network", "bg_predictor"),
    size_multiple=size_multiple,
    precisions=("fp32", "bf16", "fp16"),
    modes=("relative", "standard", "avd"),
    detect=None,  # the default family
))

__all__ = ["FAMILY", "TPSMM_SCHEMA", "build_tpsmm", "size_multiple"]
