"""MRAA background motion predictor: a global shift / affine / perspective transform of the background
(MRAA Sec. 3.2)."""
from __future__ import annotations

import torch
from torch import nn

from modules.blocks import EngineHooks, Encoder, batch_norm
from modules.geometry import to_fp32
from modules.mraa.geometry import bg_matrix

BG_SIZES = {"shift": 2, "affine": 6, "perspective": 8}
BG_IDENTITY = {"shift": [0.0, 0.0], "affine": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
               "perspective": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]}


class BGMotionPredictor(EngineHooks, nn.Module):
    """(source, driving) (B, C, H, W) each -> the background transform (B, 3, 3), driving grid -> source.

    `bg_type` 'zero' has no parameters (an empty state dict, as the published mgif256 checkpoint) and
    returns the identity. Otherwise an encoder of `num_blocks` DownBlocks on the 2C-channel concat
    [source, driving], the spatial mean of its last map and a Linear to 2 / 6 / 8 values, initialised
    to the identity transform, fill the matrix (`modules.mraa.geometry.bg_matrix`).
    """

    def __init__(self, num_channels: int, block_expansion: int, max_features: int, num_blocks: int,
                 bg_type: str = "zero"):
        super().__init__()
        if bg_type not in ("zero", *BG_SIZES):
            raise ValueError(f"bg_type must be one of zero, {', '.join(BG_SIZES)}; got {bg_type!r}")
        self.bg_type = bg_type
        if bg_type == "zero":
            return
        self.encoder = Encoder(block_expansion, in_features=num_channels * 2, num_blocks=num_blocks,
                               max_features=max_features, norm=batch_norm)
        width = min(max_features, block_expansion * (2 ** num_blocks))
        self.fc = nn.Linear(width, BG_SIZES[bg_type])
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor(BG_IDENTITY[bg_type]))

    def forward(self, source_image: torch.Tensor, driving_image: torch.Tensor) -> torch.Tensor:
        b = source_image.shape[0]
        if self.bg_type == "zero":
            return torch.eye(3, dtype=source_image.dtype, device=source_image.device).repeat(b, 1, 1)  # B x 3 x 3
        features = self.encoder(self.conv_in(torch.cat([source_image, driving_image], dim=1)))[-1]  # B x F x h x w
        pooled = to_fp32(features).mean(dim=(2, 3))  # B x F
        with torch.autocast(source_image.device.type, enabled=False):
            return bg_matrix(self.fc(pooled.to(self.fc.weight.dtype)).to(pooled.dtype), self.bg_type)  # B x 3 x 3
