"""TPSMM keypoint detector: ResNet-18 regressing K TPS groups x 5 keypoints (TPSMM Sec. 3.1)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from modules.blocks import EngineHooks, FP32Linear


class KPDetector(EngineHooks, nn.Module):
    """Image (B, 3, H, W) -> {'fg_kp': (B, K*5, 2)} in [-1, 1].

    `bg` and `multi_mask` are accepted, unused, so that the reference's config-splat call
    `KPDetector(**common_params)` works unchanged.
    """

    def __init__(self, num_tps: int, num_channels: int = 3, bg: bool = False, multi_mask: bool = True):
        super().__init__()
        self.num_tps = num_tps
        self.fg_encoder = models.resnet18(weights=None)
        if num_channels != 3:
            self.fg_encoder.conv1 = nn.Conv2d(num_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.fg_encoder.fc = FP32Linear(self.fg_encoder.fc.in_features, num_tps * 5 * 2)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        fg_kp = torch.sigmoid(self.conv_out(self.fg_encoder(self.conv_in(image)))) * 2 - 1  # B x K*5*2
        return {"fg_kp": fg_kp.view(image.shape[0], self.num_tps * 5, 2)}  # B x K*5 x 2
