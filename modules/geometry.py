"""Geometry as pure functions: coordinate grids, Gaussian heatmaps, TPS solve and random TPS.

Coordinates are in [-1, 1] with the endpoints on the outer pixel centres
(`align_corners=True`), last dimension (x, y). The thin-plate spline follows
TPSMM Sec. 3.1 (Eq. 1-2): U(r) = r^2 log r^2, solved per group of 5 keypoints.
"""
from __future__ import annotations

import contextvars

import functools
from dataclasses import dataclass, fields, is_dataclass, replace

import torch

_HALF = (torch.float16, torch.bfloat16)


def to_fp32(value):
    """bf16/fp16 tensors (also inside a dataclass such as TPSParams or a dict) -> fp32; anything else as is."""
    if isinstance(value, torch.Tensor) and value.dtype in _HALF:
        return value.float()
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: to_fp32(getattr(value, f.name)) for f in fields(value)})
    if isinstance(value, dict):  # keypoint dicts ({'value', 'jacobian'})
        return {k: to_fp32(v) for k, v in value.items()}
    return value


def _device_type(values) -> str:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device.type
        if is_dataclass(v) and not isinstance(v, type):
            found = _device_type(getattr(v, f.name) for f in fields(v))
            if found:
                return found
        if isinstance(v, dict):
            found = _device_type(v.values())
            if found:
                return found
    return ""


def fp32_geometry(fn):
    """Run `fn` with autocast off and bf16/fp16 tensor arguments in fp32 (fp64 stays fp64).

    Keypoint geometry must not follow a caller's autocast: a bf16 TPS solve and bf16
    grids move the warp by a large part of the image (the reference's plain autocast
    is off by 0.4), and CUDA autocast would hand `linalg.solve` mixed dtypes.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = _device_type(list(args) + list(kwargs.values())) or "cpu"
        with torch.autocast(device_type=device, enabled=False):
            return fn(*[to_fp32(a) for a in args], **{k: to_fp32(v) for k, v in kwargs.items()})
    return wrapper


def make_coordinate_grid(spatial_size: tuple[int, int], dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Grid of (x, y) in [-1, 1], shape (H, W, 2)."""
    h, w = int(spatial_size[0]), int(spatial_size[1])
    x = torch.arange(w, dtype=dtype, device=device)
    y = torch.arange(h, dtype=dtype, device=device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    yy = y.view(-1, 1).expand(h, w)
    xx = x.view(1, -1).expand(h, w)
    return torch.stack([xx, yy], dim=2)  # H x W x 2


@fp32_geometry
def kp2gaussian(kp: torch.Tensor, spatial_size: tuple[int, int], kp_variance: float) -> torch.Tensor:
    """Isotropic Gaussian around each keypoint: (..., N, 2) -> (..., N, H, W)."""
    grid = make_coordinate_grid(spatial_size, kp.dtype, kp.device)  # H x W x 2
    lead = kp.shape[:-1]
    mean = kp.view(*lead, 1, 1, 2)
    diff = grid.view(*((1,) * len(lead)), *grid.shape) - mean  # ... x N x H x W x 2
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / kp_variance)


def tps_radial(sq_dist: torch.Tensor) -> torch.Tensor:
    """U as a function of the squared distance: r^2 log(r^2 + 1e-9)."""
    return sq_dist * torch.log(sq_dist + 1e-9)


def solve_8x8(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve matrix @ X = rhs for batched small systems.

    Uses `torch.linalg.solve`; the export path swaps this for an unrolled
    Gauss-Jordan elimination (see `gauss_jordan_solve`), which needs no `inverse`.
    """
    if _EXPORT_SOLVE.get():
        # in float64: elimination without pivoting in fp32 moves the animation output by ~2e-4
        return gauss_jordan_solve(matrix.double(), rhs.double()).to(matrix.dtype)
    return torch.linalg.solve(matrix, rhs)


# per thread and context (the web server animates in threads while another may export)
_EXPORT_SOLVE: contextvars.ContextVar[bool] = contextvars.ContextVar("export_friendly_solve", default=False)


class export_friendly_solve:
    """Context manager: TPS solves in this thread use elementary ops only (for ONNX export)."""

    def __enter__(self):
        self._token = _EXPORT_SOLVE.set(True)
        return self

    def __exit__(self, *exc):
        _EXPORT_SOLVE.reset(self._token)
        return False


def gauss_jordan_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Gauss-Jordan elimination without pivoting, unrolled over the (static) size.

    The TPS matrix L + 0.01 I is symmetric with a regularised diagonal, so no
    pivoting is needed in practice; every step is a plain tensor op, so the graph
    exports to ONNX without `inverse`/`linalg` ops.
    """
    n = matrix.shape[-1]
    a = torch.cat([matrix, rhs], dim=-1)  # ... x n x (n + m)
    rows = list(a.unbind(dim=-2))
    for i in range(n):
        pivot = rows[i] / rows[i][..., i:i + 1]
        rows[i] = pivot
        for j in range(n):
            if j != i:
                rows[j] = rows[j] - rows[j][..., i:i + 1] * pivot
    a = torch.stack(rows, dim=-2)
    return a[..., n:]


@dataclass
class TPSParams:
    """A thin-plate spline: affine `theta` (..., 2, 3), control points and weights."""

    theta: torch.Tensor
    control_points: torch.Tensor
    control_params: torch.Tensor


@fp32_geometry
def tps_from_keypoints(kp_1: torch.Tensor, kp_2: torch.Tensor) -> TPSParams:
    """Solve the K TPS maps sending kp_1 -> kp_2 (TPSMM Eq. 1-2, reference regulariser).

    kp_1, kp_2: (B, K, N, 2). L = [[U, P], [P^T, 0]] + 0.01 I (the whole 8x8 matrix,
    affine part included, as the reference does). Returns theta (B, K, 2, 3),
    control_points kp_1 and control_params (B, K, N, 2).
    """
    b, k, n, _ = kp_1.shape
    sq = ((kp_1[:, :, :, None] - kp_1[:, :, None, :]) ** 2).sum(-1)  # B x K x N x N
    kernel = tps_radial(sq)
    ones = kp_1.new_ones(b, k, n, 1)
    p = torch.cat([kp_1, ones], dim=3)  # B x K x N x 3
    top = torch.cat([kernel, p], dim=3)  # B x K x N x (N + 3)
    bottom = torch.cat([p.transpose(2, 3), kp_1.new_zeros(b, k, 3, 3)], dim=3)  # B x K x 3 x (N + 3)
    lmat = torch.cat([top, bottom], dim=2)  # B x K x (N + 3) x (N + 3)
    lmat = lmat + 0.01 * torch.eye(n + 3, dtype=kp_1.dtype, device=kp_1.device)
    y = torch.cat([kp_2, kp_1.new_zeros(b, k, 3, 2)], dim=2)  # B x K x (N + 3) x 2
    param = solve_8x8(lmat, y)  # B x K x (N + 3) x 2
    theta = param[:, :, n:, :].transpose(2, 3)  # B x K x 2 x 3
    return TPSParams(theta=theta, control_points=kp_1, control_params=param[:, :, :n, :])


@fp32_geometry
def tps_warp_keypoint_mode(tps: TPSParams, coords: torch.Tensor) -> torch.Tensor:
    """Apply K keypoint TPS maps to coordinates (B or 1, P, 2) -> (B, K, P, 2)."""
    theta, cp, cw = tps.theta, tps.control_points, tps.control_params
    b, k = theta.shape[:2]
    affine = torch.matmul(theta[..., :2], coords.unsqueeze(1).transpose(2, 3)) + theta[..., 2:]  # B x K x 2 x P
    diff = coords.view(coords.shape[0], 1, 1, -1, 2) - cp.view(b, k, -1, 1, 2)  # B x K x N x P x 2
    radial = tps_radial((diff ** 2).sum(-1))  # B x K x N x P
    nonlinear = torch.matmul(radial.transpose(2, 3), cw)  # B x K x P x 2
    return affine.transpose(2, 3) + nonlinear


@fp32_geometry
def tps_grid_keypoint_mode(tps: TPSParams, spatial_size: tuple[int, int]) -> torch.Tensor:
    """Sampling grids (B, K, H, W, 2) of the K keypoint TPS maps."""
    h, w = spatial_size
    grid = make_coordinate_grid((h, w), tps.theta.dtype, tps.theta.device).view(1, h * w, 2)
    b, k = tps.theta.shape[:2]
    return tps_warp_keypoint_mode(tps, grid).view(b, k, h, w, 2)


def random_tps(batch_size: int, sigma_affine: float, sigma_tps: float, points_tps: int,
               generator: torch.Generator | None = None, device=None,
               dtype: torch.dtype = torch.float32) -> TPSParams:
    """Random TPS for the equivariance loss: theta = I + N(0, sigma_affine), 5x5 grid weights N(0, sigma_tps).

    Draw order matches the reference (theta first, then control weights), so with
    `torch.manual_seed` before the call the draws are the reference's.
    """
    noise = torch.normal(mean=0.0, std=sigma_affine * torch.ones(batch_size, 2, 3), generator=generator)
    theta = noise + torch.eye(2, 3).view(1, 2, 3)
    control_points = make_coordinate_grid((points_tps, points_tps)).view(1, -1, 2)
    control_params = torch.normal(mean=0.0, std=sigma_tps * torch.ones(batch_size, 1, points_tps ** 2),
                                  generator=generator)
    return TPSParams(theta=theta.to(device=device, dtype=dtype),
                     control_points=control_points.to(device=device, dtype=dtype),
                     control_params=control_params.to(device=device, dtype=dtype))


@fp32_geometry
def tps_warp_random_mode(tps: TPSParams, coords: torch.Tensor) -> torch.Tensor:
    """Apply a random TPS to coordinates (B or 1, P, 2) -> (B, P, 2).

    The radial term is one scalar per point added to both x and y (as the reference).
    """
    theta = tps.theta.to(coords).unsqueeze(1)  # B x 1 x 2 x 3
    cp = tps.control_points.to(coords)  # 1 x G x 2
    cw = tps.control_params.to(coords)  # B x 1 x G
    b = theta.shape[0]
    affine = (torch.matmul(theta[..., :2], coords.unsqueeze(-1)) + theta[..., 2:]).squeeze(-1)  # B x P x 2
    diff = coords.view(coords.shape[0], -1, 1, 2) - cp.view(1, 1, -1, 2)  # b x P x G x 2
    radial = tps_radial((diff ** 2).sum(-1)) * cw  # B x P x G
    return affine + radial.sum(dim=2).view(b, coords.shape[1], 1)


@fp32_geometry
def tps_grid_random_mode(tps: TPSParams, spatial_size: tuple[int, int]) -> torch.Tensor:
    """Sampling grid (B, H, W, 2) of a random TPS."""
    h, w = spatial_size
    grid = make_coordinate_grid((h, w), tps.theta.dtype, tps.theta.device).view(1, h * w, 2)
    return tps_warp_random_mode(tps, grid).view(tps.theta.shape[0], h, w, 2)


def to_homogeneous(coords: torch.Tensor) -> torch.Tensor:
    return torch.cat([coords, torch.ones_like(coords[..., :1])], dim=-1)


def from_homogeneous(coords: torch.Tensor) -> torch.Tensor:
    return coords[..., :2] / coords[..., 2:3]
