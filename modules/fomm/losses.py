"""FOMM training losses as data: the generator and discriminator wrappers return {name: weighted scalar} (FOMM Sec. 3.4).

Generator side: perceptual pyramid (VGG-19, as TPSMM), equivariance on keypoint values
and on Jacobians (FOMM Eq. 10-11, `RandomTransform` = FOMM's L1-radial TPS), and, for
the configs with `generator_gan != 0`, the LSGAN generator term and feature matching
against the multi-scale discriminator. Discriminator side: the LSGAN discriminator term.
The loss names are the reference's (`gen_gan` / `disc_gan`, weighted by the config's
`generator_gan` / `discriminator_gan`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from modules.blocks import ImagePyramid
from modules.fomm.transform import RandomTransform


def detach_kp(kp: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in kp.items()}


def perceptual_pyramid_loss(perceptual: nn.Module, pyramid_generated: dict, pyramid_real: dict,
                            scales, weights) -> torch.Tensor:
    """sum over scales s and layers i of w_i * mean |F_i(pred_s) - F_i(real_s).detach()| (FOMM/TPSMM Sec. 3.5)."""
    total = 0.0
    for scale in scales:
        x_feats = perceptual(pyramid_generated[f"prediction_{scale}"])
        y_feats = perceptual(pyramid_real[f"prediction_{scale}"])
        for weight, x, y in zip(weights, x_feats, y_feats):
            if weight != 0:
                total = total + weight * (x - y.detach()).abs().mean()
    return total


class FOMMGeneratorFull(nn.Module):
    """Keypoint detector + generator (+ discriminator for the adversarial terms) -> (losses, generated).

    models: {'kp_detector', 'generator', 'discriminator'} from `modules.build_models`.
    train_params: the resolved config's `train_params`. `perceptual` overrides the
    backbone named by `train_params.perceptual_backbone` (tests inject recipe weights).
    """

    def __init__(self, models: Mapping[str, nn.Module], train_params: Mapping[str, Any],
                 perceptual: nn.Module | None = None):
        super().__init__()
        self.kp_extractor = models["kp_detector"]
        self.generator = models["generator"]
        self.train_params = train_params
        self.loss_weights = train_params["loss_weights"]
        self.scales = list(train_params["scales"])
        # the discriminator is a submodule only when the generator is trained against it, so that
        # DDP never sees parameters that get no gradient
        use_gan = self.loss_weights["generator_gan"] != 0
        self.discriminator = models["discriminator"] if use_gan else None
        self.disc_scales = list(models["discriminator"].scales) if use_gan else []
        # one pyramid serves the perceptual loss and the discriminator (the reference reads the
        # discriminator's scales from the perceptual pyramid; here they may also differ)
        pyramid_scales = {str(s): s for s in self.scales + self.disc_scales}
        self.pyramid = ImagePyramid(list(pyramid_scales.values()), self.generator.num_channels, mode="stride")
        self.align_corners = bool(self.generator.align_corners)
        self.perceptual = None
        if sum(self.loss_weights["perceptual"]) != 0:
            if perceptual is None:
                from modules.perceptual import build_perceptual
                perceptual = build_perceptual(train_params.get("perceptual_backbone", "vgg19"),
                                              train_params.get("perceptual_weights"),
                                              seed=train_params.get("seed", 0))
            self.perceptual = perceptual.requires_grad_(False)

    def forward(self, batch: Mapping[str, torch.Tensor], transform: RandomTransform | None = None):
        """batch {'source', 'driving'} (B, C, H, W) -> ({name: weighted scalar}, generated dict).

        `transform` (the equivariance draw) is sampled here from the global RNG unless given.
        """
        source, driving = batch["source"], batch["driving"]
        weights = self.loss_weights
        kp_source = self.kp_extractor(source)
        kp_driving = self.kp_extractor(driving)
        generated = self.generator(source, kp_driving=kp_driving, kp_source=kp_source)
        generated.update({"kp_source": kp_source, "kp_driving": kp_driving})
        losses: dict[str, torch.Tensor] = {}

        pyramid_real = self.pyramid(driving)
        pyramid_generated = self.pyramid(generated["prediction"])
        if self.perceptual is not None:
            losses["perceptual"] = perceptual_pyramid_loss(self.perceptual, pyramid_generated, pyramid_real,
                                                           self.scales, weights["perceptual"])

        if weights["generator_gan"] != 0:
            disc_generated = self.discriminator(pyramid_generated, kp=detach_kp(kp_driving))
            disc_real = self.discriminator(pyramid_real, kp=detach_kp(kp_driving))
            gan = 0.0
            for scale in self.disc_scales:
                gan = gan + weights["generator_gan"] * ((1 - disc_generated[f"prediction_map_{scale}"]) ** 2).mean()
            losses["gen_gan"] = gan
            if sum(weights["feature_matching"]) != 0:
                matching = 0.0
                for scale in self.disc_scales:
                    pairs = zip(disc_real[f"feature_maps_{scale}"], disc_generated[f"feature_maps_{scale}"])
                    for weight, (real, fake) in zip(weights["feature_matching"], pairs):
                        if weight != 0:
                            matching = matching + weight * (real - fake).abs().mean()
                losses["feature_matching"] = matching

        if weights["equivariance_value"] + weights["equivariance_jacobian"] != 0:
            if transform is None:
                tp = self.train_params["transform_params"]
                transform = RandomTransform.sample(driving.shape[0], tp["sigma_affine"], tp.get("sigma_tps"),
                                                   tp.get("points_tps"), align_corners=self.align_corners)
            transformed_frame = transform.transform_frame(driving)
            transformed_kp = self.kp_extractor(transformed_frame)
            generated["transformed_frame"] = transformed_frame
            generated["transformed_kp"] = transformed_kp
            if weights["equivariance_value"] != 0:
                value = (kp_driving["value"] - transform.warp_coordinates(transformed_kp["value"])).abs().mean()
                losses["equivariance_value"] = weights["equivariance_value"] * value
            if weights["equivariance_jacobian"] != 0:
                jac_transformed = torch.matmul(transform.jacobian(transformed_kp["value"]),
                                               transformed_kp["jacobian"])  # B x K x 2 x 2
                with torch.autocast(driving.device.type, enabled=False):  # a 2x2 inverse in fp32
                    value = torch.matmul(torch.inverse(kp_driving["jacobian"].float()), jac_transformed.float())
                eye = torch.eye(2, dtype=value.dtype, device=value.device).view(1, 1, 2, 2)
                losses["equivariance_jacobian"] = weights["equivariance_jacobian"] * (eye - value).abs().mean()
        return losses, generated


class FOMMDiscriminatorFull(nn.Module):
    """LSGAN discriminator loss on real driving frames vs detached predictions: {'disc_gan': weighted scalar}."""

    def __init__(self, models: Mapping[str, nn.Module], train_params: Mapping[str, Any]):
        super().__init__()
        self.discriminator = models["discriminator"]
        self.scales = list(self.discriminator.scales)
        self.pyramid = ImagePyramid(self.scales, models["generator"].num_channels, mode="stride")
        self.loss_weights = train_params["loss_weights"]

    def forward(self, batch: Mapping[str, torch.Tensor], generated: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        pyramid_real = self.pyramid(batch["driving"])
        pyramid_generated = self.pyramid(generated["prediction"].detach())
        kp_driving = detach_kp(generated["kp_driving"])
        disc_generated = self.discriminator(pyramid_generated, kp=kp_driving)
        disc_real = self.discriminator(pyramid_real, kp=kp_driving)
        total = 0.0
        for scale in self.scales:
            value = (1 - disc_real[f"prediction_map_{scale}"]) ** 2 + disc_generated[f"prediction_map_{scale}"] ** 2
            total = total + self.loss_weights["discriminator_gan"] * value.mean()
        return {"disc_gan": total}
