"""MRAA generator: encoder features warped by the pixel-wise flow and blended by occlusion, level by level
(MRAA Sec. 3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import DownBlock2d, EngineHooks, ResBlock2d, SameBlock2d, UpBlock2d, batch_norm
from modules.mraa.pixelwise_flow import PixelwiseFlowPredictor


def warp(inp: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp `inp` (B, C, H, W) with a grid (B, h, w, 2), resized bilinearly to (H, W) when sizes differ."""
    _, h_old, w_old, _ = flow.shape
    _, _, h, w = inp.shape
    if h_old != h or w_old != w:
        flow = flow.permute(0, 3, 1, 2)  # B x 2 x h x w
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        flow = flow.permute(0, 2, 3, 1)  # B x H x W x 2
    return F.grid_sample(inp, flow.to(inp.dtype), align_corners=False)


def resize_occlusion(occlusion: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if occlusion.shape[2:] != like.shape[2:]:
        occlusion = F.interpolate(occlusion, size=like.shape[2:], mode="bilinear", align_corners=False)
    return occlusion


class Generator(EngineHooks, nn.Module):
    """Source image + driving / source region params [+ bg matrix] -> {'prediction', 'deformed', 'occlusion_map', ...}.

    Encoder: a 7x7 SameBlock and `num_down_blocks` DownBlocks; `num_bottleneck_blocks` pre-activation ResBlocks;
    mirrored UpBlocks; a 7x7 conv to C channels and a sigmoid. The bottleneck input is the warped encoder output
    times the occlusion map. With `skips`, before each UpBlock the current tensor becomes
    blend(encoder level, current) = warp(level) occ + current (1 - occ), deepest level first, after the last UpBlock
    blend(first-block output, current), and the prediction is blend(source, sigmoid output); without an occlusion
    map a blend is the warped level alone. `deformed` is the source warped at full size.

    Also returned (the pixel-wise flow predictor's outputs at its scale): 'heatmap_representation',
    'sparse_motion', 'deformed_source', 'mask', 'optical_flow', 'flow_sign'. Parameter names are the published
    `generator.*` ones; `encode(source)` depends on the source only (the animation engine caches it).
    """

    def __init__(self, num_channels: int, num_regions: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, pixelwise_flow_predictor_params: dict | None = None,
                 skips: bool = False, revert_axis_swap: bool = True):
        super().__init__()
        if pixelwise_flow_predictor_params is not None:
            self.pixelwise_flow_predictor = PixelwiseFlowPredictor(
                num_regions=num_regions, num_channels=num_channels, revert_axis_swap=revert_axis_swap,
                **pixelwise_flow_predictor_params)
        else:
            self.pixelwise_flow_predictor = None
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
        self.num_channels = num_channels
        self.skips = skips

    def encode(self, source_image: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder level of the source: [first-block output, DownBlock 1 output, ..., encoder output]."""
        levels = [self.first(source_image)]  # fp32 on the engine's copy too (once per video)
        for block in self.down_blocks:
            levels.append(block(levels[-1]))
        return levels

    @staticmethod
    def blend(skip: torch.Tensor, current: torch.Tensor, flow: torch.Tensor | None,
              occlusion: torch.Tensor | None) -> torch.Tensor:
        """warp(skip) occ + current (1 - occ) (occlusion resized to the level); without occlusion warp(skip)."""
        warped = warp(skip, flow) if flow is not None else skip
        if occlusion is None:
            return warped
        occlusion = resize_occlusion(occlusion, warped).to(warped.dtype)
        return warped * occlusion + current * (1 - occlusion)

    def forward(self, source_image: torch.Tensor, driving_region_params: dict, source_region_params: dict,
                bg_params: torch.Tensor | None = None, encoded: list[torch.Tensor] | None = None,
                source_down: torch.Tensor | None = None,
                source_heatmap: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`encoded` (= `encode(source)`), `source_down` and `source_heatmap` (the flow predictor's, see there),
        1 or B in the batch dimension, may be passed in when cached: they depend on the source only."""
        b = driving_region_params["shift"].shape[0]
        levels = self.encode(source_image) if encoded is None else list(encoded)
        levels = [level.expand(b, -1, -1, -1) if level.shape[0] != b else level for level in levels]
        if source_image.shape[0] != b:
            source_image = source_image.expand(b, -1, -1, -1)
        output: dict[str, torch.Tensor] = {}
        flow = occlusion = None
        if self.pixelwise_flow_predictor is not None:
            motion = self.pixelwise_flow_predictor(source_image, driving_region_params, source_region_params,
                                                   bg_params=bg_params, source_down=source_down,
                                                   source_heatmap=source_heatmap)
            output.update(motion)
            flow = motion["optical_flow"]  # B x h x w x 2
            occlusion = motion.get("occlusion_map")  # B x 1 x h x w
        out = levels[-1]
        if flow is not None:
            out = warp(out, flow)
        if occlusion is not None:
            out = out * resize_occlusion(occlusion, out).to(out.dtype)
        # conv_in / conv_out: on the engine's bf16/fp16 copy the bottleneck and decoder run in that dtype,
        # warps and blends in fp32 (identities everywhere else)
        out = self.bottleneck(self.conv_in(out))
        for i, block in enumerate(self.up_blocks):
            if self.skips:
                out = self.conv_in(self.blend(levels[-(i + 1)], self.conv_out(out), flow, occlusion))
            out = block(out)
        if self.skips:
            out = self.conv_in(self.blend(levels[0], self.conv_out(out), flow, occlusion))
        prediction = torch.sigmoid(self.conv_out(self.final(out)))  # B x C x H x W
        if self.skips:
            prediction = self.blend(source_image, prediction, flow, occlusion)
        output["prediction"] = prediction
        if flow is not None:
            output["deformed"] = warp(source_image, flow)
        return output
