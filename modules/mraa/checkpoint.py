"""MRAA checkpoints in the published layouts (snap-research/articulated-animation `Logger.save_cpk`).

Reconstruction stage: generator, bg_predictor, region_predictor, optimizer_reconstruction, epoch_reconstruction.
AVD stage (the layout of the released files): the same networks plus avd_network, optimizer_avd and epoch_avd,
where the published `train_avd.py` stored its AVD optimizer under `optimizer_reconstruction` as well. Both load
through `modules.load_checkpoint` (strict keys and shapes for every network given).
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

from modules.checkpoint import save_checkpoint

NETWORKS = ("generator", "bg_predictor", "region_predictor")


def avd_optimizer(avd_network: nn.Module, lr: float = 1.0e-3, milestones: tuple[int, ...] = (20, 25)):
    """The published AVD stage's Adam (betas 0.5, 0.999) with its MultiStepLR (which sets `initial_lr`)."""
    optimizer = torch.optim.Adam(avd_network.parameters(), lr=lr, betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma=0.1)
    return optimizer, scheduler


def save_published_checkpoint(path: str | os.PathLike, models: Mapping[str, nn.Module], epoch_avd: int,
                              optimizer: torch.optim.Optimizer | None = None) -> str:
    """Write `models` in the published AVD-stage layout (key order of the released files):
    generator, bg_predictor, region_predictor, optimizer_reconstruction, avd_network, optimizer_avd, epoch_avd.

    `optimizer` is the AVD stage's (a fresh `avd_optimizer` when None); as in the published files it is stored
    under both optimizer names. Tests build the parity fixture's checkpoint with it.
    """
    if optimizer is None:
        optimizer, _ = avd_optimizer(models["avd_network"])
    state = optimizer.state_dict()
    ordered = {name: models[name] for name in NETWORKS}
    path = save_checkpoint(path, ordered, optimizer_reconstruction=state,
                           avd_network=models["avd_network"].state_dict(), optimizer_avd=state, epoch_avd=epoch_avd)
    return path
