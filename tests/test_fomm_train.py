"""FOMM training losses: parity with the reference GeneratorFullModel (fomm_tiny_io.pt 'train' case), and the
adversarial terms, the random transform and align_corners.

Tolerances from the fixture's README: losses rtol 1e-5, gradient norms rtol 1e-3.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from modules import build_models, load_checkpoint
from modules.fomm.losses import FOMMDiscriminatorFull, FOMMGeneratorFull
from modules.fomm.transform import RandomTransform, fomm_tps_radial
from modules.perceptual import Vgg19
from modules.family import load_config
from utils.weight_recipe import fill_module

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
CONFIG = os.path.join(FIXTURES, "fomm_tiny.yaml")
CHECKPOINT = os.path.join(FIXTURES, "fomm_tiny.pth.tar")
MODULES = ("kp_detector", "generator", "generator.dense_motion_network")


@pytest.fixture(scope="module")
def io():
    return torch.load(os.path.join(FIXTURES, "fomm_tiny_io.pt"), weights_only=True)


@pytest.fixture(scope="module")
def recipe_vgg():
    """The fixture's VGG-19: every tensor from the weight recipe under the keys 'vgg.slice<n>.<i>.*'."""
    return fill_module("vgg", Vgg19())


def load_tiny(config=None):
    config = load_config(config or CONFIG)
    models = build_models(config)
    load_checkpoint(CHECKPOINT, models)
    return config, models


@pytest.fixture(scope="module")
def train_case(io, recipe_vgg):
    config, models = load_tiny()
    full = FOMMGeneratorFull(models, config["train_params"], perceptual=recipe_vgg)
    full.train()
    torch.manual_seed(io["train"]["seed"])  # the reference seeds right before forward; Transform is the only draw
    losses, generated = full(io["train"]["batch"])
    return models, losses, generated


def module_params(models, name):
    module = models["generator"].dense_motion_network if name == "generator.dense_motion_network" else models[name]
    return [(f"{name}.{k}", p) for k, p in module.named_parameters()]


def l2(grads) -> float:
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))


def test_losses_match_reference(io, train_case):
    _, losses, _ = train_case
    expected = io["train"]["losses"]
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name


# Images depend on which CPU kernels ran: 0 on the fixture's AVX-512 kernels; with PyTorch's and oneDNN's AVX2
# kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, as on a CPU without AVX-512; a CI machine failed
# at 1e-5) prediction 3.2e-5, occlusion 7e-6, deformed 2.2e-4 (a source warped by keypoints 6e-6 apart), the
# same order with SSE4.1 kernels. A wrong warp or occlusion moves them by 1e-2 or more.
IMAGE_ATOL, DEFORMED_ATOL = 1e-4, 1e-3


def test_generated_outputs_match_reference(io, train_case):
    _, _, generated = train_case
    ref = io["train"]["generated"]
    for key in ("prediction", "occlusion_map", "mask", "transformed_frame"):
        assert (generated[key] - ref[key]).abs().max().item() <= IMAGE_ATOL, key
    assert (generated["deformed"] - ref["deformed"]).abs().max().item() <= DEFORMED_ATOL
    for key in ("kp_source", "kp_driving", "transformed_kp"):
        for part in ("value", "jacobian"):
            assert (generated[key][part] - ref[key][part]).abs().max().item() <= 1e-5, f"{key}.{part}"


@pytest.fixture(scope="module")
def loss_grads(train_case):
    """{loss name: {parameter name: gradient}} over kp_detector + generator, one backward per loss."""
    models, losses, _ = train_case
    named = module_params(models, "kp_detector") + module_params(models, "generator")
    out = {}
    for loss_name, loss in losses.items():
        grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
        out[loss_name] = {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(named, grads)}
    return out


# The fixture's README gives rtol 1e-3 for gradient norms, met on the Xeons the fixture and CI ran on. The
# keypoint gradients go through a temperature-0.1 softmax of a seeded tiny detector, and an AMD EPYC (no AMX:
# other kernels, other summation orders) lands up to 6.6e-3 from the fixture with the untouched code; 1e-2 still fails
# any real change (a dropped loss term or a wrong weight moves these norms by 10% and more).
GRAD_RTOL = 1e-2


def test_gradient_norms_per_module_per_loss(io, train_case, loss_grads):
    models = train_case[0]
    expected = io["train"]["grad_l2_norm_per_module_per_loss"]
    totals = {n: sum(per_loss[n] for per_loss in loss_grads.values()) for n in loss_grads["perceptual"]}
    for loss_name, grads in list(loss_grads.items()) + [("total", totals)]:
        for module in MODULES:
            got = l2([grads[n] for n, _ in module_params(models, module)])
            assert got == pytest.approx(expected[loss_name][module], rel=GRAD_RTOL, abs=1e-9), f"{loss_name} -> {module}"


def test_gradient_norms_per_parameter_of_the_total_loss(io, loss_grads):
    totals = {n: sum(per_loss[n] for per_loss in loss_grads.values()) for n in loss_grads["perceptual"]}
    expected = io["train"]["grad_l2_norm_per_param_total"]
    assert set(expected) == set(totals)
    scale = max(expected.values())
    for name, grad in totals.items():
        got = l2([grad])
        # conv biases in front of BatchNorm have (mathematically) zero gradient: compare those absolutely
        assert abs(got - expected[name]) <= GRAD_RTOL * expected[name] + 1e-6 * scale, name


def test_random_transform_reproduces_recorded_draw(io):
    tp = io["train"]["transform_params"]
    torch.manual_seed(io["train"]["seed"])
    transform = RandomTransform.sample(2, tp["sigma_affine"], tp["sigma_tps"], tp["points_tps"])
    rec = io["train"]["transform"]
    assert torch.equal(transform.theta, rec["theta"])
    assert torch.equal(transform.control_points, rec["control_points"])
    assert torch.equal(transform.control_params, rec["control_params"])
    kp = io["train"]["generated"]["transformed_kp"]["value"]
    assert (transform.warp_coordinates(kp) - io["train"]["transform_warp_of_transformed_kp"]).abs().max() <= 1e-6
    assert (transform.jacobian(kp) - io["train"]["transform_jacobian_at_transformed_kp"]).abs().max() <= 1e-5


def test_fomm_radial_is_l1_based():
    """FOMM's TPS radial term uses the L1 distance, r^2 log(r + 1e-6) (not TPSMM's r^2 log r^2)."""
    theta = torch.eye(2, 3).unsqueeze(0)
    cp = torch.zeros(1, 1, 1, 2)
    w = torch.ones(1, 1, 1)
    t = RandomTransform(theta, cp, w)
    point = torch.tensor([[[0.3, -0.4]]])
    r = torch.tensor(0.7)  # |0.3| + |-0.4|
    expected = point + fomm_tps_radial(r)
    assert torch.allclose(t.warp_coordinates(point), expected, atol=1e-7)
    jac = t.jacobian(point)[0, 0]
    d = float(2 * r * torch.log(r + 1e-6) + r ** 2 / (r + 1e-6))  # d/dr, times sign(x)=+1, sign(y)=-1
    assert torch.allclose(jac, torch.tensor([[1 + d, -d], [d, 1 - d]]), atol=1e-5)


def adversarial_config():
    config = load_config(CONFIG)
    config["train_params"]["loss_weights"]["generator_gan"] = 1
    config["train_params"]["scales"] = [1]
    config["train_params"]["loss_weights"]["perceptual"] = [0, 0, 0, 0, 0]
    return config


def test_adversarial_and_feature_matching_losses():
    config, models = load_tiny(adversarial_config())
    for m in models.values():
        m.train()
    gen_full = FOMMGeneratorFull(models, config["train_params"])
    disc_full = FOMMDiscriminatorFull(models, config["train_params"])
    assert gen_full.perceptual is None  # all perceptual weights 0: no backbone built
    torch.manual_seed(0)
    batch = {"source": torch.rand(2, 3, 64, 64), "driving": torch.rand(2, 3, 64, 64)}
    conv = models["discriminator"].discs["1"].down_blocks[0].conv
    u_before = conv.weight_u.clone()
    losses, generated = gen_full(batch)
    assert set(losses) == {"gen_gan", "feature_matching", "equivariance_value", "equivariance_jacobian"}
    assert not torch.equal(conv.weight_u, u_before)  # spectral norm: one power iteration per call in training
    sum(losses.values()).backward()
    for name, p in models["generator"].named_parameters():
        if name.startswith("final") or name.startswith("up_blocks"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    models["discriminator"].zero_grad(set_to_none=True)
    disc_losses = disc_full(batch, generated)
    assert set(disc_losses) == {"disc_gan"} and torch.isfinite(disc_losses["disc_gan"])
    disc_losses["disc_gan"].backward()
    for name, p in models["discriminator"].named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None or p.grad.abs().sum() > 0 for p in models["generator"].parameters())


def test_discriminator_with_keypoint_heatmaps():
    """use_kp (the -adv configs): K heatmaps are concatenated to the image."""
    from modules.fomm.discriminator import MultiScaleDiscriminator

    disc = MultiScaleDiscriminator(scales=[1], num_channels=3, block_expansion=8, num_blocks=4, max_features=32,
                                   use_kp=True, num_kp=5)
    assert disc.discs["1"].down_blocks[0].conv.in_channels == 8
    kp = {"value": torch.rand(2, 5, 2) * 2 - 1}
    out = disc({"prediction_1": torch.rand(2, 3, 64, 64)}, kp=kp)
    assert out["prediction_map_1"].shape == (2, 1, 2, 2)


def test_align_corners_key_switches_grid_sample_convention(io):
    config = load_config(CONFIG)
    config["model_params"]["common_params"]["align_corners"] = True
    _, models_true = load_tiny(config)
    _, models_false = load_tiny()
    frame = io["animation"]["absolute"]["frames"][0]
    src = io["inputs"]["source"]
    with torch.no_grad():
        kp_source = models_false["kp_detector"].eval()(src)
        out_false = models_false["generator"].eval()(src, kp_driving=frame["kp_norm"], kp_source=kp_source)
        out_true = models_true["generator"].eval()(src, kp_driving=frame["kp_norm"], kp_source=kp_source)
    assert (out_false["prediction"] - frame["prediction"]).abs().max() <= 1e-5  # default = fixture behaviour
    flow = torch.nn.functional.interpolate(out_true["deformation"].permute(0, 3, 1, 2), size=(64, 64),
                                           mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    expected = torch.nn.functional.grid_sample(src, flow, align_corners=True)
    assert torch.allclose(out_true["deformed"], expected, atol=1e-6)
    assert (out_true["prediction"] - out_false["prediction"]).abs().max() > 1e-3
