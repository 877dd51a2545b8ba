"""FOMM dense motion network: K local affine motions blended by masks, plus an occlusion map (FOMM Sec. 3.2, Eq. 4-6)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import AntiAliasInterpolation2d, EngineHooks, Hourglass, batch_norm
from modules.geometry import fp32_geometry, kp2gaussian, make_coordinate_grid


@fp32_geometry
def sparse_motions(spatial_size: tuple[int, int], kp_driving: dict, kp_source: dict) -> torch.Tensor:
    """K+1 backward maps driving -> source (FOMM Eq. 4), shape (B, K+1, h, w, 2).

    Channel 0 is the identity (background); channel k is the first-order expansion
    T_k(z) = J_s,k inv(J_d,k) (z - kp_d,k) + kp_s,k (the Jacobian factor is dropped
    when the keypoints carry no 'jacobian').
    """
    value_d, value_s = kp_driving["value"], kp_source["value"]
    b, k = value_d.shape[:2]
    h, w = spatial_size
    identity = make_coordinate_grid((h, w), value_d.dtype, value_d.device).view(1, 1, h, w, 2)
    coords = identity - value_d.view(b, k, 1, 1, 2)  # B x K x h x w x 2
    if "jacobian" in kp_driving:
        jac = torch.matmul(kp_source["jacobian"], torch.inverse(kp_driving["jacobian"]))  # B x K x 2 x 2
        coords = torch.matmul(jac[:, :, None, None], coords.unsqueeze(-1)).squeeze(-1)  # B x K x h x w x 2
    driving_to_source = coords + value_s.view(b, k, 1, 1, 2)
    return torch.cat([identity.expand(b, 1, h, w, 2), driving_to_source], dim=1)  # B x K+1 x h x w x 2


class FOMMDenseMotionNetwork(EngineHooks, nn.Module):
    """Source + keypoints -> {'sparse_deformed', 'mask', 'deformation', 'occlusion_map'} at `scale_factor`.

    sparse_deformed (B, K+1, C, h, w): the source warped by each sparse motion;
    mask (B, K+1, h, w): softmax over the K+1 motions; deformation (B, h, w, 2):
    sum of mask x motions; occlusion_map (B, 1, h, w) in (0, 1) when estimated.
    """

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int,
                 num_channels: int = 3, estimate_occlusion_map: bool = False, scale_factor: float = 1.0,
                 kp_variance: float = 0.01, align_corners: bool = False):
        super().__init__()
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=(num_kp + 1) * (num_channels + 1),
                                   max_features=max_features, num_blocks=num_blocks, norm=batch_norm)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        else:
            self.occlusion = None
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.align_corners = align_corners
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor, mode="stride")

    def downsample(self, source_image: torch.Tensor) -> torch.Tensor:
        return self.down(source_image) if self.scale_factor != 1 else source_image

    def source_heatmap(self, spatial_size, kp_source: dict) -> torch.Tensor:
        """G(kp_source) (B, K, h, w): the source term of the heatmaps, cacheable per video."""
        return kp2gaussian(kp_source["value"], spatial_size, self.kp_variance)

    def heatmap_representation(self, spatial_size, kp_driving: dict, kp_source: dict,
                               source_heatmap: torch.Tensor | None = None) -> torch.Tensor:
        """G(kp_driving) - G(kp_source) with a zero background map first: (B, K+1, 1, h, w)."""
        if source_heatmap is None:
            source_heatmap = self.source_heatmap(spatial_size, kp_source)
        heat = kp2gaussian(kp_driving["value"], spatial_size, self.kp_variance) - source_heatmap  # B x K x h x w
        return torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)  # B x K+1 x 1 x h x w

    def deformed_sources(self, source_down: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """The source sampled through each motion: (B, K+1, C, h, w)."""
        b, c, h, w = source_down.shape
        n = motions.shape[1]
        repeated = source_down.unsqueeze(1).expand(b, n, c, h, w).reshape(b * n, c, h, w)
        warped = F.grid_sample(repeated, motions.reshape(b * n, h, w, 2), align_corners=self.align_corners)
        return warped.view(b, n, c, h, w)

    def forward(self, source_image: torch.Tensor, kp_driving: dict, kp_source: dict,
                source_down: torch.Tensor | None = None,
                source_heatmap: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-video caches (animation): `source_down` = `downsample(source)` skips the blur,
        `source_heatmap` = `source_heatmap((h, w), kp_source)` (1 or B, K, h, w)."""
        if source_down is None:
            source_down = self.downsample(source_image)
        b = kp_driving["value"].shape[0]
        if source_down.shape[0] != b:
            source_down = source_down.expand(b, -1, -1, -1)
        _, _, h, w = source_down.shape
        heatmap = self.heatmap_representation((h, w), kp_driving, kp_source, source_heatmap)  # B x K+1 x 1 x h x w
        motions = sparse_motions((h, w), kp_driving, kp_source)  # B x K+1 x h x w x 2
        deformed = self.deformed_sources(source_down, motions)  # B x K+1 x C x h x w
        out = {"sparse_deformed": deformed}
        hourglass_in = torch.cat([heatmap, deformed], dim=2).view(b, -1, h, w)  # B x (K+1)(C+1) x h x w, per kp [heat, rgb]
        features = self.hourglass(self.conv_in(hourglass_in))
        mask = F.softmax(self.conv_out(self.mask(features)), dim=1)  # B x K+1 x h x w
        out["mask"] = mask
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)  # B x h x w x 2
        out["deformation"] = deformation
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.conv_out(self.occlusion(features)))  # B x 1 x h x w
        return out


DenseMotionNetwork = FOMMDenseMotionNetwork  # the reference's name
