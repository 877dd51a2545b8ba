"""Dense motion network: K+1 transforms combined by contribution maps, with occlusion masks (TPSMM Sec. 3.2-3.3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import AntiAliasInterpolation2d, EngineHooks, Hourglass, UpBlock2d
from modules.geometry import (fp32_geometry, from_homogeneous, kp2gaussian, make_coordinate_grid, to_fp32,
                              to_homogeneous, tps_from_keypoints, tps_grid_keypoint_mode)


def dropout_softmax(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over channels with dropped TPS channels (TPSMM Eq. 7-8).

    logits (B, K+1, H, W); keep (B, K+1) with 1 = kept (channel 0, the background, is
    always kept by the caller). The reference's 1/(1-P) rescale has no effect, so none here.
    """
    x = logits - logits.max(dim=1, keepdim=True).values
    e = x.exp() * keep[:, :, None, None].to(x.dtype)
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


def dropout_keep_mask(batch: int, channels: int, p: float, device=None, generator=None) -> torch.Tensor:
    """Per-sample keep mask (B, K+1) for TPS dropout; the draw matches the reference (torch.rand(B, K+1))."""
    keep = (torch.rand(batch, channels, generator=generator) < (1 - p)).float()
    keep[:, 0] = 1
    return keep.to(device)


class DenseMotionNetwork(EngineHooks, nn.Module):
    """Predicts the optical flow (B, h, w, 2), contribution maps and multi-resolution occlusion masks.

    The animation engine runs this same forward on a prepared copy (`conv_in` / `conv_out`
    put the hourglass and heads in its dtype and layout; geometry and heads' outputs fp32).
    """

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_tps: int,
                 num_channels: int = 3, scale_factor: float = 0.25, bg: bool = False, multi_mask: bool = True,
                 kp_variance: float = 0.01):
        super().__init__()
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        self.scale_factor = scale_factor
        self.multi_mask = multi_mask
        self.num_tps = num_tps
        self.bg = bg
        self.kp_variance = kp_variance
        self.hourglass = Hourglass(block_expansion=block_expansion,
                                   in_features=num_channels * (num_tps + 1) + num_tps * 5 + 1,
                                   max_features=max_features, num_blocks=num_blocks)
        widths = self.hourglass.out_channels
        self.maps = nn.Conv2d(widths[-1], num_tps + 1, kernel_size=(7, 7), padding=(3, 3))
        if multi_mask:
            self.up_nums = int(math.log(1 / scale_factor, 2))
            self.occlusion_num = 4
            up_ch = [widths[-1] // (2 ** i) for i in range(self.up_nums)]
            self.up = nn.ModuleList([UpBlock2d(c, c // 2, kernel_size=3, padding=1) for c in up_ch])
            occ_ch = [widths[-i - 1] for i in reversed(range(self.occlusion_num - self.up_nums))]
            occ_ch += [widths[-1] // (2 ** (i + 1)) for i in range(self.up_nums)]
            self.occlusion = nn.ModuleList([nn.Conv2d(c, 1, kernel_size=(7, 7), padding=(3, 3)) for c in occ_ch])
        else:
            self.occlusion = nn.ModuleList([nn.Conv2d(widths[-1], 1, kernel_size=(7, 7), padding=(3, 3))])

    def downsample(self, source_image: torch.Tensor) -> torch.Tensor:
        return self.down(source_image) if self.scale_factor != 1 else source_image

    def source_heatmap(self, spatial_size, kp_source: torch.Tensor) -> torch.Tensor:
        """G(kp_source) (B, K*5, h, w): the source term of the heatmaps, cacheable per video."""
        return kp2gaussian(kp_source, spatial_size, self.kp_variance)

    def heatmap_representation(self, spatial_size, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                               source_heatmap: torch.Tensor | None = None) -> torch.Tensor:
        """G(kp_driving) - G(kp_source) with a zero background channel first: (B, K*5+1, h, w)."""
        if source_heatmap is None:
            source_heatmap = self.source_heatmap(spatial_size, kp_source)
        heat = kp2gaussian(kp_driving, spatial_size, self.kp_variance) - source_heatmap  # B x K*5 x h x w
        return torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)

    @fp32_geometry
    def transformations(self, spatial_size, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                        bg_param: torch.Tensor | None) -> torch.Tensor:
        """K+1 sampling grids (B, K+1, h, w, 2): identity/background affine, then the K TPS maps."""
        b = kp_driving.shape[0]
        h, w = spatial_size
        tps = tps_from_keypoints(kp_driving.view(b, -1, 5, 2), kp_source.view(b, -1, 5, 2))
        driving_to_source = tps_grid_keypoint_mode(tps, (h, w))  # B x K x h x w x 2
        identity = make_coordinate_grid((h, w), kp_driving.dtype, kp_driving.device)
        identity = identity.view(1, 1, h, w, 2).expand(b, 1, h, w, 2)
        if bg_param is not None:
            homog = to_homogeneous(identity)  # B x 1 x h x w x 3
            identity = from_homogeneous(torch.matmul(bg_param.view(b, 1, 1, 1, 3, 3), homog.unsqueeze(-1)).squeeze(-1))
        return torch.cat([identity, driving_to_source], dim=1)

    def deformed_source(self, source_image: torch.Tensor, transformations: torch.Tensor) -> torch.Tensor:
        """The (downsampled) source sampled through each transform: (B, K+1, C, h, w)."""
        b, c, h, w = source_image.shape
        n = self.num_tps + 1
        repeated = source_image.unsqueeze(1).expand(b, n, c, h, w).reshape(b * n, c, h, w)
        deformed = F.grid_sample(repeated, transformations.reshape(b * n, h, w, 2), align_corners=True)
        return deformed.view(b, n, c, h, w)

    def forward(self, source_image: torch.Tensor, kp_driving: dict, kp_source: dict,
                bg_param: torch.Tensor | None = None, dropout_flag: bool = False, dropout_p: float = 0.0,
                dropout_keep: torch.Tensor | None = None, source_down: torch.Tensor | None = None,
                source_heatmap: torch.Tensor | None = None) -> dict:
        """`dropout_keep` (B, K+1) overrides the random TPS dropout draw (tests, replays).

        Per-video caches (animation): `source_down` = `downsample(source)` (1 or B, C, h, w) and
        `source_heatmap` = `source_heatmap((h, w), kp_source)` (1 or B, K*5, h, w).
        """
        source = self.downsample(source_image) if source_down is None else source_down
        b, _, h, w = source.shape
        kp_d, kp_s = kp_driving["fg_kp"], kp_source["fg_kp"]
        if source.shape[0] != kp_d.shape[0]:
            source = source.expand(kp_d.shape[0], -1, -1, -1)
            b = kp_d.shape[0]
        heatmap = self.heatmap_representation((h, w), kp_d, kp_s.expand_as(kp_d), source_heatmap)
        transformations = self.transformations((h, w), kp_d, kp_s.expand_as(kp_d), bg_param)
        deformed = self.deformed_source(source, transformations)
        out = {"deformed_source": deformed}
        inp = torch.cat([heatmap, deformed.view(b, -1, h, w)], dim=1)  # B x (K*5+1 + C(K+1)) x h x w
        levels = self.hourglass(self.conv_in(inp), all_levels=True)

        logits = self.maps(levels[-1])  # B x K+1 x h x w
        with torch.autocast(logits.device.type, enabled=False):  # contribution maps and flow in fp32
            logits = to_fp32(logits)
            if dropout_flag:
                keep = dropout_keep if dropout_keep is not None else dropout_keep_mask(
                    b, self.num_tps + 1, dropout_p, device=logits.device)
                maps = dropout_softmax(logits, keep)
            else:
                maps = F.softmax(logits, dim=1)
            # TPSMM Eq. 6: flow = sum_k M_k T_k
            deformation = torch.einsum("bkhw,bkhwc->bhwc", maps, transformations)  # B x h x w x 2
        out["contribution_maps"] = maps
        out["deformation"] = deformation
        out["occlusion_map"] = self.occlusion_masks(levels)
        return out

    def occlusion_masks(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Occlusion masks, coarse to fine (H/8 ... H with multi_mask; else one at h)."""
        if not self.multi_mask:
            return [torch.sigmoid(self.conv_out(self.occlusion[0](levels[-1])))]
        occlusion = []
        first = self.occlusion_num - self.up_nums
        for i in range(first):
            occlusion.append(torch.sigmoid(self.conv_out(self.occlusion[i](levels[self.up_nums - self.occlusion_num + i]))))
        feat = levels[-1]
        for i in range(self.up_nums):
            feat = self.up[i](feat)
            occlusion.append(torch.sigmoid(self.conv_out(self.occlusion[i + first](feat))))
        return occlusion
