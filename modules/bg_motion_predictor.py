"""Background motion predictor: an affine map between source and driving (TPSMM Sec. 3.2)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from modules.blocks import EngineHooks, FP32Linear


class BGMotionPredictor(EngineHooks, nn.Module):
    """(source, driving) -> 3x3 affine matrix A_bg (last row [0, 0, 1]) acting on driving coordinates."""

    def __init__(self, num_channels: int = 3):
        super().__init__()
        self.bg_encoder = models.resnet18(weights=None)
        self.bg_encoder.conv1 = nn.Conv2d(2 * num_channels, 64, kernel_size=(7, 7), stride=(2, 2),
                                          padding=(3, 3), bias=False)
        self.bg_encoder.fc = FP32Linear(self.bg_encoder.fc.in_features, 6)
        with torch.no_grad():
            self.bg_encoder.fc.weight.zero_()
            self.bg_encoder.fc.bias.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float32))

    def forward(self, source_image: torch.Tensor, driving_image: torch.Tensor) -> torch.Tensor:
        b = source_image.shape[0]
        pair = self.conv_in(torch.cat([source_image, driving_image], dim=1))  # B x 2C x H x W
        affine = self.conv_out(self.bg_encoder(pair)).view(b, 2, 3)  # B x 2 x 3
        last = affine.new_tensor([0.0, 0.0, 1.0]).view(1, 1, 3).expand(b, 1, 3)
        return torch.cat([affine, last], dim=1)  # B x 3 x 3
