"""MRAA under DDP: two gloo processes compute the same gradients as one process on the same global batch.

Covers the region predictor called three times in one DDP forward (source, driving, transformed frame), the
affine equivariance loss (autograd.grad with create_graph inside the DDP forward) and the AVD stage's own DDP
wrapper. BatchNorm runs in eval mode here: its statistics are per rank on CPU (SyncBatchNorm is GPU-only).
"""
from __future__ import annotations

import os

import torch

from ddp_harness import batchnorm_eval, ddp_and_single_gradients
from modules import build_models, load_config
from modules.mraa.training import MRAAAVDTraining, MRAATraining
from modules.mraa.weight_recipe import fill_mraa_models
from test_fomm_ddp import TinyFeatures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "fixtures", "mraa_tiny.yaml")
GLOBAL_BATCH = 4


def tiny_config() -> dict:
    config = load_config(CONFIG)
    tp = config["train_params"]
    tp["scales"] = [1]
    tp["loss_weights"]["perceptual"] = [10, 10, 0, 0, 0]
    return config


def make_family() -> MRAATraining:
    config = tiny_config()
    models = fill_mraa_models(build_models(config))
    family = MRAATraining(models, config, perceptual=TinyFeatures())
    for m in family.models.values():
        m.train()
    batchnorm_eval(family.models.values())
    return family


def make_avd_family() -> MRAAAVDTraining:
    config = tiny_config()
    models = fill_mraa_models(build_models(config))
    family = MRAAAVDTraining(models, config)
    models["avd_network"].train()
    batchnorm_eval([models["avd_network"]])
    return family


def batch() -> dict:
    gen = torch.Generator().manual_seed(1)
    return {"source": torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=gen),
            "driving": torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=gen)}


def assert_same(single: dict, ddp: dict) -> None:
    """Per network, errors relative to its largest gradient (near-zero entries differ by summation order only)."""
    assert set(single) == set(ddp) and single
    scale: dict[str, float] = {}
    for key, grad in single.items():
        top = key.split(".")[0]
        scale[top] = max(scale.get(top, 0.0), grad.abs().max().item())
    for key, grad in single.items():
        err = (grad - ddp[key]).abs().max().item()
        assert err <= 1e-5 * scale[key.split(".")[0]], f"{key}: {err:.3g}"


def test_two_process_gradients_equal_single_process(tmp_path):
    ddp, single, losses, _, family = ddp_and_single_gradients(tmp_path, make_family, batch, 0, GLOBAL_BATCH)
    assert set(family.ddp_modules) == {"full"}
    assert set(losses) == {"perceptual", "equivariance_shift", "equivariance_affine"}
    assert {key.split(".")[0] for key in single} == {"generator", "region_predictor", "bg_predictor"}
    assert_same(single, ddp)


def test_avd_stage_two_process_gradients_equal_single_process(tmp_path):
    ddp, single, losses, _, _ = ddp_and_single_gradients(tmp_path, make_avd_family, batch, 0, GLOBAL_BATCH)
    assert set(losses) == {"rec_shift", "rec_affine"}
    assert {key.split(".")[0] for key in single} == {"avd_network"}
    assert_same(single, ddp)
