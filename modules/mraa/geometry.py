"""MRAA geometry as pure functions: region parameters from heatmaps, the closed-form 2x2 eigen-decomposition,
covariance Gaussians, sparse motions and the background transform (MRAA, Siarohin et al. CVPR 2021, Sec. 3).

Coordinates are in [-1, 1] (x = 2j/(w-1) - 1), last dimension (x, y), as `modules.geometry.make_coordinate_grid`.
Region parameters are dicts: 'shift' (B, K, 2), 'covar' (B, K, 2, 2), 'affine' (B, K, 2, 2), and from the region
predictor also 'heatmap' (B, K, h, w), 'u' and 'd' (B*K, 2, 2, the published layout).
Everything runs on the tensors' own device.
"""
from __future__ import annotations

import torch

from modules.geometry import make_coordinate_grid


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite (zero) gradient at 0: the two-`where` form, so no NaN leaks into backward."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _lapack_tolerance(dtype: torch.dtype) -> float:
    """LAPACK's dbdsqr relative tolerance for `dtype`: max(10, min(100, eps^(-1/8))) eps, eps = unit roundoff."""
    eps = torch.finfo(dtype).eps / 2
    return max(10.0, min(100.0, eps ** -0.125)) * eps


def symmetric_eig2x2(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of symmetric positive semi-definite 2x2 matrices [[a, b], [b, c]] (..., 2, 2) in
    closed form, on their device, as `torch.svd` (LAPACK gesdd on the CPU) returns it.

    Returns (u (..., 2, 2), s (..., 2)): matrix = u diag(s) u^T, s[..., 0] >= s[..., 1] >= 0, and u the
    singular vectors with LAPACK's signs, which the published MRAA code's `torch.svd(covar.cpu())` gave:

    - in general u = sigma [[-cos t, -sin t], [-sin t, cos t]] with t = atan2(2b, a - c) / 2 in (-pi/2, pi/2]:
      the major axis pointing to negative x, the minor axis that one turned by -90 degrees (det u = -1), and
      sigma = -1 exactly when b > 0 and ac - b^2 > a^2 + b^2 (LAPACK's bidiagonal B = H M, H the Householder
      reflection of the first column, has |B[1,1]| > |B[0,0]|: `dlasv2` swaps), else +1. Every region of
      the parity fixture has sigma = +1 (README: det u = -1, u[0,0] < 0).
    - when b = 0, or |B[0,1]| is below LAPACK's convergence threshold (dbdsqr splits the bidiagonal without a
      rotation), u is LAPACK's own vectors: H (b = 0: the identity) with its columns swapped when
      |B[1,1]| > |B[0,0]|; they differ from the exact eigenvectors by less than the threshold (about 6e-7
      relative in fp32), and are what LAPACK returns when the eigenvalues are (nearly) equal.

    The rules were read off LAPACK's algorithm (dgebd2, dbdsqr, dlasv2; MKL on x86 behaves the same) and are
    tested against torch.svd and torch.linalg.svd on random and (near-)degenerate matrices in fp32 and fp64
    (tests/test_mraa_eig.py). Where |B[1,1]| and |B[0,0]| are equal to within rounding (in fp32: regions
    isotropic to about 1e-3 with a tiny positive b, ~1 in 10^4 of such matrices) LAPACK's rounding decides
    and sigma may differ; the eigenvectors themselves are ill-conditioned there. s are the exact eigenvalues,
    which equal the singular values for these matrices. Differentiable (the decisions are constants).
    """
    a = matrix[..., 0, 0]
    b = matrix[..., 0, 1]
    c = matrix[..., 1, 1]
    mean = 0.5 * (a + c)
    half_diff = 0.5 * (a - c)
    radius = _safe_sqrt(half_diff * half_diff + b * b)
    s = torch.stack([mean + radius, mean - radius], dim=-1)  # ... x 2, descending
    # angle of the major axis; at radius 0 (equal eigenvalues) any axis is one: take t = 0, with a zero gradient
    degenerate = radius == 0
    angle = 0.5 * torch.atan2(torch.where(degenerate, torch.zeros_like(b), b),
                              torch.where(degenerate, torch.ones_like(half_diff), half_diff))
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = torch.stack([torch.stack([-cos, -sin], dim=-1), torch.stack([-sin, cos], dim=-1)], dim=-2)  # ... x 2 x 2

    # LAPACK's bidiagonalisation B = H M = [[f, e], [0, h]] (H: I when b = 0, else the Householder reflection
    # of the first column, dlarfg: beta = -sign(a) |(a, b)|, tau, v = (1, v2)); arithmetic in LAPACK's order
    reflect = b != 0
    norm = torch.hypot(torch.where(reflect, a, torch.ones_like(a)), torch.where(reflect, b, torch.zeros_like(b)))
    norm = torch.where(reflect, norm, torch.ones_like(a))  # dlapy2 (finite gradients where b = 0)
    beta = torch.where(a >= 0, -norm, norm)
    with torch.no_grad():  # the decisions: which sign, which columns, whether dbdsqr rotates at all
        tau = (beta - a) / beta
        v2 = b * (1 / (a - beta))
        w = b + v2 * c  # dlarf: H applied to the second column
        f = torch.where(reflect, beta, a).abs()
        e = torch.where(reflect, b - tau * w, torch.zeros_like(b)).abs()
        h = torch.where(reflect, c - tau * v2 * w, c).abs()
        swap = h > f  # dlasv2 (and the final sort) put B's second diagonal entry first
        lapack_sign = torch.where(reflect & (b > 0) & swap, -torch.ones_like(b), torch.ones_like(b))
        ratio = torch.where(f + e > 0, f / torch.where(f + e > 0, f + e, torch.ones_like(f)), torch.zeros_like(f))
        smallest = torch.minimum(f, h * ratio) / 2 ** 0.5  # dbdsqr's estimate of the smallest singular value
        split = e <= torch.clamp(_lapack_tolerance(matrix.dtype) * smallest,
                                 min=24 * torch.finfo(matrix.dtype).tiny)  # dbdsqr: e treated as 0
    # H's columns (a, b) / beta and (b, -a) / beta (the identity when b = 0), swapped as LAPACK sorts them
    h00 = torch.where(reflect, a / beta, torch.ones_like(a))
    h01 = torch.where(reflect, b / beta, torch.zeros_like(b))
    h11 = torch.where(reflect, -a / beta, torch.ones_like(a))
    first = torch.stack([h00, h01], dim=-1)  # ... x 2, H[:, 0]
    second = torch.stack([h01, h11], dim=-1)  # ... x 2, H[:, 1]
    col0 = torch.where(swap[..., None], second, first)
    col1 = torch.where(swap[..., None], first, second)
    householder = torch.stack([col0, col1], dim=-1)  # ... x 2 x 2, columns
    u = torch.where(split[..., None, None], householder, u * lapack_sign[..., None, None])
    return u, s


def region_params_from_heatmap(heatmap: torch.Tensor) -> dict[str, torch.Tensor]:
    """Heatmaps (B, K, h, w), each summing to 1 -> {'shift' (B, K, 2), 'covar' (B, K, 2, 2)} (MRAA Eq. 2-3).

    shift = sum_z H(z) z over a [-1, 1] grid laid over the heatmap; covar = sum_z H(z) (z - shift)(z - shift)^T.
    """
    grid = make_coordinate_grid(heatmap.shape[2:], heatmap.dtype, heatmap.device)  # h x w x 2
    weights = heatmap.unsqueeze(-1)  # B x K x h x w x 1
    shift = (weights * grid).sum(dim=(2, 3))  # B x K x 2
    centred = grid - shift[:, :, None, None]  # B x K x h x w x 2
    outer = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # B x K x h x w x 2 x 2
    covar = (outer * weights.unsqueeze(-1)).sum(dim=(2, 3))  # B x K x 2 x 2
    return {"shift": shift, "covar": covar}


def pca_affine(covar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PCA affine of each covariance (B, K, 2, 2): (affine (B, K, 2, 2), u (B*K, 2, 2), d (B*K, 2, 2)).

    affine = u diag(sqrt(s)), so affine affine^T = covar; u and d = diag(sqrt(s)) are returned flat over
    B*K as the published region predictor returns them.
    """
    b, k = covar.shape[:2]
    u, s = symmetric_eig2x2(covar.reshape(b * k, 2, 2))  # B*K x 2 x 2, B*K x 2
    d = torch.diag_embed(_safe_sqrt(s))  # B*K x 2 x 2
    affine = torch.matmul(u, d).view(b, k, 2, 2)  # B x K x 2 x 2
    return affine, u, d


def covariance_gaussian(shift: torch.Tensor, covar: torch.Tensor | None, spatial_size: tuple[int, int],
                        variance: float = 0.01) -> torch.Tensor:
    """exp(-0.5 (z - shift)^T inv(covar) (z - shift)) per region: (B, K, 2), (B, K, 2, 2) -> (B, K, h, w).

    With `covar` None the isotropic exp(-0.5 |z - shift|^2 / variance) (the published `region_var`).
    """
    grid = make_coordinate_grid(spatial_size, shift.dtype, shift.device)  # h x w x 2
    diff = grid - shift[:, :, None, None]  # B x K x h x w x 2
    if covar is None:
        return torch.exp(-0.5 * (diff * diff).sum(-1) / variance)
    precision = torch.inverse(covar)[:, :, None, None]  # B x K x 1 x 1 x 2 x 2
    mahalanobis = torch.matmul(torch.matmul(diff.unsqueeze(-2), precision), diff.unsqueeze(-1))  # ... x 1 x 1
    return torch.exp(-0.5 * mahalanobis[..., 0, 0])  # B x K x h x w


def region_jacobians(driving: dict, source: dict, revert_axis_swap: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A_k = affine_s,k inv(affine_d,k) (B, K, 2, 2) and its sign s_k = sign(A_k[0, 0]) (B, K).

    With `revert_axis_swap` A_k is multiplied by s_k, undoing a sign flip of a whole PCA affine between
    the two frames (MRAA code; it does not undo the flip of one axis).
    """
    jacobian = torch.matmul(source["affine"], torch.inverse(driving["affine"]))  # B x K x 2 x 2
    sign = torch.sign(jacobian[..., 0, 0])  # B x K
    if revert_axis_swap:
        jacobian = jacobian * sign[..., None, None]
    return jacobian, sign


def sparse_motions(spatial_size: tuple[int, int], driving: dict, source: dict, bg_params: torch.Tensor | None = None,
                   revert_axis_swap: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """K+1 backward maps from the driving frame to the source, (B, K+1, h, w, 2), and the A_k signs (B, K) or None.

    Channel 0 is the background: the identity, or the 3x3 `bg_params` (B, 3, 3) applied to homogeneous grid
    points. Region k: T_k(z) = A_k (z - shift_d,k) + shift_s,k (MRAA Eq. 4); without 'affine' in the
    parameters T_k(z) = z - shift_d,k + shift_s,k.
    """
    shift_d, shift_s = driving["shift"], source["shift"]
    b, k = shift_d.shape[:2]
    h, w = spatial_size
    identity = make_coordinate_grid((h, w), shift_d.dtype, shift_d.device).view(1, 1, h, w, 2)
    coords = identity - shift_d.view(b, k, 1, 1, 2)  # B x K x h x w x 2
    sign = None
    if "affine" in driving:
        jacobian, sign = region_jacobians(driving, source, revert_axis_swap)  # B x K x 2 x 2
        coords = torch.matmul(jacobian[:, :, None, None], coords.unsqueeze(-1)).squeeze(-1)  # B x K x h x w x 2
    regions = coords + shift_s.view(-1, k, 1, 1, 2)  # B x K x h x w x 2 (a source of batch 1 broadcasts)
    background = identity.expand(b, 1, h, w, 2) if bg_params is None else apply_background(bg_params, (h, w))
    return torch.cat([background, regions], dim=1), sign  # B x K+1 x h x w x 2


def apply_background(bg_params: torch.Tensor, spatial_size: tuple[int, int]) -> torch.Tensor:
    """The background motion of 3x3 matrices (B, 3, 3) on the driving grid: (B, 1, h, w, 2).

    p' = M (x, y, 1)^T, divided by its third coordinate (a perspective transform; affine and shift
    matrices have last row (0, 0, 1)).
    """
    h, w = spatial_size
    grid = make_coordinate_grid((h, w), bg_params.dtype, bg_params.device)  # h x w x 2
    homogeneous = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)  # h x w x 3
    mapped = torch.matmul(bg_params[:, None, None], homogeneous.unsqueeze(-1)).squeeze(-1)  # B x h x w x 3
    return (mapped[..., :2] / mapped[..., 2:]).unsqueeze(1)  # B x 1 x h x w x 2


def bg_matrix(values: torch.Tensor, bg_type: str) -> torch.Tensor:
    """The background predictor's output (B, 2 | 6 | 8) as 3x3 matrices (B, 3, 3) with last row (0, 0, 1) set
    by the type: shift -> [:2, 2]; affine -> [:2, :] (row-major 2x3); perspective -> [:2, :] and [2, :2]."""
    b = values.shape[0]
    matrix = torch.eye(3, dtype=values.dtype, device=values.device).repeat(b, 1, 1)  # B x 3 x 3
    if bg_type == "shift":
        matrix[:, :2, 2] = values
    elif bg_type == "affine":
        matrix[:, :2, :] = values.view(b, 2, 3)
    elif bg_type == "perspective":
        matrix[:, :2, :] = values[:, :6].view(b, 2, 3)
        matrix[:, 2, :2] = values[:, 6:].view(b, 2)
    else:
        raise ValueError(f"bg_type {bg_type!r} has no parameters")
    return matrix


def region_params_to_vector(params: dict) -> torch.Tensor:
    """Per region [shift (2), affine row-major (4)] flattened: (B, K, ...) -> (B, 6K), the AVD network's input."""
    b, k = params["shift"].shape[:2]
    return torch.cat([params["shift"], params["affine"].reshape(b, k, 4)], dim=-1).view(b, 6 * k)  # B x 6K


def vector_to_region_params(vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 6K) -> {'shift' (B, K, 2), 'affine' (B, K, 2, 2), 'covar' = affine affine^T}."""
    b = vector.shape[0]
    per_region = vector.view(b, -1, 6)  # B x K x 6
    shift = per_region[..., :2]
    affine = per_region[..., 2:].reshape(b, -1, 2, 2)  # B x K x 2 x 2
    return {"shift": shift, "affine": affine, "covar": torch.matmul(affine, affine.transpose(-1, -2))}
