"""First Order Motion Model (Siarohin et al., NeurIPS 2019) as a model family of the framework.

A config is FOMM when its `model_params` has `kp_detector_params` (the published FOMM
schema); `modules.load_config` then validates it against `FOMM_SCHEMA` and
`modules.build_models` returns {'kp_detector', 'generator', 'discriminator'} with the
published checkpoint names (`vox-cpk.pth.tar` and friends load unchanged).

`align_corners` (model_params.common_params): the reference calls `grid_sample`
without `align_corners`, so on today's PyTorch it samples with `align_corners=False`
(the parity fixture records this, and it is our default). The published checkpoints
were trained on PyTorch 1.0, whose `grid_sample` behaved like `align_corners=True`;
set `align_corners: true` to reproduce the original training-time sampling with them.
Bilinear resizes keep `align_corners=False` either way (that default never changed).
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from modules.family import Family, register_family
from modules.fomm.animation import size_multiple
from modules.tpsmm.config import trainer_loop_params
from utils.config import TRAINER_PARAMS, Bool, Float, Int, List, Str, shared_sections

N = dict(low=1)
W = dict(low=0.0)

# Defaults are the reference code's constructor defaults wherever a published config
# leaves a key out (e.g. taichi/fashion omit `sn`, only mgif sets `single_jacobian_map`).
FOMM_SCHEMA: dict[str, Any] = {
    **shared_sections(),
    "model_params": {
        "common_params": {
            "num_kp": Int(10, **N),
            "num_channels": Int(3, **N),
            "estimate_jacobian": Bool(False),
            # --- our addition: grid_sample convention (see the module docstring) ---
            "align_corners": Bool(False),
        },
        "kp_detector_params": {
            "temperature": Float(0.1, above=0.0),
            "block_expansion": Int(32, **N),
            "max_features": Int(1024, **N),
            "scale_factor": Float(1, above=0.0, high=1.0),
            "num_blocks": Int(5, **N),
            "single_jacobian_map": Bool(False),
            "pad": Int(0, low=0),
        },
        "generator_params": {
            "block_expansion": Int(64, **N),
            "max_features": Int(512, **N),
            "num_down_blocks": Int(2, **N),
            "num_bottleneck_blocks": Int(6, low=0),
            "estimate_occlusion_map": Bool(False),
            "dense_motion_params": {
                "block_expansion": Int(64, **N),
                "max_features": Int(1024, **N),
                "num_blocks": Int(5, **N),
                "scale_factor": Float(1, above=0.0, high=1.0),
                "kp_variance": Float(0.01, above=0.0),
            },
        },
        "discriminator_params": {
            "scales": List(Float(None, above=0.0, high=1.0), [1]),
            "block_expansion": Int(32, **N),
            "max_features": Int(512, **N),
            "num_blocks": Int(4, **N),
            "sn": Bool(False),
            "use_kp": Bool(False),
            "kp_variance": Float(0.01, above=0.0),
        },
    },
    "train_params": {
        **trainer_loop_params(),
        "lr_generator": Float(2.0e-4, low=0.0),
        "lr_discriminator": Float(2.0e-4, low=0.0),
        "lr_kp_detector": Float(2.0e-4, low=0.0),
        "loss_weights": {
            "generator_gan": Float(0, **W),
            "discriminator_gan": Float(1, **W),
            "feature_matching": List(Float(None, **W), [10, 10, 10, 10]),
            "perceptual": List(Float(None, **W), [10, 10, 10, 10, 10]),
            "equivariance_value": Float(10, **W),
            "equivariance_jacobian": Float(10, **W),
        },
        # --- our additions ---
        **TRAINER_PARAMS,
        # the reference FOMM trainer clips nothing
        "grad_clip": Float(None, above=0.0, nullable=True, doc="infinity-norm clipping; null: off"),
    },
    "reconstruction_params": {"num_videos": Int(1000, **N), "format": Str(".mp4")},
    "animate_params": {
        "num_pairs": Int(50, **N),
        "format": Str(".mp4"),
        "normalization_params": {"adapt_movement_scale": Bool(False), "use_relative_movement": Bool(False),
                                 "use_relative_jacobian": Bool(False)},
    },
}


def detect(raw: Mapping[str, Any]) -> bool:
    """A raw config is FOMM when its model_params has `kp_detector_params`."""
    mp = raw.get("model_params") if isinstance(raw, Mapping) else None
    return isinstance(mp, Mapping) and "kp_detector_params" in mp


def build_fomm(config: dict) -> dict[str, nn.Module]:
    """{'kp_detector', 'generator', 'discriminator'} from a resolved FOMM config (CPU, train mode)."""
    from modules.fomm.discriminator import MultiScaleDiscriminator
    from modules.fomm.generator import FOMMGenerator
    from modules.fomm.keypoint_detector import FOMMKPDetector

    mp = config["model_params"]
    common = mp["common_params"]
    kp = mp["kp_detector_params"]
    gen = mp["generator_params"]
    disc = mp["discriminator_params"]
    return {
        "kp_detector": FOMMKPDetector(
            block_expansion=kp["block_expansion"], num_kp=common["num_kp"], num_channels=common["num_channels"],
            max_features=kp["max_features"], num_blocks=kp["num_blocks"], temperature=kp["temperature"],
            estimate_jacobian=common["estimate_jacobian"], scale_factor=kp["scale_factor"],
            single_jacobian_map=kp["single_jacobian_map"], pad=kp["pad"]),
        "generator": FOMMGenerator(
            num_channels=common["num_channels"], num_kp=common["num_kp"], block_expansion=gen["block_expansion"],
            max_features=gen["max_features"], num_down_blocks=gen["num_down_blocks"],
            num_bottleneck_blocks=gen["num_bottleneck_blocks"], estimate_occlusion_map=gen["estimate_occlusion_map"],
            dense_motion_params=dict(gen["dense_motion_params"]), align_corners=common["align_corners"]),
        "discriminator": MultiScaleDiscriminator(
            scales=disc["scales"], num_channels=common["num_channels"], block_expansion=disc["block_expansion"],
            num_blocks=disc["num_blocks"], max_features=disc["max_features"], sn=disc["sn"],
            use_kp=disc["use_kp"], num_kp=common["num_kp"], kp_variance=disc["kp_variance"]),
    }


FAMILY = register_family(Family(
    name="fomm",
    schema=FOMM_SCHEMA,
    build=build_fomm,
    training="modules.fomm.training:FOMMTraining",
    animator="modules.fomm.animation:FOMMAnimator",
    networks=("kp_detector", "generator"),
    optional=("discriminator",),
    size_multiple=size_multiple,
    precisions=("fp32", "bf16", "fp16"),
    modes=("relative", "standard"),
    detect=detect,
))


def make_fomm_animation(*args, **kwargs):
    """See `modules.fomm.animation.make_fomm_animation` (imported lazily)."""
    from modules.fomm.animation import make_fomm_animation as _impl
    return _impl(*args, **kwargs)


__all__ = ["FAMILY", "FOMM_SCHEMA", "build_fomm", "detect", "make_fomm_animation", "size_multiple"]
