"""The closed-form 2x2 eigen-decomposition of MRAA's region covariances against torch.svd / torch.linalg.svd.

The published region predictor ran `torch.svd` on a CPU copy of every covariance; its signs decide the PCA
affines (and through them the AVD inputs), so `symmetric_eig2x2` reproduces LAPACK's sign and axis choices
(its docstring gives the rules). Checked on the fixture, on random symmetric positive semi-definite matrices,
on exactly degenerate ones, and on near-degenerate ones up to their conditioning.
"""
from __future__ import annotations

import os

import pytest
import torch

from modules.mraa.geometry import pca_affine, symmetric_eig2x2

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


def random_spd(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    factor = torch.randn(n, 2, 2, generator=gen, dtype=dtype)
    scale = 10.0 ** torch.randint(-4, 3, (n, 1, 1), generator=gen).to(dtype)  # 1e-4 .. 1e2
    return factor @ factor.transpose(1, 2) * scale


def sym(a, b, c) -> torch.Tensor:
    return torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)


def test_fixture_u_and_d_every_frame():
    io = torch.load(os.path.join(FIXTURES, "mraa_tiny_io.pt"), weights_only=True)
    rp = io["region_predictor"]
    generated = io["train"]["generated"]
    params = [rp["source"], *rp["driving"]] + [generated[k] for k in ("source_region_params", "driving_region_params",
                                                                       "transformed_region_params")]
    for p in params:
        affine, u, d = pca_affine(p["covar"])
        assert torch.allclose(u, p["u"], atol=1e-6, rtol=0), (u - p["u"]).abs().max()
        assert torch.allclose(d, p["d"], atol=1e-6, rtol=0)
        assert torch.allclose(affine, p["affine"], atol=1e-6, rtol=0)
    # the fixture's regions are all in the general case with sigma = +1 (README: det -1, u[0,0] < 0) ...
    assert all((torch.linalg.det(p["u"]) < 0).all() and (p["u"][:, 0, 0] < 0).all() for p in params[:4])
    # ... and the training batch covers both signs of b and of a - c
    covar = generated["transformed_region_params"]["covar"].view(-1, 2, 2)
    assert (covar[:, 0, 1] > 0).any() and (covar[:, 0, 1] < 0).any()
    assert (covar[:, 0, 0] > covar[:, 1, 1]).any() and (covar[:, 0, 0] < covar[:, 1, 1]).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_spd_matches_torch_svd_and_linalg_svd(dtype):
    matrix = random_spd(20000, dtype)
    u, s = symmetric_eig2x2(matrix)
    svd_u, svd_s, _ = torch.svd(matrix)
    lin_u, lin_s, _ = torch.linalg.svd(matrix)
    flipped = (u * svd_u).sum(-2) < 0  # per column
    assert not flipped.any(), f"{int(flipped.any(-1).sum())} matrices with the opposite sign"
    # both LAPACK conventions; sigma = -1 (b > 0 and a flipped bidiagonal) is among them
    assert ((u[:, 0, 0] > 0) & (matrix[:, 0, 1] > 0)).sum() > 1000
    for ref_u, ref_s in ((svd_u, svd_s), (lin_u, lin_s)):
        assert (u - ref_u).abs().max() <= TOL[dtype]
        assert ((s - ref_s).abs() / ref_s[:, :1]).max() <= 10 * torch.finfo(dtype).eps
    reconstructed = u @ torch.diag_embed(s) @ u.transpose(1, 2)
    assert ((reconstructed - matrix).abs().amax(dim=(1, 2)) / s[:, 0]).max() <= 10 * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_and_axis_aligned_exactly_as_lapack(dtype):
    cases = torch.tensor([
        [[2.0, 0.0], [0.0, 1.0]],   # b = 0, a > c: LAPACK's identity
        [[1.0, 0.0], [0.0, 2.0]],   # b = 0, a < c: columns swapped
        [[1.0, 0.0], [0.0, 1.0]],   # equal eigenvalues
        [[0.0, 0.0], [0.0, 0.0]],   # zero covariance
        [[0.3, 0.0], [0.0, 0.0]],   # rank 1 on an axis
        [[1.0, 1e-12], [1e-12, 1.0]],  # equal diagonal, tiny b: dbdsqr does not rotate
        [[1.0, -1e-12], [-1e-12, 1.0]],
        [[2.0, 1e-12], [1e-12, 1.0]],
        [[1.0, 1e-12], [1e-12, 2.0]],
        [[1.0, -1e-12], [-1e-12, 2.0]],
        [[1.0, 0.5], [0.5, 1.0]],   # equal diagonal, 45 degrees
        [[1.0, -0.5], [-0.5, 1.0]],
        [[0.2, 0.3], [0.3, 0.9]],   # b > 0, flipped bidiagonal: sigma = -1
        [[0.2, -0.3], [-0.3, 0.9]],
    ], dtype=dtype)
    u, s = symmetric_eig2x2(cases)
    ref_u, ref_s, _ = torch.svd(cases)
    for i in range(len(cases)):
        assert torch.allclose(u[i], ref_u[i], atol=TOL[dtype], rtol=0), (cases[i], u[i], ref_u[i])
        assert torch.allclose(s[i], ref_s[i], atol=TOL[dtype], rtol=0)
    assert torch.equal(u[0], torch.eye(2, dtype=dtype)) and torch.equal(u[2], torch.eye(2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_near_degenerate_within_conditioning(dtype):
    """Nearly equal eigenvalues: the eigenvectors move by eps / gap; outside LAPACK's rounding tie band
    (|B[1,1]| = |B[0,0]| to 4 ulp, see symmetric_eig2x2) the signs agree, and u diag(s) u^T is the matrix."""
    gen = torch.Generator().manual_seed(1)
    n = 40000
    eps = torch.finfo(dtype).eps
    a = torch.rand(n, generator=gen, dtype=dtype) + 0.1
    b = (torch.rand(n, generator=gen, dtype=dtype) - 0.5) * 10.0 ** torch.randint(-12, -1, (n,), generator=gen).to(dtype)
    c = a * (1 + (torch.rand(n, generator=gen, dtype=dtype) - 0.5)
             * 10.0 ** torch.randint(-9, -1, (n,), generator=gen).to(dtype))
    c = torch.where(torch.rand(n, generator=gen) < 0.2, a, c)  # a fifth with exactly equal diagonals
    matrix = sym(a, b, c)
    u, s = symmetric_eig2x2(matrix)
    ref_u, ref_s, _ = torch.svd(matrix)
    norm = torch.hypot(a, b)
    tie = ((a * c - b * b) / norm - norm).abs() <= 4 * eps * norm
    flipped = ((u * ref_u).sum(-2) < 0).any(-1)
    assert not (flipped & ~tie).any()
    assert flipped.float().mean() < 1e-3  # measured: 0 in fp64, ~1e-4 in fp32
    gap = ((ref_s[:, 0] - ref_s[:, 1]) / ref_s[:, 0]).clamp(min=eps)
    error = (u - ref_u).abs().amax(dim=(1, 2))
    assert (error[~tie] <= 4 * eps / gap[~tie] + TOL[dtype]).all()
    # LAPACK's unrotated vectors (tiny b) are eigenvectors to its convergence threshold (~ 50 eps in fp64)
    assert ((u @ torch.diag_embed(s) @ u.transpose(1, 2) - matrix).abs().max() <= 100 * eps)


def test_gradient_matches_torch_svd_and_is_finite_when_degenerate():
    torch.manual_seed(0)
    factor = torch.randn(16, 4, 2, 2, dtype=torch.float64)
    covar = (factor @ factor.transpose(-1, -2)).requires_grad_()
    weight = torch.randn(16, 4, 2, 2, dtype=torch.float64)
    affine, _, _ = pca_affine(covar)
    (affine * weight).sum().backward()
    ours = covar.grad.clone()
    covar.grad = None
    ref_u, ref_s, _ = torch.svd(covar.view(-1, 2, 2))
    ((ref_u @ torch.diag_embed(ref_s.sqrt())).view_as(covar) * weight).sum().backward()
    # a covariance is symmetric by construction: only the symmetric part of the gradient reaches the heatmap
    assert torch.allclose(ours + ours.transpose(-1, -2), covar.grad + covar.grad.transpose(-1, -2), atol=1e-8)
    degenerate = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]], requires_grad=True)
    affine, _, _ = pca_affine(degenerate)
    affine.sum().backward()
    assert torch.isfinite(degenerate.grad).all()


def test_runs_where_the_tensor_is():
    """No host copy: the decomposition works on the meta device (a .cpu() or .item() would raise)."""
    u, s = symmetric_eig2x2(torch.empty(8, 2, 2, device="meta"))
    assert u.device.type == "meta" and s.shape == (8, 2)
