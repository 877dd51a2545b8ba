"""FOMM keypoint detector: hourglass heatmaps -> keypoints and local Jacobians (FOMM Sec. 3.1, Eq. 4-5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import AntiAliasInterpolation2d, EngineHooks, Hourglass, batch_norm
from modules.geometry import make_coordinate_grid, to_fp32


class FOMMKPDetector(EngineHooks, nn.Module):
    """Image (B, C, H, W) -> {'value': (B, K, 2) in [-1, 1] (x, y), 'jacobian': (B, K, 2, 2)}.

    Heatmaps are a softmax over positions of `kp(hourglass(x)) / temperature`; each
    keypoint is the heatmap-weighted mean of a [-1, 1] grid laid over the (unpadded,
    hence smaller) heatmap. The Jacobians are heatmap-weighted sums of 4 maps per
    keypoint (4 shared maps with `single_jacobian_map`), read as 2x2 row-major,
    initialised to the identity. Parameter names are the published ones.
    """

    def __init__(self, block_expansion: int, num_kp: int, num_channels: int, max_features: int,
                 num_blocks: int, temperature: float, estimate_jacobian: bool = False,
                 scale_factor: float = 1.0, single_jacobian_map: bool = False, pad: int = 0):
        super().__init__()
        self.predictor = Hourglass(block_expansion, in_features=num_channels, num_blocks=num_blocks,
                                   max_features=max_features, norm=batch_norm)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        self.num_kp = num_kp
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps,
                                      kernel_size=(7, 7), padding=pad)
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * self.num_jacobian_maps))
        else:
            self.num_jacobian_maps = 0
            self.jacobian = None
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor, mode="stride")

    @staticmethod
    def heatmap_to_keypoints(heatmap: torch.Tensor) -> torch.Tensor:
        """Expected grid position under each heatmap: (B, K, h, w) -> (B, K, 2)."""
        grid = make_coordinate_grid(heatmap.shape[2:], heatmap.dtype, heatmap.device)  # h x w x 2
        return (heatmap.unsqueeze(-1) * grid[None, None]).sum(dim=(2, 3))  # B x K x 2

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.down(image) if self.scale_factor != 1 else image
        features = self.predictor(self.conv_in(x))  # B x (block_expansion + C) x h x w
        logits = to_fp32(self.kp(features))  # B x K x h' x w' (7x7 conv, no padding by default)
        jac_map = to_fp32(self.jacobian(features)) if self.jacobian is not None else None
        b, k, h, w = logits.shape
        # keypoints and Jacobians in fp32 under any autocast: they feed matrix inverses and sampling grids
        with torch.autocast(image.device.type, enabled=False):
            heatmap = F.softmax(logits.view(b, k, h * w) / self.temperature, dim=2).view(b, k, h, w)
            out = {"value": self.heatmap_to_keypoints(heatmap)}
            if jac_map is not None:
                jac_map = jac_map.reshape(b, self.num_jacobian_maps, 4, h, w)  # B x (K|1) x 4 x h' x w'
                jac = (heatmap.unsqueeze(2) * jac_map).view(b, k, 4, h * w).sum(dim=-1)  # B x K x 4
                out["jacobian"] = jac.view(b, k, 2, 2)  # B x K x 2 x 2, row-major
        return out


KPDetector = FOMMKPDetector  # the reference's name (FOMM clients: from modules.fomm.keypoint_detector import ...)
