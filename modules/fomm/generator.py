"""FOMM occlusion-aware generator: encoder features warped by the dense motion, masked by occlusion (FOMM Sec. 3.3, Eq. 7)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import DownBlock2d, EngineHooks, ResBlock2d, SameBlock2d, UpBlock2d, batch_norm
from modules.fomm.dense_motion import FOMMDenseMotionNetwork


def warp(inp: torch.Tensor, deformation: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Backward-warp `inp` (B, C, H, W) with a grid (B, h, w, 2), resized bilinearly to (H, W) if needed.

    The resize keeps `align_corners=False` (what the reference's `F.interpolate` did on
    every PyTorch version); `align_corners` only picks `grid_sample`'s convention.
    """
    _, h_old, w_old, _ = deformation.shape
    _, _, h, w = inp.shape
    if h_old != h or w_old != w:
        deformation = deformation.permute(0, 3, 1, 2)  # B x 2 x h x w
        deformation = F.interpolate(deformation, size=(h, w), mode="bilinear", align_corners=False)
        deformation = deformation.permute(0, 2, 3, 1)  # B x H x W x 2
    return F.grid_sample(inp, deformation, align_corners=align_corners)


class FOMMGenerator(EngineHooks, nn.Module):
    """Source image + keypoints -> {'prediction', 'deformed', 'mask', 'sparse_deformed', 'occlusion_map'}.

    Parameter names are the published `generator.*` ones (`dense_motion_network` lives
    inside the generator). `encode(source)` is the part that depends on the source only,
    so the animation engine computes it once per video, and runs this same forward on a
    prepared copy (`conv_in` / `conv_out`: decoder in its dtype, sampling and sigmoid fp32).

    `estimate_jacobian` is accepted, unused (the Jacobians come with the keypoints), so that
    the reference's `OcclusionAwareGenerator(**generator_params, **common_params)` works;
    `OcclusionAwareGenerator` is this class under the reference's name.
    """

    def __init__(self, num_channels: int, num_kp: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, estimate_occlusion_map: bool = False,
                 dense_motion_params: dict | None = None, align_corners: bool = False,
                 estimate_jacobian: bool = False):
        super().__init__()
        if dense_motion_params is not None:
            self.dense_motion_network = FOMMDenseMotionNetwork(
                num_kp=num_kp, num_channels=num_channels, estimate_occlusion_map=estimate_occlusion_map,
                align_corners=align_corners, **dense_motion_params)
        else:
            self.dense_motion_network = None
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3), norm=batch_norm)
        self.down_blocks = nn.ModuleList([
            DownBlock2d(min(max_features, block_expansion * (2 ** i)), min(max_features, block_expansion * (2 ** (i + 1))),
                        kernel_size=(3, 3), padding=(1, 1), norm=batch_norm)
            for i in range(num_down_blocks)])
        self.up_blocks = nn.ModuleList([
            UpBlock2d(min(max_features, block_expansion * (2 ** (num_down_blocks - i))),
                      min(max_features, block_expansion * (2 ** (num_down_blocks - i - 1))),
                      kernel_size=(3, 3), padding=(1, 1), norm=batch_norm)
            for i in range(num_down_blocks)])
        width = min(max_features, block_expansion * (2 ** num_down_blocks))
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(width, kernel_size=(3, 3), padding=(1, 1), norm=batch_norm))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.estimate_occlusion_map = estimate_occlusion_map
        self.num_channels = num_channels
        self.align_corners = align_corners

    def encode(self, source_image: torch.Tensor) -> torch.Tensor:
        """Encoder features of the source: (B, C', H / 2^d, W / 2^d)."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Bottleneck, up-sampling, final conv and sigmoid: the predicted image (B, C, H, W)."""
        out = self.bottleneck(features)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.conv_out(self.final(out)))

    def forward(self, source_image: torch.Tensor, kp_driving: dict, kp_source: dict,
                encoded: torch.Tensor | None = None, source_down: torch.Tensor | None = None,
                source_heatmap: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`encoded` / `source_down` / `source_heatmap` (1 or B in the batch dimension) may be passed
        in when cached: they depend on the source only."""
        b = kp_driving["value"].shape[0]
        out = self.encode(source_image) if encoded is None else encoded
        if out.shape[0] != b:
            out = out.expand(b, -1, -1, -1)
        if source_image.shape[0] != b:
            source_image = source_image.expand(b, -1, -1, -1)
        output: dict[str, torch.Tensor] = {}
        if self.dense_motion_network is not None:
            dense = self.dense_motion_network(source_image, kp_driving=kp_driving, kp_source=kp_source,
                                              source_down=source_down, source_heatmap=source_heatmap)
            output["mask"] = dense["mask"]
            output["sparse_deformed"] = dense["sparse_deformed"]
            output["deformation"] = dense["deformation"]
            occlusion = dense.get("occlusion_map")
            out = warp(out, dense["deformation"], self.align_corners)
            if occlusion is not None:
                output["occlusion_map"] = occlusion
                if out.shape[2:] != occlusion.shape[2:]:
                    occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear", align_corners=False)
                out = out * occlusion
            output["deformed"] = warp(source_image, dense["deformation"], self.align_corners)
        output["prediction"] = self.decode(self.conv_in(out))
        return output


OcclusionAwareGenerator = FOMMGenerator  # the reference's name (FOMM clients: from modules.fomm.generator import ...)
