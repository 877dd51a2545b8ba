"""AVD network: animation via disentanglement of shape and pose (MRAA, Siarohin et al. CVPR 2021, Sec. 3.3)."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(sizes: list[int], inplace: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=inplace)]
    return nn.Sequential(*layers)


class AVDNetwork(nn.Module):
    """Keypoints of the source (identity) and driving (pose) -> keypoints to animate with."""

    def __init__(self, num_tps: int, id_bottle_size: int = 64, pose_bottle_size: int = 64):
        super().__init__()
        input_size = 5 * 2 * num_tps
        self.num_tps = num_tps
        self.id_encoder = _mlp([input_size, 256, 512, 1024, id_bottle_size], inplace=True)
        self.pose_encoder = _mlp([input_size, 256, 512, 1024, pose_bottle_size], inplace=True)
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, 1024, 512, 256, input_size], inplace=False)

    def forward(self, kp_source: dict, kp_random: dict) -> dict[str, torch.Tensor]:
        b = kp_source["fg_kp"].shape[0]
        pose = self.pose_encoder(kp_random["fg_kp"].reshape(b, -1))  # B x pose_bottle
        ident = self.id_encoder(kp_source["fg_kp"].reshape(b, -1))  # B x id_bottle
        rec = self.decoder(torch.cat([pose, ident], dim=1))  # B x K*5*2
        return {"fg_kp": rec.view(b, self.num_tps * 5, 2)}
