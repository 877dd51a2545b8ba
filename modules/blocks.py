"""Building blocks shared by the networks: res/up/down/same blocks, hourglass, anti-aliased resize.

Parameter names (`conv`, `norm`, `conv1`, `norm1`, ...) are the published
state-dict names; do not rename them. `norm` picks the normalisation layer:
InstanceNorm2d(affine) for TPSMM, BatchNorm2d for FOMM.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class FP32Linear(nn.Linear):
    """nn.Linear outside autocast: keypoint and affine regressions keep their weights' precision.

    Under bf16 autocast a Linear head would hand bf16 keypoints (3 significant digits) to the
    TPS solve. Same parameters and state-dict keys as nn.Linear.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


@dataclass(frozen=True)
class ConvCompute:
    """How an inference copy of a network runs its convolutions (set by `modules.animation.prepared`)."""

    dtype: torch.dtype
    memory_format: torch.memory_format


class EngineHooks:
    """Mixin for networks with an inference copy: `conv_in` / `conv_out` around their conv stacks.

    `compute` is None on the networks themselves (training, the plain path): both hooks are
    then the identity and the forward is unchanged. On a prepared copy (bf16/fp16 weights,
    channels-last) `conv_in` casts into the convs' dtype and layout and `conv_out` returns fp32,
    so softmax, sigmoids, grids, `grid_sample` and blends stay fp32 in the same forward code.
    """

    compute: ConvCompute | None = None

    def conv_in(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute is None:
            return x
        return x.to(self.compute.dtype).contiguous(memory_format=self.compute.memory_format)

    def conv_out(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.compute is None else x.float()


def instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


def batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=True)


class ResBlock2d(nn.Module):
    """Pre-activation residual block: norm, ReLU, conv, norm, ReLU, conv, + x."""

    def __init__(self, in_features: int, kernel_size=3, padding=1, norm=instance_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = norm(in_features)
        self.norm2 = norm(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    """Nearest x2 upsampling, conv, norm, ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size=3, padding=1, groups: int = 1,
                 norm=instance_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2)
        return F.relu(self.norm(self.conv(out)))


class DownBlock2d(nn.Module):
    """Conv, norm, ReLU, 2x2 average pooling."""

    def __init__(self, in_features: int, out_features: int, kernel_size=3, padding=1, groups: int = 1,
                 norm=instance_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """Conv, norm, ReLU at the same resolution."""

    def __init__(self, in_features: int, out_features: int, groups: int = 1, kernel_size=3, padding=1,
                 norm=instance_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    """Hourglass encoder: returns the input and every DownBlock output."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm=instance_norm):
        super().__init__()
        self.down_blocks = nn.ModuleList([
            DownBlock2d(in_features if i == 0 else min(max_features, block_expansion * (2 ** i)),
                        min(max_features, block_expansion * (2 ** (i + 1))), kernel_size=3, padding=1, norm=norm)
            for i in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: upsample, concatenate the skip; `out_channels` lists each level's width."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm=instance_norm):
        super().__init__()
        blocks = []
        self.out_channels = []
        for i in reversed(range(num_blocks)):
            in_filters = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * (2 ** (i + 1)))
            self.out_channels.append(in_filters)
            out_filters = min(max_features, block_expansion * (2 ** i))
            blocks.append(UpBlock2d(in_filters, out_filters, kernel_size=3, padding=1, norm=norm))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels.append(block_expansion + in_features)

    def forward(self, skips: list[torch.Tensor], all_levels: bool = False):
        skips = list(skips)
        out = skips.pop()
        outs = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
            outs.append(out)
        return outs if all_levels else out


class Hourglass(nn.Module):
    """U-Net style hourglass (encoder + decoder with skips)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm=instance_norm):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features, norm=norm)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features, norm=norm)
        self.out_channels = self.decoder.out_channels
        self.out_filters = self.decoder.out_channels[-1]

    def forward(self, x: torch.Tensor, all_levels: bool = False):
        return self.decoder(self.encoder(x), all_levels=all_levels)


def gaussian_kernel(channels: int, scale: float) -> tuple[torch.Tensor, int, int]:
    """Depthwise Gaussian kernel for anti-aliased downsampling by `scale`; returns (kernel, pad_a, pad_b)."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    ka = size // 2
    kb = ka - 1 if size % 2 == 0 else ka
    axis = torch.arange(size, dtype=torch.float32)
    mean = (size - 1) / 2
    g = torch.exp(-(axis - mean) ** 2 / (2 * sigma ** 2))
    kernel = g.view(-1, 1) * g.view(1, -1)
    kernel = kernel / kernel.sum()
    return kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1), ka, kb


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then downsample by `scale` (buffer `weight` is the published `down.weight`).

    `mode='interpolate'` (TPSMM) resizes with nearest interpolation;
    `mode='stride'` (FOMM) keeps every 1/scale-th pixel.
    """

    def __init__(self, channels: int, scale: float, mode: str = "interpolate"):
        super().__init__()
        kernel, self.ka, self.kb = gaussian_kernel(channels, scale)
        self.register_buffer("weight", kernel)
        self.groups = channels
        self.scale = scale
        self.mode = mode
        self.int_inv_scale = int(round(1 / scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        # The blur runs in fp32 NCHW whatever the caller's dtype, layout or autocast: oneDNN has no
        # fast kernel for this 3-group conv with a large kernel in bf16 channels-last (one 256 px
        # training step under bf16 autocast + channels-last took minutes in this op alone).
        with torch.autocast(x.device.type, enabled=False):
            out = F.pad(x.float().contiguous(), (self.ka, self.kb, self.ka, self.kb))
            out = F.conv2d(out, weight=self.weight.float(), groups=self.groups)
        if self.mode == "stride":
            out = out[:, :, ::self.int_inv_scale, ::self.int_inv_scale]
        else:
            out = F.interpolate(out, scale_factor=(self.scale, self.scale))
        return out.to(x.dtype)


class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid: {'prediction_<scale>': image at that scale}."""

    def __init__(self, scales, num_channels: int, mode: str = "interpolate"):
        super().__init__()
        self.scales = list(scales)
        self.downs = nn.ModuleDict({
            str(s).replace(".", "-"): AntiAliasInterpolation2d(num_channels, s, mode=mode) for s in self.scales})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction_" + key.replace("-", "."): down(x) for key, down in self.downs.items()}
