"""Training losses and per-module gradient norms match the reference (tests/fixtures/tiny_io.pt 'train/*')."""
from __future__ import annotations

import pytest
import torch

from modules import build_models
from modules.geometry import TPSParams, make_coordinate_grid
from modules.perceptual import Vgg19
from modules.tpsmm_training import TPSMMFullModel, dropout_probability
from modules.family import load_config
from utils.weight_recipe import fill_models, fill_module

CASES = ["no_dropout", "dropout_after_bg_start", "dropout_epoch1"]


def build_full(tiny_config_path):
    config = load_config(tiny_config_path)
    models = fill_models(build_models(config))
    vgg = fill_module("vgg", Vgg19())
    full = TPSMMFullModel(models["kp_detector"], models["dense_motion_network"], models["inpainting_network"],
                          models["bg_predictor"], vgg, config["train_params"])
    full.train()
    return full, models


# Gradient norms: in float32 they are only determined to a few 1e-3 (for
# 'dropout_after_bg_start', kp_detector/perceptual: reference 4161.95, ours 4167.12 in float32, 4153.49 when
# the same computation runs in float64), because dropped TPS channels can leave a masked-softmax partition
# dominated by its +1e-6 term. Losses and keypoints match far tighter (1e-3 relative, 1e-4 absolute).
# Across CPU kernels they differ more: kp_detector/perceptual of 'no_dropout' is 6.8e-3 off with AVX2 kernels
# and 4.3e-3 with SSE4.1 kernels (the largest of all cases and modules), so 2e-2; a dropped loss term or a
# detached path is off by 10% or more.
GRAD_RTOL = 2e-2
# The predicted image of this untrained tiny model depends on which CPU kernels ran: 9.5e-6 from the fixture
# with AVX-512 kernels, 1.4e-4 with PyTorch's and oneDNN's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2
# ONEDNN_MAX_CPU_ISA=AVX2, as on a CPU without AVX-512; a CI machine failed at 1e-4), 2.5e-4 with SSE4.1 kernels,
# while the keypoints stay within 2.2e-6 everywhere. A wrong warp or occlusion moves it by 1e-2 or more.
PREDICTION_ATOL = 1e-3


@pytest.mark.parametrize("case,replay", [(c, False) for c in CASES] + [("dropout_after_bg_start", True)],
                         ids=[f"{c}-seeded" for c in CASES] + ["dropout_after_bg_start-recorded-draws"])
def test_losses_and_gradients(tiny_io, tiny_config_path, case, replay):
    data = tiny_io["train"][case]
    full, models = build_full(tiny_config_path)
    draws = data["rng_draws"]
    p = dropout_probability(data["epoch"], full.train_params)
    if "dropout_p" in draws:
        assert p == pytest.approx(draws["dropout_p"])
    else:
        assert p is None
    kwargs = {}
    if replay:
        if "dropout_rand" in draws:
            keep = (draws["dropout_rand"] < (1 - p)).float()
            keep[:, 0] = 1
            kwargs["dropout_keep"] = keep
        kwargs["transform"] = TPSParams(draws["tps_random_theta"], make_coordinate_grid((5, 5)).view(1, -1, 2),
                                        draws["tps_random_control_params"])
    torch.manual_seed(data["forward_seed"])
    losses, generated = full(data["source"], data["driving"], data["epoch"], **kwargs)
    assert set(losses) == set(data["losses"])
    for name, ref in data["losses"].items():
        assert losses[name].item() == pytest.approx(ref, rel=1e-3), name
    assert (generated["prediction"] - data["prediction"]).abs().max() < PREDICTION_ATOL
    assert (generated["kp_driving"]["fg_kp"] - data["kp_driving"]).abs().max() < 1e-4
    assert (generated["transformed_kp"]["fg_kp"] - data["transformed_kp"]).abs().max() < 1e-4

    for name, per_module in data["grad_l2_norm_per_module_per_loss"].items():
        for m in models.values():
            m.zero_grad(set_to_none=True)
        losses[name].backward(retain_graph=True)
        for module_name, ref in per_module.items():
            grads = [q.grad.flatten() for q in models[module_name].parameters() if q.grad is not None]
            norm = torch.cat(grads).double().norm().item() if grads else 0.0
            assert norm == pytest.approx(ref, rel=GRAD_RTOL, abs=1e-6), (name, module_name)
