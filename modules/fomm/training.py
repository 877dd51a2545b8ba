"""FOMM training: the family's training interface used by `train.py` (FOMM Sec. 3.4, reference train.py).

Three Adam optimisers (betas (0.5, 0.999), no weight decay), as the reference:
`optimizer_generator` (generator incl. dense motion), `optimizer_kp_detector`,
`optimizer_discriminator`; MultiStepLR(gamma 0.1) each. One step = generator + keypoint
update on the generator losses, then, when `generator_gan != 0`, a discriminator update
on `disc_gan` (the discriminator's gradients from the generator update are discarded
first, as the reference does). No gradient clipping unless `train_params.grad_clip` is set.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from modules.fomm.losses import FOMMDiscriminatorFull, FOMMGeneratorFull


def adam(params, lr: float) -> torch.optim.Adam:
    """The reference FOMM optimiser: Adam(betas (0.5, 0.999)), no weight decay."""
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))


class FOMMTraining:
    """Attributes: `models` (checkpoint name -> module), `optimizers` and `schedulers` (checkpoint names),
    `ddp_modules` (what the trainer wraps in DDP: the generator wrapper, and the discriminator wrapper
    for the adversarial configs)."""

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None = None):
        tp = config["train_params"]
        self.train_params = tp
        self.models = {name: models[name] for name in ("kp_detector", "generator", "discriminator")}
        self.use_gan = tp["loss_weights"]["generator_gan"] != 0
        self.full = FOMMGeneratorFull(self.models, tp, perceptual=perceptual)
        self.ddp_modules: dict[str, nn.Module] = {"full": self.full}
        if self.use_gan:
            self.disc_full = FOMMDiscriminatorFull(self.models, tp)
            self.ddp_modules["disc_full"] = self.disc_full
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "optimizer_generator": adam(self.models["generator"].parameters(), tp["lr_generator"]),
            "optimizer_discriminator": adam(self.models["discriminator"].parameters(), tp["lr_discriminator"]),
            "optimizer_kp_detector": adam(self.models["kp_detector"].parameters(), tp["lr_kp_detector"]),
        }
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, tp["epoch_milestones"], gamma=0.1)
                           for name, opt in self.optimizers.items()}

    def step(self, batch: dict, epoch: int, autocast) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One optimisation step; returns the (detached) weighted losses and the generated tensors."""
        with autocast():
            losses, generated = self.ddp_modules["full"](batch)
        loss = sum(v.mean() for v in losses.values())
        assert torch.isfinite(loss), {k: float(v) for k, v in losses.items()}
        loss.backward()
        clip = self.train_params.get("grad_clip")
        if clip:
            for name in ("kp_detector", "generator"):
                torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), max_norm=clip, norm_type=math.inf)
        for name in ("optimizer_generator", "optimizer_kp_detector"):
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)
        out = {k: v.detach().mean() for k, v in losses.items()}
        if self.use_gan:
            self.optimizers["optimizer_discriminator"].zero_grad(set_to_none=True)
            with autocast():
                disc_losses = self.ddp_modules["disc_full"](batch, generated)
            disc_loss = sum(v.mean() for v in disc_losses.values())
            assert torch.isfinite(disc_loss), {k: float(v) for k, v in disc_losses.items()}
            disc_loss.backward()
            self.optimizers["optimizer_discriminator"].step()
            self.optimizers["optimizer_discriminator"].zero_grad(set_to_none=True)
            out.update({k: v.detach().mean() for k, v in disc_losses.items()})
        return out, generated

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        """Networks saved in the published layout (kp_detector, generator, discriminator)."""
        return dict(self.models)

    def checkpoint_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self.optimizers)
