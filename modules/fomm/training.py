"""FOMM training: the family's training interface used by `train.py` (FOMM Sec. 3.4, reference train.py).

Three Adam optimisers (betas (0.5, 0.999), no weight decay), as the reference:
`optimizer_generator` (generator incl. dense motion), `optimizer_kp_detector`,
`optimizer_discriminator`; MultiStepLR(gamma 0.1) each. One step = generator + keypoint
update on the generator losses and, when `generator_gan != 0`, a discriminator update
on `disc_gan` (the discriminator's gradients from the generator losses are discarded,
as the reference does); the two are stages (`utils.optim.Stage`) the trainer runs in order. No gradient clipping unless `train_params.grad_clip` is set.
The interface (`draws`, `stages`, ...) is train.py's: the trainer back-propagates and steps.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from modules.fomm.losses import FOMMDiscriminatorFull, FOMMGeneratorFull
from modules.fomm.transform import RandomTransform
from utils import optim
from utils.optim import GradClip, Stage


def adam(params, lr: float) -> torch.optim.Adam:
    """The reference FOMM optimiser: Adam(betas (0.5, 0.999)), no weight decay."""
    return optim.adam(params, lr=lr, betas=(0.5, 0.999))


class FOMMTraining:
    """Attributes: `models` (checkpoint name -> module), `optimizers` and `schedulers` (checkpoint names),
    `ddp_modules` (what the trainer wraps in DDP: the generator wrapper, and the discriminator wrapper
    for the adversarial configs)."""

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None = None):
        tp = config["train_params"]
        self.train_params = tp
        self.loop_params = tp
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
        # the discriminator's optimiser never steps without the GAN term: no scheduler for it then
        # (stepping one would only warn "lr_scheduler.step() before optimizer.step()")
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, tp["epoch_milestones"], gamma=0.1)
                           for name, opt in self.optimizers.items()
                           if self.use_gan or name != "optimizer_discriminator"}

    def draws(self, epoch: int, step: int, global_batch: int, rows: slice, device) -> dict[str, Any]:
        """This rank's rows of the step's random transform, drawn for the whole global batch from a
        generator seeded by (seed, epoch, step): N processes draw what one process draws, and a
        resumed run draws what the uninterrupted run drew."""
        tp = self.train_params
        gen = torch.Generator().manual_seed((int(tp["seed"]) * 1_000_003 + epoch) * 1_000_033 + step)
        t = tp["transform_params"]
        full = RandomTransform.sample(global_batch, t["sigma_affine"], t.get("sigma_tps"), t.get("points_tps"),
                                      generator=gen, align_corners=self.full.align_corners)
        theta = full.theta[rows].to(device)
        if full.control_params is None:
            return {"transform": RandomTransform(theta, align_corners=full.align_corners)}
        return {"transform": RandomTransform(theta, full.control_points.to(device), full.control_params[rows].to(device),
                                             align_corners=full.align_corners)}

    def stages(self, epoch: int) -> list[Stage]:
        """The generator stage (generator + keypoint optimisers on the generator losses) and, for GAN configs,
        the discriminator stage on the detached prediction. The trainer zeroes a stage's gradients before
        its backward, so the discriminator's gradients from the generator losses are discarded, as the
        reference does; the generator step before the discriminator pass is the reference's order."""
        clip = ()
        value = self.train_params.get("grad_clip")
        if value:
            clip = tuple(GradClip(tuple(self.models[name].parameters()), value, math.inf)
                         for name in ("kp_detector", "generator"))

        def generator_losses(batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
            losses, shared["generated"] = self.ddp_modules["full"](batch, transform=draws.get("transform"))
            return losses

        def discriminator_losses(batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
            return self.ddp_modules["disc_full"](batch, shared["generated"])

        stages = [Stage(("optimizer_generator", "optimizer_kp_detector"), generator_losses, clip)]
        if self.use_gan:
            stages.append(Stage(("optimizer_discriminator",), discriminator_losses))
        return stages

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        """Networks saved in the published layout (kp_detector, generator, discriminator)."""
        return dict(self.models)
