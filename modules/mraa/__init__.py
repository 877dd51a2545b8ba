"""Motion Representations for Articulated Animation (MRAA, Siarohin et al. CVPR 2021) as a model family.

A config is MRAA when its `model_params` has `region_predictor_params` (the published schema of
snap-research/articulated-animation; its files carry no family name); `modules.load_config` then validates it
against `MRAA_SCHEMA` and `modules.build_models` returns {'generator', 'region_predictor', 'bg_predictor',
'avd_network'} under the published checkpoint names, so the published `vox256.pth` and friends load strictly.
`bg_predictor` has no parameters (an empty state dict) when `bg_type` is 'zero', as in the published mgif256.

Where this differs from the published code (see docs/families.md): the PCA of each region's covariance is a
closed-form 2x2 eigen-decomposition on the tensor's device (the published code copies every covariance to the
CPU for `torch.svd`), with the sign convention `torch.svd` gave the published code; the generator always gets
`model_params.revert_axis_swap` (the published `demo.load_checkpoints` ignored it).
"""
from __future__ import annotations

from fractions import Fraction
from math import lcm
from typing import Any, Mapping

from torch import nn

from modules.family import Family, register_family
from modules.mraa.config import MRAA_SCHEMA


def detect(raw: Mapping[str, Any]) -> bool:
    """A raw config is MRAA when its model_params has `region_predictor_params`."""
    mp = raw.get("model_params") if isinstance(raw, Mapping) else None
    return isinstance(mp, Mapping) and "region_predictor_params" in mp


def size_multiple(config: dict) -> int:
    """Frame sides an MRAA config's networks accept are multiples of this: the region predictor's and the flow
    predictor's hourglasses pool `num_blocks` times after their `scale_factor`, the generator's encoder
    `num_down_blocks` times and the background encoder `num_blocks` times (a sufficient multiple)."""
    mp = config.get("model_params", {})
    gen = mp.get("generator_params", {})
    multiple = 2 ** int(gen.get("num_down_blocks", 0))
    for params in (mp.get("region_predictor_params", {}), gen.get("pixelwise_flow_predictor_params") or {}):
        if "num_blocks" in params:
            per = Fraction(2 ** int(params["num_blocks"])) / Fraction(str(params.get("scale_factor", 1)))
            multiple = lcm(multiple, per.numerator)
    bg = mp.get("bg_predictor_params", {})
    if bg.get("bg_type", "zero") != "zero" and "num_blocks" in bg:
        multiple = lcm(multiple, 2 ** int(bg["num_blocks"]))
    return multiple


def build_mraa(config: dict) -> dict[str, nn.Module]:
    """{'generator', 'region_predictor', 'bg_predictor', 'avd_network'} from a resolved MRAA config (CPU, train mode)."""
    from modules.mraa.avd_network import AVDNetwork
    from modules.mraa.bg_predictor import BGMotionPredictor
    from modules.mraa.generator import Generator
    from modules.mraa.region_predictor import RegionPredictor

    mp = config["model_params"]
    regions, channels = mp["num_regions"], mp["num_channels"]
    rp, gen, bg, avd = (mp["region_predictor_params"], mp["generator_params"], mp["bg_predictor_params"],
                        mp["avd_network_params"])
    flow = dict(gen["pixelwise_flow_predictor_params"])
    return {
        "generator": Generator(
            num_channels=channels, num_regions=regions, block_expansion=gen["block_expansion"],
            max_features=gen["max_features"], num_down_blocks=gen["num_down_blocks"],
            num_bottleneck_blocks=gen["num_bottleneck_blocks"], pixelwise_flow_predictor_params=flow,
            skips=gen["skips"], revert_axis_swap=mp["revert_axis_swap"]),
        "region_predictor": RegionPredictor(
            block_expansion=rp["block_expansion"], num_regions=regions, num_channels=channels,
            max_features=rp["max_features"], num_blocks=rp["num_blocks"], temperature=rp["temperature"],
            estimate_affine=mp["estimate_affine"], scale_factor=rp["scale_factor"], pca_based=rp["pca_based"],
            fast_svd=rp["fast_svd"], pad=rp["pad"]),
        "bg_predictor": BGMotionPredictor(
            num_channels=channels, block_expansion=bg["block_expansion"], max_features=bg["max_features"],
            num_blocks=bg["num_blocks"], bg_type=bg["bg_type"]),
        "avd_network": AVDNetwork(num_regions=regions, id_bottle_size=avd["id_bottle_size"],
                                  pose_bottle_size=avd["pose_bottle_size"]),
    }


FAMILY = register_family(Family(
    name="mraa",
    schema=MRAA_SCHEMA,
    build=build_mraa,
    training="modules.mraa.training:MRAATraining",
    animator="modules.mraa.animation:MRAAAnimator",
    networks=("region_predictor", "generator"),
    optional=("bg_predictor", "avd_network"),
    size_multiple=size_multiple,
    precisions=("fp32", "bf16", "fp16"),
    modes=("relative", "standard", "avd"),
    detect=detect,
))

__all__ = ["FAMILY", "MRAA_SCHEMA", "build_mraa", "detect", "size_multiple"]
