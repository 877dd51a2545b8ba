"""FOMM multi-scale patch discriminator with feature maps for feature matching (FOMM Sec. 3.4, pix2pixHD-style)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.geometry import kp2gaussian


class DiscriminatorBlock(nn.Module):
    """Conv4 (no padding, optional spectral norm), optional InstanceNorm(affine), LeakyReLU 0.2, optional AvgPool2."""

    def __init__(self, in_features: int, out_features: int, norm: bool = False, kernel_size: int = 4,
                 pool: bool = False, sn: bool = False):
        super().__init__()
        conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        # torch.nn.utils.spectral_norm keeps the published state-dict names (weight_orig, weight_u, weight_v).
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        if self.pool:
            out = F.avg_pool2d(out, (2, 2))
        return out


class Discriminator(nn.Module):
    """One scale: image (B, C, H, W) [+ keypoint heatmaps with `use_kp`] -> (feature maps, prediction map)."""

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, num_blocks: int = 4, max_features: int = 512,
                 sn: bool = False, use_kp: bool = False, num_kp: int = 10, kp_variance: float = 0.01):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            in_features = num_channels + num_kp * int(use_kp) if i == 0 else min(max_features, block_expansion * (2 ** i))
            blocks.append(DiscriminatorBlock(in_features, min(max_features, block_expansion * (2 ** (i + 1))),
                                             norm=(i != 0), kernel_size=4, pool=(i != num_blocks - 1), sn=sn))
        self.down_blocks = nn.ModuleList(blocks)
        last = min(max_features, block_expansion * (2 ** num_blocks))
        conv = nn.Conv2d(last, 1, kernel_size=1)
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        self.use_kp = use_kp
        self.kp_variance = kp_variance

    def forward(self, x: torch.Tensor, kp: dict | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        out = x
        if self.use_kp:
            heatmap = kp2gaussian(kp["value"], x.shape[2:], self.kp_variance)  # B x K x H x W
            out = torch.cat([out, heatmap], dim=1)
        feature_maps = []
        for block in self.down_blocks:
            out = block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


class MultiScaleDiscriminator(nn.Module):
    """One `Discriminator` per scale; input is an image pyramid {'prediction_<s>': (B, C, H_s, W_s)}.

    Returns {'feature_maps_<s>': [maps], 'prediction_map_<s>': (B, 1, h, w)}.
    `estimate_jacobian` is accepted, unused, so that the reference's config-splat call
    `MultiScaleDiscriminator(**discriminator_params, **common_params)` works unchanged.
    """

    def __init__(self, scales=(1,), num_channels: int = 3, block_expansion: int = 64, num_blocks: int = 4,
                 max_features: int = 512, sn: bool = False, use_kp: bool = False, num_kp: int = 10,
                 kp_variance: float = 0.01, estimate_jacobian: bool = False):
        super().__init__()
        self.scales = list(scales)
        self.discs = nn.ModuleDict({
            str(scale).replace(".", "-"): Discriminator(
                num_channels=num_channels, block_expansion=block_expansion, num_blocks=num_blocks,
                max_features=max_features, sn=sn, use_kp=use_kp, num_kp=num_kp, kp_variance=kp_variance)
            for scale in self.scales})

    def forward(self, pyramid: dict[str, torch.Tensor], kp: dict | None = None) -> dict:
        out = {}
        for key, disc in self.discs.items():
            scale = key.replace("-", ".")
            feature_maps, prediction_map = disc(pyramid["prediction_" + scale], kp)
            out["feature_maps_" + scale] = feature_maps
            out["prediction_map_" + scale] = prediction_map
        return out
