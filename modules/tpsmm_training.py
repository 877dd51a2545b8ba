"""TPSMM training: the full model returning weighted losses (TPSMM Sec. 3.5) and its optimisation step.

`TPSMMFullModel.forward` returns `{loss name: weighted scalar}` plus the generated
tensors; the trainer only sums them. `TPSMMTraining` is the family's training
interface used by `train.py` (see its docstring): networks, optimizers,
schedulers, one `step`, and checkpoint contents.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import ImagePyramid
from modules.geometry import TPSParams, random_tps, tps_grid_random_mode, tps_warp_random_mode


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
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)


class TPSMMTraining:
    """The TPSMM family's training interface (see train.py).

    Attributes: `models` (checkpoint name -> module), `optimizers` and `schedulers`
    (checkpoint names), `ddp_modules` (what the trainer wraps in DDP).
    """

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None):
        tp = config["train_params"]
        self.train_params = tp
        self.models = {k: v for k, v in models.items() if k != "avd_network"}
        self.full = TPSMMFullModel(models["kp_detector"], models["dense_motion_network"],
                                   models["inpainting_network"], models.get("bg_predictor"), perceptual, tp,
                                   num_channels=config["model_params"]["common_params"]["num_channels"])
        self.ddp_modules = {"full": self.full}
        main = (list(models["inpainting_network"].parameters()) + list(models["dense_motion_network"].parameters())
                + list(models["kp_detector"].parameters()))
        self.optimizers: dict[str, torch.optim.Optimizer] = {"optimizer": adam(main, tp["lr_generator"])}
        if "bg_predictor" in models:
            self.optimizers["optimizer_bg_predictor"] = adam(models["bg_predictor"].parameters(), tp["lr_generator"])
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, tp["epoch_milestones"], gamma=0.1)
                           for name, opt in self.optimizers.items()}

    def step(self, batch: dict, epoch: int, autocast) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One optimisation step; returns the (detached) weighted losses and the generated tensors."""
        tp = self.train_params
        full = self.ddp_modules["full"]
        with autocast():
            losses, generated = full(batch["source"], batch["driving"], epoch)
        loss = sum(v.mean() for v in losses.values())
        assert torch.isfinite(loss), {k: float(v) for k, v in losses.items()}
        loss.backward()
        clip = tp["grad_clip"]
        torch.nn.utils.clip_grad_norm_(self.models["kp_detector"].parameters(), max_norm=clip, norm_type=math.inf)
        torch.nn.utils.clip_grad_norm_(self.models["dense_motion_network"].parameters(), max_norm=clip,
                                       norm_type=math.inf)
        use_bg = "bg_predictor" in self.models and epoch >= tp["bg_start"]
        if use_bg:
            torch.nn.utils.clip_grad_norm_(self.models["bg_predictor"].parameters(), max_norm=clip,
                                           norm_type=math.inf)
        self.optimizers["optimizer"].step()
        self.optimizers["optimizer"].zero_grad(set_to_none=True)
        if "optimizer_bg_predictor" in self.optimizers:
            if use_bg:
                self.optimizers["optimizer_bg_predictor"].step()
            self.optimizers["optimizer_bg_predictor"].zero_grad(set_to_none=True)
        return {k: v.detach().mean() for k, v in losses.items()}, generated

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        """Networks saved in the published layout (bg_predictor once epoch >= bg_start, as the reference)."""
        return dict(self.models)

    def checkpoint_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self.optimizers)
