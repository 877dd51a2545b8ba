"""First Order Motion Model (Siarohin et al., NeurIPS 2019) as a model family of the framework.

A config is FOMM when its `model_params` has `kp_detector_params` (the published FOMM
schema); `utils.config.load_config` then validates it against `FOMM_SCHEMA` and
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

import copy
from typing import Any, Mapping

from torch import nn

from modules.factory import register_family
from utils.config import TPSMM_SCHEMA, register_schema

# train_params keys of the TPSMM schema that mean nothing for FOMM (TPS dropout, background predictor, its losses).
_TPSMM_ONLY_TRAIN_KEYS = {"dropout_epoch", "dropout_maxp", "dropout_startp", "dropout_inc_epoch", "bg_start"}


def _framework_train_params() -> dict[str, Any]:
    """The trainer's own keys (seed, precision, logging, ...) shared with TPSMM."""
    return {k: copy.deepcopy(v) for k, v in TPSMM_SCHEMA["train_params"].items() if k not in _TPSMM_ONLY_TRAIN_KEYS}


# Defaults are the reference code's constructor defaults wherever a published config
# leaves a key out (e.g. taichi/fashion omit `sn`, only mgif sets `single_jacobian_map`).
FOMM_SCHEMA: dict[str, Any] = {
    "dataset_params": copy.deepcopy(TPSMM_SCHEMA["dataset_params"]),
    "model_params": {
        "common_params": {
            "num_kp": 10,
            "num_channels": 3,
            "estimate_jacobian": False,
            # --- our addition: grid_sample convention (see the module docstring) ---
            "align_corners": False,
        },
        "kp_detector_params": {
            "temperature": 0.1,
            "block_expansion": 32,
            "max_features": 1024,
            "scale_factor": 1,
            "num_blocks": 5,
            "single_jacobian_map": False,
            "pad": 0,
        },
        "generator_params": {
            "block_expansion": 64,
            "max_features": 512,
            "num_down_blocks": 2,
            "num_bottleneck_blocks": 6,
            "estimate_occlusion_map": False,
            "dense_motion_params": {
                "block_expansion": 64,
                "max_features": 1024,
                "num_blocks": 5,
                "scale_factor": 1,
                "kp_variance": 0.01,
            },
        },
        "discriminator_params": {
            "scales": [1],
            "block_expansion": 32,
            "max_features": 512,
            "num_blocks": 4,
            "sn": False,
            "use_kp": False,
            "kp_variance": 0.01,
        },
    },
    "train_params": {
        "num_epochs": 100,
        "num_repeats": 1,
        "epoch_milestones": [],
        "lr_generator": 2.0e-4,
        "lr_discriminator": 2.0e-4,
        "lr_kp_detector": 2.0e-4,
        "batch_size": 1,
        "scales": [1, 0.5, 0.25, 0.125],
        "checkpoint_freq": 50,
        "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
        "loss_weights": {
            "generator_gan": 0,
            "discriminator_gan": 1,
            "feature_matching": [10, 10, 10, 10],
            "perceptual": [10, 10, 10, 10, 10],
            "equivariance_value": 10,
            "equivariance_jacobian": 10,
        },
        # the reference FOMM trainer clips nothing
        "grad_clip": None,
    },
    "reconstruction_params": {"num_videos": 1000, "format": ".mp4"},
    "animate_params": {
        "num_pairs": 50,
        "format": ".mp4",
        "normalization_params": {"adapt_movement_scale": False, "use_relative_movement": False,
                                 "use_relative_jacobian": False},
    },
    "visualizer_params": copy.deepcopy(TPSMM_SCHEMA["visualizer_params"]),
    "evaluation_params": copy.deepcopy(TPSMM_SCHEMA["evaluation_params"]),
}


# the trainer's own keys (seed, precision, logging, ...) that FOMM does not redefine
for _key, _value in _framework_train_params().items():
    FOMM_SCHEMA["train_params"].setdefault(_key, _value)


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


register_schema("fomm", FOMM_SCHEMA, detect)
register_family("fomm", build_fomm)


def make_fomm_animation(*args, **kwargs):
    """See `modules.fomm.animation.make_fomm_animation` (imported lazily)."""
    from modules.fomm.animation import make_fomm_animation as _impl
    return _impl(*args, **kwargs)


__all__ = ["FOMM_SCHEMA", "build_fomm", "detect", "make_fomm_animation"]
