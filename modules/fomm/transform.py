"""FOMM's random thin-plate transform for the equivariance losses (FOMM Sec. 3.4 and appendix).

This is NOT `modules.geometry.random_tps` (TPSMM's): FOMM's radial term is
r^2 log(r + 1e-6) with r the **L1** distance |x - c|_1 to each control point
(TPSMM uses r^2 log(r^2 + 1e-9) with the squared Euclidean distance). In both the
radial sum is one scalar added to x and y alike. The draw order (theta, then the
control weights) matches the reference, so `torch.manual_seed(s)` before the draw
reproduces the reference's transform.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.geometry import make_coordinate_grid


def fomm_tps_radial(l1_distance: torch.Tensor) -> torch.Tensor:
    """FOMM's radial basis r^2 log(r + 1e-6) of the L1 distance r."""
    return l1_distance ** 2 * torch.log(l1_distance + 1e-6)


class RandomTransform:
    """theta = I + N(0, sigma_affine) (B, 2, 3); TPS weights N(0, sigma_tps) (B, 1, P^2) on a P x P grid."""

    def __init__(self, theta: torch.Tensor, control_points: torch.Tensor | None = None,
                 control_params: torch.Tensor | None = None, align_corners: bool = False):
        self.theta = theta  # B x 2 x 3
        self.control_points = control_points  # 1 x P x P x 2 (or 1 x P^2 x 2)
        self.control_params = control_params  # B x 1 x P^2
        self.batch_size = theta.shape[0]
        self.align_corners = align_corners

    @classmethod
    def sample(cls, batch_size: int, sigma_affine: float, sigma_tps: float | None = None,
               points_tps: int | None = None, generator: torch.Generator | None = None,
               align_corners: bool = False) -> "RandomTransform":
        """Draw on the CPU in the reference's order (theta first, then the TPS weights)."""
        noise = torch.normal(mean=0.0, std=sigma_affine * torch.ones(batch_size, 2, 3), generator=generator)
        theta = noise + torch.eye(2, 3).view(1, 2, 3)
        if sigma_tps is None or points_tps is None:
            return cls(theta, align_corners=align_corners)
        control_points = make_coordinate_grid((points_tps, points_tps)).unsqueeze(0)  # 1 x P x P x 2
        control_params = torch.normal(mean=0.0, std=sigma_tps * torch.ones(batch_size, 1, points_tps ** 2),
                                      generator=generator)
        return cls(theta, control_points, control_params, align_corners=align_corners)

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """Apply the transform to points (B or 1, N, 2) -> (B, N, 2)."""
        theta = self.theta.to(coords).unsqueeze(1)  # B x 1 x 2 x 3
        out = (torch.matmul(theta[..., :2], coords.unsqueeze(-1)) + theta[..., 2:]).squeeze(-1)  # B x N x 2
        if self.control_params is not None:
            cp = self.control_points.to(coords).view(1, 1, -1, 2)  # 1 x 1 x P^2 x 2
            w = self.control_params.to(coords)  # B x 1 x P^2
            dist = (coords.view(coords.shape[0], -1, 1, 2) - cp).abs().sum(-1)  # b x N x P^2, L1
            radial = (fomm_tps_radial(dist) * w).sum(dim=2)  # B x N
            out = out + radial.view(self.batch_size, coords.shape[1], 1)
        return out

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Warp images (B, C, H, W) with reflection padding (the equivariance input)."""
        b, _, h, w = frame.shape
        grid = make_coordinate_grid((h, w), frame.dtype, frame.device).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(self.batch_size, h, w, 2)  # B x H x W x 2
        return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=self.align_corners)

    def jacobian(self, coords: torch.Tensor) -> torch.Tensor:
        """d warp / d coords at (B, N, 2) -> (B, N, 2, 2) rows (d out_x, d out_y), by autograd as the reference.

        The result stays differentiable in `coords` (create_graph), which the
        Jacobian equivariance loss needs.
        """
        with torch.enable_grad():
            if not coords.requires_grad:
                coords = coords.detach().requires_grad_(True)
            warped = self.warp_coordinates(coords)
            grad_x = torch.autograd.grad(warped[..., 0].sum(), coords, create_graph=True)[0]  # B x N x 2
            grad_y = torch.autograd.grad(warped[..., 1].sum(), coords, create_graph=True)[0]
        return torch.stack([grad_x, grad_y], dim=-2)  # B x N x 2 x 2
