"""FOMM under DDP: two gloo processes compute the same gradients as one process on the same global batch.

Covers the Jacobian equivariance loss (autograd.grad with create_graph inside the DDP forward), the
adversarial terms and the discriminator's own DDP wrapper. BatchNorm runs in eval mode here: its
statistics are per rank on CPU (SyncBatchNorm is GPU-only).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ddp_harness import batchnorm_eval, ddp_and_single_gradients
from modules import build_models, load_checkpoint
from modules.fomm.training import FOMMTraining
from modules.family import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.yaml")
CHECKPOINT = os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.pth.tar")
GLOBAL_BATCH = 4


class TinyFeatures(nn.Module):
    """A frozen 2-level feature pyramid standing in for VGG-19 (keeps the test fast)."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(4, 3, 3, 3, generator=gen) * 0.3, requires_grad=False)
        self.w2 = nn.Parameter(torch.randn(4, 4, 3, 3, generator=gen) * 0.3, requires_grad=False)

    def forward(self, x):
        a = torch.relu(nn.functional.conv2d(x, self.w1, padding=1))
        return [a, torch.relu(nn.functional.conv2d(nn.functional.avg_pool2d(a, 2), self.w2, padding=1))]


def make_family() -> FOMMTraining:
    config = load_config(CONFIG)
    tp = config["train_params"]
    tp["scales"] = [1]
    tp["loss_weights"]["generator_gan"] = 1
    tp["loss_weights"]["perceptual"] = [10, 10, 0, 0, 0]
    models = build_models(config)
    load_checkpoint(CHECKPOINT, models)
    family = FOMMTraining(models, config, perceptual=TinyFeatures())
    for m in family.models.values():
        m.train()
    batchnorm_eval(family.models.values())
    return family


def batch() -> dict:
    gen = torch.Generator().manual_seed(1)
    return {"source": torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=gen),
            "driving": torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=gen)}


def test_two_process_gradients_equal_single_process(tmp_path):
    ddp, single, losses, _, family = ddp_and_single_gradients(tmp_path, make_family, batch, 0, GLOBAL_BATCH)
    assert set(family.ddp_modules) == {"full", "disc_full"}
    assert {"equivariance_jacobian", "gen_gan", "feature_matching", "disc_gan"} <= set(losses)
    assert set(single) == set(ddp)
    assert any(k.startswith("discriminator.") for k in single) and any(k.startswith("kp_detector.") for k in single)
    # per network, errors relative to its largest gradient (near-zero entries differ by summation order only)
    scale = {}
    for key, grad in single.items():
        top = key.split(".")[0]
        scale[top] = max(scale.get(top, 0.0), grad.abs().max().item())
    for key, grad in single.items():
        err = (grad - ddp[key]).abs().max().item()
        assert err <= 1e-5 * scale[key.split(".")[0]], f"{key}: {err:.3g}"
