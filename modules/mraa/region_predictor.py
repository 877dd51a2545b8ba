"""MRAA region predictor: hourglass heatmaps -> region shift, covariance and affine (MRAA Sec. 3.1, Eq. 2-3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import AntiAliasInterpolation2d, EngineHooks, Hourglass, batch_norm
from modules.geometry import to_fp32
from modules.mraa.geometry import pca_affine, region_params_from_heatmap


class RegionPredictor(EngineHooks, nn.Module):
    """Image (B, C, H, W) -> {'shift' (B, K, 2), 'covar' (B, K, 2, 2), 'affine' (B, K, 2, 2), 'heatmap' (B, K, h, w),
    and with PCA 'u', 'd' (B*K, 2, 2)}.

    The image is downsampled by `scale_factor` (anti-aliased, every 1/s-th pixel), an hourglass and a 7x7
    conv (padding `pad`) give K logit maps; heatmap = softmax over positions of logits / temperature.
    shift and covar are the heatmap's mean and covariance on a [-1, 1] grid. With `pca_based` (whatever
    `estimate_affine` says) affine = u diag(sqrt(s)) from the closed-form eigen-decomposition of covar, on the
    input's device (the published code ran `torch.svd` on a CPU copy). With `estimate_affine` and not
    `pca_based` a second 7x7 conv gives 4 maps shared by all regions (initialised to the identity), affine is
    their heatmap-weighted sum read row-major and covar = affine affine^T. Parameter names are the published ones.
    """

    def __init__(self, block_expansion: int, num_regions: int, num_channels: int, max_features: int,
                 num_blocks: int, temperature: float, estimate_affine: bool = False, scale_factor: float = 1.0,
                 pca_based: bool = False, fast_svd: bool = False, pad: int = 3):
        super().__init__()
        self.predictor = Hourglass(block_expansion, in_features=num_channels, num_blocks=num_blocks,
                                   max_features=max_features, norm=batch_norm)
        self.regions = nn.Conv2d(self.predictor.out_filters, num_regions, kernel_size=(7, 7), padding=pad)
        if estimate_affine and not pca_based:
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4, kernel_size=(7, 7), padding=pad)
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))
        else:
            self.jacobian = None
        self.num_regions = num_regions
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.pca_based = pca_based
        self.fast_svd = fast_svd  # published switch (torch_batch_svd); the closed form needs none
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor, mode="stride")

    def downsample(self, image: torch.Tensor) -> torch.Tensor:
        return self.down(image) if self.scale_factor != 1 else image

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.predictor(self.conv_in(self.downsample(x)))  # B x (block_expansion + C) x h x w
        logits = to_fp32(self.regions(features))  # B x K x h' x w'
        affine_maps = to_fp32(self.jacobian(features)) if self.jacobian is not None else None
        b, k, h, w = logits.shape
        # region parameters in fp32 under any autocast: they feed inverses and sampling grids
        with torch.autocast(x.device.type, enabled=False):
            heatmap = F.softmax(logits.view(b, k, h * w) / self.temperature, dim=2).view(b, k, h, w)
            params = region_params_from_heatmap(heatmap)  # shift B x K x 2, covar B x K x 2 x 2
            out = {"shift": params["shift"], "covar": params["covar"]}
            if self.pca_based:
                out["affine"], out["u"], out["d"] = pca_affine(params["covar"])
            elif affine_maps is not None:
                affine_maps = affine_maps.view(b, 1, 4, h, w)  # B x 1 x 4 x h' x w' (shared by the regions)
                affine = (heatmap.unsqueeze(2) * affine_maps).view(b, k, 4, h * w).sum(dim=-1)  # B x K x 4
                out["affine"] = affine.view(b, k, 2, 2)  # row-major
                out["covar"] = torch.matmul(out["affine"], out["affine"].transpose(-1, -2))
            out["heatmap"] = heatmap
        return {key: out[key] for key in ("shift", "covar", "affine", "heatmap", "u", "d") if key in out}
