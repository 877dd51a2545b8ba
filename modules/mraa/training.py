"""MRAA training (Siarohin et al., CVPR 2021): the reconstruction stage and the AVD stage (Sec. 3.3).

Both are training classes of the framework's one trainer (the interface is in train.py's docstring):

- `MRAATraining` (`run.py --mode train`): generator, region predictor and background predictor learn
  together under ONE Adam (betas (0.5, 0.999), no weight decay, the parameters in the published order
  generator, region_predictor, bg_predictor), saved as `optimizer_reconstruction` with
  `epoch_reconstruction` (the published layout). Losses, as `{name: weighted scalar}`: the perceptual
  pyramid (VGG-19 relu1_1..relu5_1, as FOMM and TPSMM), `equivariance_shift` and `equivariance_affine`
  under FOMM's random thin-plate transform (`modules.fomm.transform.RandomTransform`: L1 radial
  distance, reflection padding). No adversarial term, no gradient clipping (unless `grad_clip` is set).
- `MRAAAVDTraining` (`run.py --mode train_avd`): the AVD network learns to rebuild the driving regions
  from the source's regions (identity) and randomly rescaled driving regions (pose) of the frozen region
  predictor; `rec_shift` and `rec_affine` against the unscaled pose. Its optimizer is `optimizer_avd`,
  its epoch `epoch_avd`.

Where this differs from the published code (the fixture decides the numbers; see docs/families.md):
the AVD stage stores its optimizer only under `optimizer_avd` (the published train_avd.py also wrote it
over `optimizer_reconstruction`, so a reconstruction run could not resume from it); the region predictor
is in eval mode during the AVD stage, so its BatchNorm uses and keeps its running statistics
(`train_avd_params.region_predictor_train_mode: true` reproduces the published train mode, whose batch
statistics the parity test needs); nothing calls `.cuda()`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from modules.blocks import ImagePyramid
from modules.fomm.losses import perceptual_pyramid_loss
from modules.fomm.transform import RandomTransform
from utils import optim
from utils.optim import GradClip, Stage


def draw_generator(seed: int, epoch: int, step: int, salt: int = 1_000_003) -> torch.Generator:
    """The CPU generator of one step's draws: a pure function of (seed, epoch, step), so N ranks and a
    resumed run draw what one uninterrupted process draws."""
    return torch.Generator().manual_seed((int(seed) * salt + epoch) * 1_000_033 + step)


def equivariance_affine_residual(driving_affine: torch.Tensor, transformed_affine: torch.Tensor,
                                 jacobian: torch.Tensor, revert_axis_swap: bool) -> torch.Tensor:
    """M = inv(A_d) J(shift_t) A_t per region (B, K, 2, 2), times sign(M[0,0]) with `revert_axis_swap`.

    A_d: the driving frame's region affines, A_t: those of the transformed frame, J: the random
    transform's Jacobian at the transformed frame's shifts. M is the identity when the region
    predictor is equivariant; the sign repairs a PCA axis flip of the whole matrix, as the published
    loss does when the generator's flow predictor reverts axis swaps.
    """
    with torch.autocast(driving_affine.device.type, enabled=False):  # 2x2 inverses in fp32
        warped = torch.matmul(jacobian.float(), transformed_affine.float())  # B x K x 2 x 2
        value = torch.matmul(torch.inverse(driving_affine.float()), warped)  # B x K x 2 x 2
        if revert_axis_swap:
            value = value * torch.sign(value[..., 0:1, 0:1])
    return value


class MRAAFullModel(nn.Module):
    """Region predictor + background predictor + generator in one forward, with the weighted losses.

    `forward(source, driving, transform=None) -> ({name: weighted scalar}, generated)`; `transform` (a
    `RandomTransform`) replays a draw, else one is drawn from the global RNG as the published code does.
    """

    def __init__(self, region_predictor: nn.Module, bg_predictor: nn.Module, generator: nn.Module,
                 train_params: Mapping[str, Any], revert_axis_swap: bool, num_channels: int = 3,
                 perceptual: nn.Module | None = None):
        super().__init__()
        self.region_predictor = region_predictor
        self.bg_predictor = bg_predictor
        self.generator = generator
        self.train_params = train_params
        self.loss_weights = train_params["loss_weights"]
        self.scales = list(train_params["scales"])
        self.revert_axis_swap = bool(revert_axis_swap)
        self.pyramid = ImagePyramid(self.scales, num_channels, mode="stride")  # anti-alias, every 1/s-th pixel
        self.perceptual = None
        if sum(self.loss_weights["perceptual"]) != 0:
            if perceptual is None:
                from modules.perceptual import build_perceptual

                perceptual = build_perceptual(train_params["perceptual_backbone"], train_params["perceptual_weights"],
                                              seed=int(train_params["seed"]))
            self.perceptual = perceptual.requires_grad_(False)

    def sample_transform(self, batch_size: int, generator: torch.Generator | None = None) -> RandomTransform:
        t = self.train_params["transform_params"]
        return RandomTransform.sample(batch_size, t["sigma_affine"], t["sigma_tps"], t["points_tps"],
                                      generator=generator)

    def forward(self, source: torch.Tensor, driving: torch.Tensor,
                transform: RandomTransform | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        weights = self.loss_weights
        source_params = self.region_predictor(source)
        driving_params = self.region_predictor(driving)
        bg_params = self.bg_predictor(source, driving)  # B x 3 x 3
        generated = self.generator(source, source_region_params=source_params,
                                   driving_region_params=driving_params, bg_params=bg_params)
        generated.update({"source_region_params": source_params, "driving_region_params": driving_params,
                          "bg_params": bg_params,
                          # region centres drawn on the trainer's image grid
                          "kp_source": {"value": source_params["shift"]},
                          "kp_driving": {"value": driving_params["shift"]}})
        losses: dict[str, torch.Tensor] = {}
        if self.perceptual is not None:
            losses["perceptual"] = perceptual_pyramid_loss(self.perceptual, self.pyramid(generated["prediction"]),
                                                           self.pyramid(driving), self.scales, weights["perceptual"])

        if weights["equivariance_shift"] + weights["equivariance_affine"] != 0:
            if transform is None:
                transform = self.sample_transform(driving.shape[0])
            transformed_frame = transform.transform_frame(driving)  # B x C x H x W
            transformed_params = self.region_predictor(transformed_frame)
            generated["transformed_frame"] = transformed_frame
            generated["transformed_region_params"] = transformed_params
            if weights["equivariance_shift"] != 0:
                warped = transform.warp_coordinates(transformed_params["shift"])  # B x K x 2
                value = (driving_params["shift"] - warped).abs().mean()
                losses["equivariance_shift"] = weights["equivariance_shift"] * value
            if weights["equivariance_affine"] != 0:
                jacobian = transform.jacobian(transformed_params["shift"])  # B x K x 2 x 2
                value = equivariance_affine_residual(driving_params["affine"], transformed_params["affine"],
                                                     jacobian, self.revert_axis_swap)
                eye = torch.eye(2, dtype=value.dtype, device=value.device).view(1, 1, 2, 2)
                losses["equivariance_affine"] = weights["equivariance_affine"] * (eye - value).abs().mean()
        return losses, generated


RECONSTRUCTION_NETWORKS = ("generator", "region_predictor", "bg_predictor")  # the published optimizer's order


class MRAATraining:
    """The MRAA family's reconstruction stage (see train.py for the interface).

    Attributes: `models` (generator, region_predictor, bg_predictor: the published checkpoint names),
    `optimizers` {'optimizer_reconstruction'}, `schedulers` (MultiStepLR, gamma 0.1, on
    `epoch_milestones`), `ddp_modules` {'full': MRAAFullModel}. `avd_stage` is the training class of
    `run.py --mode train_avd` for this family.
    """

    epoch_key = "epoch_reconstruction"
    avd_stage: type  # MRAAAVDTraining, set below its definition

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None = None):
        tp = config["train_params"]
        mp = config["model_params"]
        self.train_params = tp
        self.loop_params = tp
        self.models = {name: models[name] for name in RECONSTRUCTION_NETWORKS}
        self.full = MRAAFullModel(models["region_predictor"], models["bg_predictor"], models["generator"], tp,
                                  revert_axis_swap=mp["revert_axis_swap"], num_channels=mp["num_channels"],
                                  perceptual=perceptual)
        self.ddp_modules: dict[str, nn.Module] = {"full": self.full}
        params = [p for name in RECONSTRUCTION_NETWORKS for p in self.models[name].parameters()]
        opt = optim.adam(params, lr=tp["lr"], betas=(0.5, 0.999))
        self.optimizers: dict[str, torch.optim.Optimizer] = {"optimizer_reconstruction": opt}
        self.schedulers = {"optimizer_reconstruction": torch.optim.lr_scheduler.MultiStepLR(
            opt, tp["epoch_milestones"], gamma=0.1)}

    def draws(self, epoch: int, step: int, global_batch: int, rows: slice, device) -> dict[str, Any]:
        """This rank's rows of the step's random transform (theta, then the TPS weights, for the global batch)."""
        full = self.full.sample_transform(global_batch, draw_generator(self.train_params["seed"], epoch, step))
        return {"transform": RandomTransform(full.theta[rows].to(device), full.control_points.to(device),
                                             full.control_params[rows].to(device))}

    def stages(self, epoch: int) -> list[Stage]:
        """One stage: every loss back-propagated once, `optimizer_reconstruction` steps."""
        clip = ()
        if self.train_params["grad_clip"]:
            clip = tuple(GradClip(tuple(self.models[name].parameters()), self.train_params["grad_clip"], math.inf)
                         for name in RECONSTRUCTION_NETWORKS)

        def losses(batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
            out, shared["generated"] = self.ddp_modules["full"](batch["source"], batch["driving"],
                                                                transform=draws.get("transform"))
            return out

        return [Stage(("optimizer_reconstruction",), losses, clip)]

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        """Networks saved in the published layout."""
        return dict(self.models)


def random_scale_regions(params: Mapping[str, torch.Tensor], theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Region shifts and affines left-multiplied by diag(theta) per sample (the AVD stage's pose
    augmentation, MRAA Sec. 3.3). theta (B, 2): the two scale factors of each sample."""
    scale = torch.diag_embed(theta.to(params["shift"])).unsqueeze(1)  # B x 1 x 2 x 2
    shift = torch.matmul(scale, params["shift"].unsqueeze(-1)).squeeze(-1)  # B x K x 2
    affine = torch.matmul(scale, params["affine"])  # B x K x 2 x 2
    return {"shift": shift, "affine": affine}


class MRAAAVDTraining:
    """The MRAA AVD stage as a training class: `avd_network(id=source regions, pose=scaled driving regions)`
    rebuilds the driving regions; the region predictor is frozen.

    Loop settings come from `train_avd_params` (seed, logging from `train_params`; fp32). Checkpoints are
    `avd-checkpoint.pth.tar` (+ `avd-%08d-checkpoint.pth.tar`) in the published layout: generator,
    bg_predictor, region_predictor, avd_network, `optimizer_avd`, `epoch_avd`, with the main run's
    `optimizer_reconstruction` and `epoch_reconstruction` kept as they were (not overwritten by the AVD
    optimizer, as the published train_avd.py did).
    """

    uses_perceptual = False
    checkpoint_prefix = "avd-"
    epoch_key = "epoch_avd"
    log_tag = "avd"

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None = None):
        ap = config["train_avd_params"]
        tp = config["train_params"]
        self.avd_params = ap
        self.loop_params = dict(ap, seed=tp["seed"], precision="fp32", channels_last=False,
                                log_freq=tp["log_freq"], image_freq=tp["image_freq"])
        self.models = dict(models)
        self.region_predictor = models["region_predictor"].requires_grad_(False)
        self.region_predictor_train_mode = bool(ap["region_predictor_train_mode"])
        self.ddp_modules: dict[str, nn.Module] = {"avd": models["avd_network"]}
        opt = optim.adam(models["avd_network"].parameters(), lr=ap["lr"], betas=(0.5, 0.999))
        self.optimizers = {"optimizer_avd": opt}
        self.schedulers = {"optimizer_avd": torch.optim.lr_scheduler.MultiStepLR(opt, ap["epoch_milestones"],
                                                                                  gamma=0.1)}
        self._kept: dict[str, Any] = {}

    def draws(self, epoch: int, step: int, global_batch: int, rows: slice, device) -> dict[str, Any]:
        """This rank's rows of the step's scale factors theta = U[0, 1) 2s + (1 - s), (global batch, 2)."""
        s = float(self.avd_params["random_scale"])
        uniform = torch.rand(global_batch, 2, generator=draw_generator(self.loop_params["seed"], epoch, step, 104729))
        return {"scale": (uniform * 2 * s + (1 - s))[rows].to(device)}

    def regions(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Region parameters of the frozen region predictor (eval mode unless `region_predictor_train_mode`)."""
        self.region_predictor.train(self.region_predictor_train_mode)
        with torch.no_grad():
            return self.region_predictor(frames)

    def stages(self, epoch: int) -> list[Stage]:
        ap = self.avd_params

        def losses(batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
            identity = self.regions(batch["source"])
            pose = self.regions(batch["driving"])
            scaled = random_scale_regions(pose, draws["scale"])
            rec = self.ddp_modules["avd"](identity, scaled)
            return {"rec_shift": ap["lambda_shift"] * (pose["shift"] - rec["shift"]).abs().mean(),
                    "rec_affine": ap["lambda_affine"] * (pose["affine"] - rec["affine"]).abs().mean()}

        return [Stage(("optimizer_avd",), losses)]

    def on_resume(self, rest: dict) -> None:
        """Keep the main run's entries (its optimizer, epoch and config) to write them back unchanged."""
        self._kept = {k: v for k, v in rest.items()
                      if k not in ("epoch_avd", "resume_step", "schedulers", "grad_scaler", "config")}

    def checkpoint_extras(self) -> dict[str, Any]:
        return dict(self._kept)

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        return dict(self.models)


MRAATraining.avd_stage = MRAAAVDTraining
