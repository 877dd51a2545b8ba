"""FOMMTraining (the family's training interface): optimisers, one step, GAN configs, exact resume."""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from modules import build_models, load_checkpoint, save_checkpoint
from modules.fomm.training import FOMMTraining
from modules.family import load_config
from train import TrainStep

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
CONFIG = os.path.join(FIXTURES, "fomm_tiny.yaml")
CHECKPOINT = os.path.join(FIXTURES, "fomm_tiny.pth.tar")


class TinyFeatures(nn.Module):
    """A frozen 5-level feature pyramid standing in for VGG-19 (keeps the test fast)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(5)])
        self.requires_grad_(False)

    def forward(self, x):
        outs = []
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x if i == 0 else nn.functional.avg_pool2d(x, 2)))
            outs.append(x)
        return outs


def tiny_config(gan: bool = False, lr_kp: float = 2.0e-4) -> dict:
    config = load_config(CONFIG)
    tp = config["train_params"]
    tp["loss_weights"]["generator_gan"] = 1 if gan else 0
    tp["lr_kp_detector"] = lr_kp
    return config


def setup(config):
    models = build_models(config)
    load_checkpoint(CHECKPOINT, models)
    for m in models.values():
        m.train()
    return models, FOMMTraining(models, config, perceptual=TinyFeatures())


def step(training: FOMMTraining, data: dict, epoch: int) -> tuple[dict, dict]:
    """One trainer step (the random transform from the global RNG: no draws)."""
    return TrainStep(training, contextlib.nullcontext)(data, epoch, {})


def batch(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"source": torch.rand(2, 3, 64, 64, generator=g), "driving": torch.rand(2, 3, 64, 64, generator=g)}


def snapshot(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


def test_optimizers_follow_the_reference():
    config = tiny_config()
    _, training = setup(config)
    assert set(training.optimizers) == {"optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector"}
    for opt in training.optimizers.values():
        group = opt.param_groups[0]
        assert group["betas"] == (0.5, 0.999) and group["weight_decay"] == 0 and group["lr"] == 2.0e-4
    assert set(training.checkpoint_models(0)) == {"kp_detector", "generator", "discriminator"}
    assert "disc_full" not in training.ddp_modules  # generator_gan 0: no discriminator update


def test_step_without_gan_updates_generator_and_keypoints_only():
    models, training = setup(tiny_config())
    before = {k: snapshot(m) for k, m in models.items()}
    torch.manual_seed(0)
    losses, generated = step(training, batch(1), 0)
    assert set(losses) == {"perceptual", "equivariance_value", "equivariance_jacobian"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert generated["prediction"].shape == (2, 3, 64, 64)
    assert changed(before["generator"], models["generator"])
    assert changed(before["kp_detector"], models["kp_detector"])
    assert not changed(before["discriminator"], models["discriminator"])


def test_step_with_gan_trains_the_discriminator_and_lr_zero_freezes_keypoints():
    """The -adv configs: generator_gan 1, lr_kp_detector 0."""
    models, training = setup(tiny_config(gan=True, lr_kp=0.0))
    before = {k: snapshot(m) for k, m in models.items()}
    torch.manual_seed(0)
    losses, _ = step(training, batch(1), 0)
    assert {"gen_gan", "feature_matching", "disc_gan"} <= set(losses)
    assert changed(before["discriminator"], models["discriminator"])
    assert changed(before["generator"], models["generator"])
    kp_params = dict(models["kp_detector"].named_parameters())
    assert all(torch.equal(before["kp_detector"][k], p) for k, p in kp_params.items())


def test_resume_from_checkpoint_is_exact(tmp_path):
    """Two steps straight == one step, save (weights, optimisers, spectral-norm vectors), load, one step."""
    config = tiny_config(gan=True)
    models, training = setup(config)
    torch.manual_seed(0)
    step(training, batch(0), 0)
    path = save_checkpoint(tmp_path / "00000000-checkpoint.pth.tar", training.checkpoint_models(0),
                           training.optimizers, epoch=0)
    torch.manual_seed(1)
    step(training, batch(1), 0)

    resumed, training_b = setup(config)
    rest = load_checkpoint(path, resumed, training_b.optimizers)
    assert rest["epoch"] == 0
    torch.manual_seed(1)
    step(training_b, batch(1), 0)
    for name, module in resumed.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, models[name].state_dict()[key]), f"{name}.{key}"
