"""TPSMM training: the full model returning weighted losses (TPSMM Sec. 3.5) and its optimisation step.

`TPSMMFullModel.forward` returns `{loss name: weighted scalar}` plus the generated
tensors; the trainer only sums them. `TPSMMTraining` is the family's training
class used by `train.py` (the interface is in train.py's docstring): networks,
optimizers, schedulers, the random draws and the stages of a step. `AVDTraining`
is the AVD stage (MRAA Sec. 3.3) through the same trainer.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import ImagePyramid
from modules.geometry import TPSParams, random_tps, tps_grid_random_mode, tps_warp_random_mode
from utils import optim
from utils.optim import GradClip, Stage


def dropout_probability(epoch: int, train_params: dict) -> float | None:
    """TPS dropout probability for an epoch (TPSMM Sec. 3.2), None once `dropout_epoch` is reached.

    P = min(epoch / dropout_inc_epoch * dropout_maxp + dropout_startp, dropout_maxp).
    """
    if epoch >= train_params["dropout_epoch"]:
        return None
    return min(epoch / train_params["dropout_inc_epoch"] * train_params["dropout_maxp"]
               + train_params["dropout_startp"], train_params["dropout_maxp"])


class TPSMMFullModel(nn.Module):
    """Keypoints, background, dense motion and inpainting in one forward, with the four losses."""

    def __init__(self, kp_detector: nn.Module, dense_motion_network: nn.Module, inpainting_network: nn.Module,
                 bg_predictor: nn.Module | None, perceptual: nn.Module | None, train_params: dict,
                 num_channels: int = 3):
        super().__init__()
        self.kp_extractor = kp_detector
        self.dense_motion_network = dense_motion_network
        self.inpainting_network = inpainting_network
        self.bg_predictor = bg_predictor
        self.vgg = perceptual
        self.train_params = train_params
        self.scales = train_params["scales"]
        self.pyramid = ImagePyramid(self.scales, num_channels)
        self.loss_weights = train_params["loss_weights"]

    def forward(self, source: torch.Tensor, driving: torch.Tensor, epoch: int,
                dropout_keep: torch.Tensor | None = None, transform: TPSParams | None = None):
        """Weighted losses and generated tensors for a batch of (source, driving) pairs.

        RNG draws, in the reference's order: the TPS dropout mask (torch.rand(B, K+1)),
        then the random TPS (theta, then weights). `dropout_keep` / `transform` replay
        recorded draws instead.
        """
        tp = self.train_params
        weights = self.loss_weights
        kp_source = self.kp_extractor(source)
        kp_driving = self.kp_extractor(driving)
        bg_param = None
        use_bg = self.bg_predictor is not None and epoch >= tp["bg_start"]
        if use_bg:
            bg_param = self.bg_predictor(source, driving)
        p = dropout_probability(epoch, tp)
        dense = self.dense_motion_network(source, kp_driving=kp_driving, kp_source=kp_source, bg_param=bg_param,
                                          dropout_flag=p is not None, dropout_p=p or 0.0, dropout_keep=dropout_keep)
        generated = self.inpainting_network(source, dense)
        generated.update({"kp_source": kp_source, "kp_driving": kp_driving})
        losses: dict[str, torch.Tensor] = {}

        if sum(weights["perceptual"]) != 0:
            real = self.pyramid(driving)
            fake = self.pyramid(generated["prediction"])
            total = 0
            for scale in self.scales:
                x_feats = self.vgg(fake[f"prediction_{scale}"])
                y_feats = self.vgg(real[f"prediction_{scale}"])
                for i, w in enumerate(weights["perceptual"]):
                    total = total + w * torch.abs(x_feats[i] - y_feats[i].detach()).mean()
            losses["perceptual"] = total

        if weights["equivariance_value"] != 0:
            if transform is None:
                t = tp["transform_params"]
                transform = random_tps(driving.shape[0], t["sigma_affine"], t["sigma_tps"], t["points_tps"],
                                       device=driving.device, dtype=driving.dtype)
            grid = tps_grid_random_mode(transform, driving.shape[2:])
            transformed = F.grid_sample(driving, grid.to(driving.dtype), padding_mode="reflection", align_corners=True)
            transformed_kp = self.kp_extractor(transformed)
            generated["transformed_frame"] = transformed
            generated["transformed_kp"] = transformed_kp
            warped = tps_warp_random_mode(transform, transformed_kp["fg_kp"])
            losses["equivariance_value"] = weights["equivariance_value"] * torch.abs(kp_driving["fg_kp"] - warped).mean()

        if weights["warp_loss"] != 0:
            encoded = self.inpainting_network.get_encode(driving, generated["occlusion_map"])
            decoded = generated["warped_encoder_maps"]
            value = 0
            for i in range(len(encoded)):
                value = value + torch.abs(encoded[i] - decoded[-i - 1]).mean()
            losses["warp_loss"] = weights["warp_loss"] * value

        if use_bg and weights.get("bg", 0) != 0:
            reverse = self.bg_predictor(driving, source)
            product = torch.matmul(bg_param, reverse)  # B x 3 x 3
            eye = torch.eye(3, dtype=product.dtype, device=product.device).view(1, 3, 3)
            losses["bg"] = weights["bg"] * torch.abs(eye - product).mean()
        return losses, generated


def adam(params, lr: float) -> torch.optim.Adam:
    """The reference's optimiser: Adam(betas (0.5, 0.999), weight_decay 1e-4)."""
    return optim.adam(params, lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)


class TPSMMTraining:
    """The TPSMM family's training interface (see train.py).

    Attributes: `models` (checkpoint name -> module), `optimizers` and `schedulers`
    (checkpoint names), `ddp_modules` (what the trainer wraps in DDP).
    Random draws of a step (TPS dropout mask, random TPS) are made for the whole
    global batch from a generator seeded by (seed, epoch, step) and sliced by rank,
    so N processes compute exactly what one process does on the global batch, and a
    resumed run draws what the uninterrupted run drew.
    """

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None):
        tp = config["train_params"]
        self.train_params = tp
        self.loop_params = tp
        self.num_tps = config["model_params"]["common_params"]["num_tps"]
        self.models = {k: v for k, v in models.items() if k != "avd_network"}
        self.full = TPSMMFullModel(models["kp_detector"], models["dense_motion_network"],
                                   models["inpainting_network"], models.get("bg_predictor"), perceptual, tp,
                                   num_channels=config["model_params"]["common_params"]["num_channels"])
        self.ddp_modules: dict[str, nn.Module] = {"full": self.full}
        main = (list(models["inpainting_network"].parameters()) + list(models["dense_motion_network"].parameters())
                + list(models["kp_detector"].parameters()))
        self.optimizers: dict[str, torch.optim.Optimizer] = {"optimizer": adam(main, tp["lr_generator"])}
        if "bg_predictor" in models:
            self.optimizers["optimizer_bg_predictor"] = adam(models["bg_predictor"].parameters(), tp["lr_generator"])
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, tp["epoch_milestones"], gamma=0.1)
                           for name, opt in self.optimizers.items()}

    def draws(self, epoch: int, step: int, global_batch: int, rows: slice, device) -> dict[str, Any]:
        """This rank's rows of the step's random draws (dropout keep mask, random TPS)."""
        tp = self.train_params
        gen = torch.Generator().manual_seed((int(tp["seed"]) * 1_000_003 + epoch) * 1_000_033 + step)
        out: dict[str, Any] = {}
        p = dropout_probability(epoch, tp)
        if p is not None:
            keep = (torch.rand(global_batch, self.num_tps + 1, generator=gen) < (1 - p)).float()
            keep[:, 0] = 1
            out["dropout_keep"] = keep[rows].to(device)
        t = tp["transform_params"]
        tps = random_tps(global_batch, t["sigma_affine"], t["sigma_tps"], t["points_tps"], generator=gen)
        out["transform"] = TPSParams(tps.theta[rows].to(device), tps.control_points.to(device),
                                     tps.control_params[rows].to(device))
        return out

    def stages(self, epoch: int) -> list[Stage]:
        """One stage: every loss back-propagated once; `optimizer` steps, and the bg predictor's from `bg_start`.

        kp detector, dense motion and (from `bg_start`) bg predictor are clipped, each on its own,
        to `grad_clip` in the infinity norm, as the reference does.
        """
        tp = self.train_params
        use_bg = "bg_predictor" in self.models and epoch >= tp["bg_start"]
        clipped = ("kp_detector", "dense_motion_network") + (("bg_predictor",) if use_bg else ())
        clip = tuple(GradClip(tuple(self.models[name].parameters()), tp["grad_clip"], math.inf) for name in clipped)
        optimizers = ("optimizer",) + (("optimizer_bg_predictor",) if use_bg else ())

        def losses(batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
            out, shared["generated"] = self.ddp_modules["full"](batch["source"], batch["driving"], epoch, **draws)
            return out

        return [Stage(optimizers, losses, clip)]

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        """Networks saved in the published layout."""
        return dict(self.models)


def random_scale(kp: torch.Tensor, scale: float, uniform: torch.Tensor) -> torch.Tensor:
    """Keypoints (B, N, 2) times a random diagonal in [1 - scale, 1 + scale] (AVD training, MRAA Sec. 3.3).

    `uniform` (B, 2) holds the U(0, 1) draws.
    """
    theta = torch.diag_embed(uniform * (2 * scale) + (1 - scale)).unsqueeze(1).to(kp)  # B x 1 x 2 x 2
    return torch.matmul(theta, kp.unsqueeze(-1)).squeeze(-1)


class AVDTraining:
    """The AVD stage (MRAA Sec. 3.3) as a training class: the AVD network learns to rebuild the driving
    keypoints from the source's and randomly rescaled driving keypoints of a frozen keypoint detector.

    Loop settings come from `train_avd_params` (the seed from `train_params`). Checkpoints are
    `avd-checkpoint.pth.tar` (+ `avd-%08d-checkpoint.pth.tar`): every network of the main checkpoint
    plus `avd_network` and `optimizer_avd`, the main run's other entries kept, `avd_epoch` (the
    stage's epoch) and `avd_scheduler`. `models` must hold the main checkpoint's networks.
    """

    uses_perceptual = False
    checkpoint_prefix = "avd-"
    epoch_key = "avd_epoch"
    log_tag = "avd"

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None = None):
        ap = config["train_avd_params"]
        tp = config["train_params"]
        self.avd_params = ap
        self.loop_params = dict(ap, seed=tp["seed"], precision="fp32", channels_last=False,
                                log_freq=tp["log_freq"], image_freq=tp["image_freq"])
        self.models = dict(models)
        self.kp_detector = models["kp_detector"].eval().requires_grad_(False)
        self.ddp_modules: dict[str, nn.Module] = {"avd": models["avd_network"]}
        opt = optim.adam(models["avd_network"].parameters(), lr=ap["lr"], betas=(0.5, 0.999))
        self.optimizers = {"optimizer_avd": opt}
        self.schedulers = {"optimizer_avd": torch.optim.lr_scheduler.MultiStepLR(opt, ap["epoch_milestones"],
                                                                                  gamma=0.1)}
        self._kept: dict[str, Any] = {}

    def draws(self, epoch: int, step: int, global_batch: int, rows: slice, device) -> dict[str, Any]:
        """This rank's rows of the step's U(0, 1) scale draws (global batch x 2), seeded by (seed, epoch, step)."""
        seed = int(self.loop_params["seed"])
        gen = torch.Generator().manual_seed((seed * 104729 + epoch) * 1_000_033 + step)
        return {"uniform": torch.rand(global_batch, 2, generator=gen)[rows].to(device)}

    def stages(self, epoch: int) -> list[Stage]:
        ap = self.avd_params

        def losses(batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                kp_source = self.kp_detector(batch["source"])
                kp_driving = self.kp_detector(batch["driving"])
                scaled = random_scale(kp_driving["fg_kp"], ap["random_scale"], draws["uniform"])  # B x K*5 x 2
            rec = self.ddp_modules["avd"](kp_source, {"fg_kp": scaled})
            return {"rec_kp": ap["lambda_shift"] * torch.abs(kp_driving["fg_kp"] - rec["fg_kp"]).mean()}

        return [Stage(("optimizer_avd",), losses)]

    def on_resume(self, rest: dict) -> None:
        """Keep the main run's entries; read an older AVD checkpoint's lone `avd_scheduler`."""
        self._kept = {k: v for k, v in rest.items()
                      if k not in ("avd_epoch", "avd_scheduler", "resume_step", "schedulers", "grad_scaler")}
        if "avd_scheduler" in rest and "optimizer_avd" not in (rest.get("schedulers") or {}):
            rest["schedulers"] = {"optimizer_avd": rest["avd_scheduler"]}

    def checkpoint_extras(self) -> dict[str, Any]:
        return dict(self._kept, epoch=self._kept.get("epoch", 0),
                    avd_scheduler=self.schedulers["optimizer_avd"].state_dict())

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        return dict(self.models)
