"""The MRAA config schema: every key of the published configs (config/mraa/*.yaml, from
snap-research/articulated-animation) with types, defaults and ranges, plus the trainer's own keys.

A key left out takes vox256's value; `pad` (absent from vox256) the published region predictor's
default 3, and `region_var` (in no published config) its default 0.01.
"""
from __future__ import annotations

import copy
from typing import Any

from modules.tpsmm.config import trainer_loop_params
from utils.config import TRAINER_PARAMS, Bool, Float, Int, List, Str, shared_sections

N = dict(low=1)  # a count: at least 1
W = dict(low=0.0)  # a weight: not negative
BG_TYPES = ("zero", "shift", "affine", "perspective")


def _visualizer() -> dict[str, Any]:
    section = shared_sections()["visualizer_params"]
    section["region_bg_color"] = List(Float(None, low=0.0, high=1.0), [1, 1, 1], length=3, compat=True,
                                      doc="the published visualizer's background colour of the region map")
    return section


MRAA_SCHEMA: dict[str, Any] = {
    **shared_sections(),
    "visualizer_params": _visualizer(),
    "model_params": {
        "num_regions": Int(10, **N),
        "num_channels": Int(3, **N),
        "estimate_affine": Bool(True, doc="regions carry an affine (PCA or regressed); false: shifts only"),
        "revert_axis_swap": Bool(True, doc="multiply each region's A_k by sign(A_k[0,0]) (MRAA code)"),
        "bg_predictor_params": {
            "block_expansion": Int(32, **N),
            "max_features": Int(1024, **N),
            "num_blocks": Int(5, **N),
            "bg_type": Str("affine", choices=BG_TYPES),
        },
        "region_predictor_params": {
            "temperature": Float(0.1, above=0.0),
            "block_expansion": Int(32, **N),
            "max_features": Int(1024, **N),
            "scale_factor": Float(0.25, above=0.0, high=1.0),
            "num_blocks": Int(5, **N),
            "pca_based": Bool(True, doc="affine by PCA of the heatmap (MRAA Sec. 3.1); false: regressed"),
            "pad": Int(3, low=0, doc="padding of the 7x7 region conv (0: smaller heatmaps)"),
            "fast_svd": Bool(False, compat=True,
                             doc="published switch to torch_batch_svd; ours is the closed form on the device"),
        },
        "generator_params": {
            "block_expansion": Int(64, **N),
            "max_features": Int(512, **N),
            "num_down_blocks": Int(2, **N),
            "num_bottleneck_blocks": Int(6, low=0),
            "skips": Bool(True, doc="warp and blend every encoder level into the decoder"),
            "pixelwise_flow_predictor_params": {
                "block_expansion": Int(64, **N),
                "max_features": Int(1024, **N),
                "num_blocks": Int(5, **N),
                "scale_factor": Float(0.25, above=0.0, high=1.0),
                "use_deformed_source": Bool(True),
                "use_covar_heatmap": Bool(True),
                "estimate_occlusion_map": Bool(True),
                "region_var": Float(0.01, above=0.0, doc="variance of the isotropic heatmaps (no covar heatmap)"),
            },
        },
        "avd_network_params": {"id_bottle_size": Int(64, **N), "pose_bottle_size": Int(64, **N)},
    },
    "train_params": {
        **trainer_loop_params(),
        "lr": Float(2.0e-4, low=0.0, doc="one Adam over generator, region predictor and bg predictor"),
        "use_sync_bn": Bool(False, compat=True, doc="published name; the trainer's switch is sync_bn"),
        "loss_weights": {
            "perceptual": List(Float(None, **W), [10, 10, 10, 10, 10]),
            "equivariance_shift": Float(10, **W),
            "equivariance_affine": Float(10, **W),
        },
        # --- our additions (not in the published configs) ---
        **copy.deepcopy(TRAINER_PARAMS),
        "grad_clip": Float(None, above=0.0, nullable=True, doc="infinity-norm clipping; null (the published): off"),
    },
    "train_avd_params": {
        "num_epochs": Int(30, low=1),
        "num_repeats": Int(2000, **N),
        "batch_size": Int(256, **N),
        "dataloader_workers": Int(0, low=0),
        "checkpoint_freq": Int(50, **N),
        "epoch_milestones": List(Int(None, low=0), [20, 25]),
        "lr": Float(1.0e-3, low=0.0),
        "lambda_shift": Float(1, **W),
        "lambda_affine": Float(1, **W),
        "random_scale": Float(0.25, **W),
        # --- our additions ---
        "max_steps_per_epoch": Int(None, **N, nullable=True),
        "region_predictor_train_mode": Bool(False, doc="true: the frozen region predictor's BatchNorm uses batch "
                                                       "statistics and updates its running stats, as the published "
                                                       "train_avd.py (never put in eval mode); false: eval mode"),
    },
    "reconstruction_params": {"num_videos": Int(1000, **N), "format": Str(".mp4")},
    "animate_params": {
        "num_pairs": Int(50, **N),
        "format": Str(".mp4"),
        "mode": Str("avd", choices=("standard", "relative", "avd")),
    },
}
