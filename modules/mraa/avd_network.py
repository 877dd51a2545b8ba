"""MRAA animation via disentanglement: region parameters of the source (identity) and the driving frame (pose)
-> region parameters to animate with (MRAA Sec. 3.3)."""
from __future__ import annotations

import torch
from torch import nn

from modules.avd_network import _mlp
from modules.geometry import fp32_geometry
from modules.mraa.geometry import region_params_to_vector, vector_to_region_params


@fp32_geometry
def id_sign(id_params: dict, pose_params: dict) -> torch.Tensor:
    """sign((id.affine inv(pose.affine))[0, 0]) per region, (B, K, 1, 1): the id affine's axis-swap factor."""
    jacobian = torch.matmul(id_params["affine"], torch.inverse(pose_params["affine"]))  # B x K x 2 x 2
    return torch.sign(jacobian[:, :, :1, :1])  # B x K x 1 x 1


class AVDNetwork(nn.Module):
    """(x_id, x_pose) region params -> {'shift' (B, K, 2), 'affine' (B, K, 2, 2), 'covar' = affine affine^T}.

    Each set is flattened per region to [shift (2), affine row-major (4)] (6K values); id and pose encoders
    are Linear 6K-256-512-1024 with BatchNorm1d + ReLU, then Linear to the bottleneck; the decoder maps
    cat(pose, id) through 1024-512-256 back to 6K. With `revert_axis_swap` (always on in the published code,
    which never passes it) the id affine is first multiplied per region by `id_sign`. Parameter names
    (`id_encoder.0`, ..., `decoder.9`) are the published ones.
    """

    def __init__(self, num_regions: int, id_bottle_size: int = 64, pose_bottle_size: int = 64,
                 revert_axis_swap: bool = True):
        super().__init__()
        input_size = 6 * num_regions
        self.num_regions = num_regions
        self.revert_axis_swap = revert_axis_swap
        self.id_encoder = _mlp([input_size, 256, 512, 1024, id_bottle_size], inplace=True)
        self.pose_encoder = _mlp([input_size, 256, 512, 1024, pose_bottle_size], inplace=True)
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, 1024, 512, 256, input_size], inplace=False)

    def forward(self, x_id: dict, x_pose: dict) -> dict[str, torch.Tensor]:
        """x_id may have batch 1 (one source) against a batch of poses."""
        b = x_pose["shift"].shape[0]
        affine = x_id["affine"] * id_sign(x_id, x_pose) if self.revert_axis_swap else x_id["affine"]
        x_id = {"shift": x_id["shift"].expand(b, -1, -1), "affine": affine.expand(b, -1, -1, -1)}
        pose = self.pose_encoder(region_params_to_vector(x_pose))  # B x pose_bottle
        ident = self.id_encoder(region_params_to_vector(x_id))  # B x id_bottle
        rec = self.decoder(torch.cat([pose, ident], dim=1))  # B x 6K
        return vector_to_region_params(rec)
