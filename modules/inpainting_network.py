"""Inpainting network: encoder/decoder that warps and occludes source features at every scale (TPSMM Sec. 3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import DownBlock2d, EngineHooks, ResBlock2d, SameBlock2d, UpBlock2d


def deform_input(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Warp features (B, C, H, W) by a flow (B, h, w, 2), resized bilinearly to (H, W) if needed."""
    _, h_old, w_old, _ = deformation.shape
    _, _, h, w = inp.shape
    if (h_old, w_old) != (h, w):
        deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                    align_corners=True).permute(0, 2, 3, 1)
    return F.grid_sample(inp, deformation, align_corners=True)


class InpaintingNetwork(EngineHooks, nn.Module):
    """Source image + dense motion -> prediction (and the warped encoder maps for the warp loss).

    `num_tps` and `bg` are accepted, unused, so that the reference's config-splat call
    `InpaintingNetwork(**generator_params, **common_params)` works unchanged.

    The animation engine runs this same forward on a prepared copy: encoder maps are warped
    and occluded in fp32, then `conv_in` puts them in the decoder's dtype and layout; the
    final sigmoid and the blend with the warped source are fp32 (`conv_out`).
    """

    def __init__(self, num_channels: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 multi_mask: bool = True, num_tps: int | None = None, bg: bool = False):
        super().__init__()
        self.num_down_blocks = num_down_blocks
        self.multi_mask = multi_mask
        self.num_channels = num_channels
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))
        down, up, res = [], [], []
        for i in range(num_down_blocks):
            in_f = min(max_features, block_expansion * (2 ** i))
            out_f = min(max_features, block_expansion * (2 ** (i + 1)))
            down.append(DownBlock2d(in_f, out_f, kernel_size=(3, 3), padding=(1, 1)))
            dec_in = out_f if i == num_down_blocks - 1 else out_f * 2
            up.append(UpBlock2d(dec_in, in_f, kernel_size=(3, 3), padding=(1, 1)))
            res.append(ResBlock2d(dec_in, kernel_size=(3, 3), padding=(1, 1)))
            res.append(ResBlock2d(dec_in, kernel_size=(3, 3), padding=(1, 1)))
        self.down_blocks = nn.ModuleList(down)
        self.up_blocks = nn.ModuleList(up[::-1])
        self.resblock = nn.ModuleList(res[::-1])
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))

    def encode(self, source_image: torch.Tensor) -> list[torch.Tensor]:
        """Source feature maps, full resolution first: [first, down_1, ..., down_n]."""
        out = self.first(source_image)
        maps = [out]
        for block in self.down_blocks:
            out = block(out)
            maps.append(out)
        return maps

    def occlude_input(self, inp: torch.Tensor, occlusion_map: torch.Tensor) -> torch.Tensor:
        if not self.multi_mask and inp.shape[2:] != occlusion_map.shape[2:]:
            occlusion_map = F.interpolate(occlusion_map, size=inp.shape[2:], mode="bilinear", align_corners=True)
        return inp * occlusion_map

    def forward(self, source_image: torch.Tensor, dense_motion: dict,
                encoder_maps: list[torch.Tensor] | None = None, with_warped_maps: bool = True) -> dict:
        """`encoder_maps` lets a caller reuse `encode(source)` across frames (animation fast path)."""
        enc = self.encode(source_image) if encoder_maps is None else encoder_maps
        batch = dense_motion["deformation"].shape[0]
        if enc[0].shape[0] != batch:
            enc = [e.expand(batch, -1, -1, -1) for e in enc]
            source_image = source_image.expand(batch, -1, -1, -1)
        occlusion = dense_motion["occlusion_map"]
        deformation = dense_motion["deformation"]
        out_dict = {"contribution_maps": dense_motion["contribution_maps"],
                    "deformed_source": dense_motion["deformed_source"], "occlusion_map": occlusion}

        out = self.conv_in(self.occlude_input(deform_input(enc[-1], deformation), occlusion[0]))
        warped_maps = []
        if with_warped_maps:  # the warp loss sees these with detached features and masks
            warped_maps.append(self.occlude_input(deform_input(enc[-1].detach(), deformation), occlusion[0].detach()))
        encode_i = out
        for i in range(self.num_down_blocks):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            occ = occlusion[i + 1] if self.multi_mask else occlusion[0]
            skip = enc[-(i + 2)]
            # sampled and occluded in fp32, then into the decoder's dtype and layout
            encode_i = self.conv_in(self.occlude_input(deform_input(skip, deformation), occ))
            if with_warped_maps:
                warped_maps.append(self.occlude_input(deform_input(skip.detach(), deformation), occ.detach()))
            if i == self.num_down_blocks - 1:
                break
            out = torch.cat([out, encode_i], dim=1)

        deformed = deform_input(source_image, deformation)
        out_dict["deformed"] = deformed
        out_dict["warped_encoder_maps"] = warped_maps
        occ_last = occlusion[-1]
        if not self.multi_mask:
            occ_last = F.interpolate(occ_last, size=out.shape[2:], mode="bilinear", align_corners=True)
        out = out * self.conv_in(1 - occ_last) + encode_i
        out = torch.sigmoid(self.conv_out(self.final(out)))
        out_dict["prediction"] = out * (1 - occ_last) + deformed * occ_last  # blend with the warped source (Sec. 3.3)
        return out_dict

    def get_encode(self, driver_image: torch.Tensor, occlusion_map: list[torch.Tensor]) -> list[torch.Tensor]:
        """Driving-frame features masked by the (detached) occlusion maps, for the warp loss."""
        n = len(occlusion_map)
        out = self.first(driver_image)
        maps = [self.occlude_input(out.detach(), occlusion_map[-1].detach())]
        for i, block in enumerate(self.down_blocks):
            out = block(out.detach())
            idx = n - 2 - i if self.multi_mask else 0
            maps.append(self.occlude_input(out.detach(), occlusion_map[idx].detach()).detach())
        return maps
