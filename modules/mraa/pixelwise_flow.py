"""MRAA pixel-wise flow predictor: region motions blended by predicted masks, plus an occlusion map
(MRAA Sec. 3.2, Eq. 4-5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import AntiAliasInterpolation2d, EngineHooks, Hourglass, batch_norm
from modules.geometry import fp32_geometry
from modules.mraa.geometry import covariance_gaussian, sparse_motions


class PixelwiseFlowPredictor(EngineHooks, nn.Module):
    """Source image + driving / source region params [+ bg matrix] -> the flow at `scale_factor`.

    Returns {'heatmap_representation' (B, K+1, 1, h, w), 'sparse_motion' (B, K+1, h, w, 2),
    'deformed_source' (B, K+1, C, h, w), 'mask' (B, K+1, h, w), 'optical_flow' (B, h, w, 2),
    'occlusion_map' (B, 1, h, w) when estimated, 'flow_sign' (B, K) when the regions have affines}.
    Parameter names are the published `generator.pixelwise_flow_predictor.*` ones.
    """

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_regions: int,
                 num_channels: int = 3, estimate_occlusion_map: bool = False, scale_factor: float = 1.0,
                 region_var: float = 0.01, use_covar_heatmap: bool = False, use_deformed_source: bool = True,
                 revert_axis_swap: bool = False):
        super().__init__()
        in_features = (num_regions + 1) * ((num_channels + 1) if use_deformed_source else 1)
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=in_features,
                                   max_features=max_features, num_blocks=num_blocks, norm=batch_norm)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_regions + 1, kernel_size=(7, 7), padding=(3, 3))
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        else:
            self.occlusion = None
        self.num_regions = num_regions
        self.scale_factor = scale_factor
        self.region_var = region_var
        self.use_covar_heatmap = use_covar_heatmap
        self.use_deformed_source = use_deformed_source
        self.revert_axis_swap = revert_axis_swap
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor, mode="stride")

    def downsample(self, source_image: torch.Tensor) -> torch.Tensor:
        return self.down(source_image) if self.scale_factor != 1 else source_image

    @fp32_geometry
    def region_heatmaps(self, spatial_size: tuple[int, int], params: dict) -> torch.Tensor:
        """The Gaussian of each region (B, K, h, w): with its covariance, or isotropic with `region_var`."""
        covar = params["covar"] if self.use_covar_heatmap else None
        return covariance_gaussian(params["shift"], covar, spatial_size, self.region_var)

    def heatmap_representation(self, spatial_size: tuple[int, int], driving: dict, source: dict,
                               source_heatmap: torch.Tensor | None = None) -> torch.Tensor:
        """G(driving) - G(source) with a zero background channel first: (B, K+1, 1, h, w)."""
        if source_heatmap is None:
            source_heatmap = self.region_heatmaps(spatial_size, source)
        heat = self.region_heatmaps(spatial_size, driving) - source_heatmap  # B x K x h x w
        return torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)  # B x K+1 x 1 x h x w

    @staticmethod
    def deformed_sources(source_down: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """The source sampled through each motion: (B, K+1, C, h, w)."""
        b, c, h, w = source_down.shape
        n = motions.shape[1]
        repeated = source_down.unsqueeze(1).expand(b, n, c, h, w).reshape(b * n, c, h, w)
        warped = F.grid_sample(repeated, motions.reshape(b * n, h, w, 2), align_corners=False)
        return warped.view(b, n, c, h, w)

    def forward(self, source_image: torch.Tensor, driving_region_params: dict, source_region_params: dict,
                bg_params: torch.Tensor | None = None, source_down: torch.Tensor | None = None,
                source_heatmap: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-video caches (animation): `source_down` = `downsample(source)`, `source_heatmap` =
        `region_heatmaps((h, w), source_region_params)` (1 or B in the batch dimension)."""
        if source_down is None:
            source_down = self.downsample(source_image)
        b = driving_region_params["shift"].shape[0]
        if source_down.shape[0] != b:
            source_down = source_down.expand(b, -1, -1, -1)
        _, _, h, w = source_down.shape
        heatmap = self.heatmap_representation((h, w), driving_region_params, source_region_params, source_heatmap)
        motions, sign = fp32_geometry(sparse_motions)((h, w), driving_region_params, source_region_params,
                                                      bg_params, self.revert_axis_swap)  # B x K+1 x h x w x 2
        deformed = self.deformed_sources(source_down.to(motions.dtype), motions)  # B x K+1 x C x h x w
        out = {"heatmap_representation": heatmap, "sparse_motion": motions, "deformed_source": deformed}
        if sign is not None:
            out["flow_sign"] = sign
        if self.use_deformed_source:
            hourglass_in = torch.cat([heatmap, deformed], dim=2).view(b, -1, h, w)  # B x (K+1)(C+1) x h x w
        else:
            hourglass_in = heatmap.view(b, -1, h, w)  # B x (K+1) x h x w
        features = self.hourglass(self.conv_in(hourglass_in))
        mask = F.softmax(self.conv_out(self.mask(features)), dim=1)  # B x K+1 x h x w
        out["mask"] = mask
        out["optical_flow"] = (motions * mask.unsqueeze(-1)).sum(dim=1)  # B x h x w x 2
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.conv_out(self.occlusion(features)))  # B x 1 x h x w
        return out
