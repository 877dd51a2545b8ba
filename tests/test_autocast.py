"""Keypoint geometry stays fp32 under a caller's autocast (training with precision bf16/fp16)."""
from __future__ import annotations

import pytest
import torch

from modules.geometry import (kp2gaussian, random_tps, tps_from_keypoints, tps_grid_keypoint_mode,
                              tps_grid_random_mode)


def _keypoints(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    kp_1 = torch.rand(2, 3, 5, 2, generator=g) * 1.6 - 0.8
    return kp_1, (kp_1 + 0.1 * torch.randn(2, 3, 5, 2, generator=g)).clamp(-1, 1)


def _geometry(kp_1: torch.Tensor, kp_2: torch.Tensor) -> dict[str, torch.Tensor]:
    tps = tps_from_keypoints(kp_1, kp_2)
    rand = random_tps(2, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(1))
    return {"theta": tps.theta, "grid": tps_grid_keypoint_mode(tps, (16, 12)),
            "random_grid": tps_grid_random_mode(rand, (16, 12)),
            "gaussian": kp2gaussian(kp_1.view(2, 15, 2), (16, 12), 0.01)}


def test_tps_geometry_ignores_cpu_autocast():
    kp_1, kp_2 = _keypoints(0)
    want = _geometry(kp_1, kp_2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _geometry(kp_1, kp_2)
    for name in want:
        assert got[name].dtype == torch.float32, name
        assert torch.equal(got[name], want[name]), name


def test_half_keypoints_are_solved_in_fp32():
    """bf16 keypoints (a bf16 head's output) go into the solve as fp32, not as a mixed-dtype error."""
    kp_1, kp_2 = _keypoints(1)
    kp_1, kp_2 = kp_1.bfloat16(), kp_2.bfloat16()
    want = _geometry(kp_1.float(), kp_2.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _geometry(kp_1, kp_2)
    for name in want:
        assert got[name].dtype == torch.float32 and torch.equal(got[name], want[name]), name


def test_fp64_geometry_stays_fp64():
    kp_1, kp_2 = _keypoints(2)
    got = _geometry(kp_1.double(), kp_2.double())
    assert got["grid"].dtype == torch.float64 and got["theta"].dtype == torch.float64


@pytest.mark.parametrize("name", ["kp_detector", "bg_predictor"])
def test_regression_heads_are_fp32_under_autocast(tiny_models, name):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    net = tiny_models[name]
    args = (x,) if name == "kp_detector" else (x, x.flip(0))
    with torch.no_grad():
        want = net(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(*args)
    want = want["fg_kp"] if name == "kp_detector" else want
    got = got["fg_kp"] if name == "kp_detector" else got
    assert got.dtype == torch.float32
    # the ResNet trunk runs in bf16, the head in fp32: close, not equal
    assert 0 < float((got - want).abs().max()) < 0.05


def test_dense_motion_flow_is_fp32_under_autocast(tiny_models):
    kp_det, dense = tiny_models["kp_detector"], tiny_models["dense_motion_network"]
    g = torch.Generator().manual_seed(4)
    source, driving = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        kp_s, kp_d = kp_det(source), kp_det(driving)
        want = dense(source, kp_driving=kp_d, kp_source=kp_s)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = dense(source, kp_driving=kp_d, kp_source=kp_s, dropout_flag=True, dropout_p=0.0)
    assert got["deformation"].dtype == torch.float32 and got["contribution_maps"].dtype == torch.float32
    sums = got["contribution_maps"].sum(dim=1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert float((got["deformation"] - want["deformation"]).abs().max()) < 0.05


def test_fomm_keypoints_and_motions_are_fp32_under_autocast():
    import os

    from modules import build_models, load_checkpoint
    from modules.fomm.dense_motion import sparse_motions

    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    models = build_models(os.path.join(fixtures, "fomm_tiny.yaml"))
    load_checkpoint(os.path.join(fixtures, "fomm_tiny.pth.tar"), models)
    kp_detector = models["kp_detector"].eval()
    g = torch.Generator().manual_seed(5)
    source, driving = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        kp_s, kp_d = kp_detector(source), kp_detector(driving)
        want = sparse_motions((16, 16), kp_d, kp_s)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kp_auto = kp_detector(driving)
            got = sparse_motions((16, 16), kp_d, kp_s)
            from_half = sparse_motions((16, 16), {k: v.bfloat16() for k, v in kp_d.items()}, kp_s)
    assert set(kp_auto) == {"value", "jacobian"}
    assert all(v.dtype == torch.float32 for v in kp_auto.values())
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert from_half.dtype == torch.float32
