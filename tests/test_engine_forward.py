"""The animation engines run the networks' own forwards: engine output == those forwards called directly.

TPSMM (tiny.yaml, recipe weights) and FOMM (tests/fixtures/fomm_tiny.*), real 64 px frames.
"""
from __future__ import annotations

import os

import pytest
import torch

from modules.animation import Animator, relative_kp, size_multiple
from modules.fomm.animation import FOMMAnimator, normalize_kp
from modules.fomm.animation import size_multiple as fomm_size_multiple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TOL = 1e-4  # the parity tolerance on images (tests/test_speed.py, tests/test_core_parity.py)


def _frames(path: str, indices, size: int = 64) -> torch.Tensor:
    from utils.video import open_video, square_frames

    return square_frames(open_video(path).get_frames(indices), size)


@pytest.fixture(scope="module")
def clip():
    """Source: a face frame; driving: 4 frames of another real clip (64 px)."""
    source = _frames(os.path.join(DATA, "single_face.mp4"), [0])
    driving = _frames(os.path.join(DATA, "carphone.mp4"), list(range(0, 60, 15)))
    return source, driving


@pytest.fixture(scope="module")
def fomm_models():
    from modules import build_models, load_checkpoint

    models = build_models(os.path.join(FIXTURES, "fomm_tiny.yaml"))
    load_checkpoint(os.path.join(FIXTURES, "fomm_tiny.pth.tar"), models, strict=False)
    for m in models.values():
        m.eval()
    return models


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@torch.no_grad()
def _tpsmm_own_forward(models: dict, source: torch.Tensor, driving: torch.Tensor, mode: str,
                       background: bool = False) -> dict:
    """The networks' forwards on the whole batch, no caches: keypoints, dense motion, inpainting."""
    t = driving.shape[0]
    kp_source = models["kp_detector"](source)
    kp_driving = models["kp_detector"](driving)
    kp_s = {k: v.expand(t, -1, -1) for k, v in kp_source.items()}
    if mode == "relative":
        kp_norm = relative_kp(kp_s, kp_driving, {k: v[:1].expand(t, -1, -1) for k, v in kp_driving.items()})
    elif mode == "avd":
        kp_norm = models["avd_network"](kp_s, kp_driving)
    else:
        kp_norm = kp_driving
    bg_param = models["bg_predictor"](source.expand(t, -1, -1, -1), driving) if background else None
    dense = models["dense_motion_network"](source, kp_driving=kp_norm, kp_source=kp_source, bg_param=bg_param)
    out = models["inpainting_network"](source, dense, with_warped_maps=False)
    return {"dense": dense, "prediction": out["prediction"], "kp_norm": kp_norm, "bg_param": bg_param}


@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
def test_tpsmm_engine_equals_the_networks_forward(tiny_models, clip, mode):
    """Within 1e-4, or twice the forward's own change under 1e-6 input noise where that is larger
    (the seeded tiny AVD network amplifies rounding; as tests/test_speed.py)."""
    source, driving = clip
    want = _tpsmm_own_forward(tiny_models, source, driving, mode)
    noise = 1e-6 * torch.randn(driving.shape, generator=torch.Generator().manual_seed(0))
    spread = float((_tpsmm_own_forward(tiny_models, source, driving + noise, mode)["prediction"]
                    - want["prediction"]).abs().max())
    animator = Animator(tiny_models, source, mode=mode)
    got = torch.cat([animator(driving[:3]), animator(driving[3:])])  # the anchor stays frame 0
    assert got.shape == want["prediction"].shape and got.dtype == torch.float32
    assert (got - want["prediction"]).abs().max() < max(TOL, 2 * spread)
    # the dense motion the engine computes is the network's own output, map by map
    with torch.inference_mode():
        kp = animator.keypoints(driving)["fg_kp"]
        motion = animator.dense_motion_forward(kp)
    assert (kp - want["kp_norm"]["fg_kp"]).abs().max() < 1e-6
    tol = max(TOL, 2 * spread)
    assert (motion["deformation"] - want["dense"]["deformation"]).abs().max() < tol
    for ours, theirs in zip(motion["occlusion_map"], want["dense"]["occlusion_map"], strict=True):
        assert (ours - theirs).abs().max() < tol
    assert (motion["contribution_maps"] - want["dense"]["contribution_maps"]).abs().max() < tol


def test_tpsmm_reconstruction_with_background_equals_the_networks_forward(tiny_models, clip):
    source, driving = clip
    want = _tpsmm_own_forward(tiny_models, source, driving, "standard", background=True)
    got = Animator(tiny_models, source, mode="standard", background=True)(driving)
    assert (got - want["prediction"]).abs().max() < TOL
    without = Animator(tiny_models, source, mode="standard")(driving)
    assert (without - want["prediction"]).abs().max() > 1e-3  # the background motion is really used
    exact_bg = want["bg_param"]
    assert not torch.allclose(exact_bg, torch.eye(3).expand_as(exact_bg))  # recipe weights: a real affine
    with pytest.raises(ValueError, match="bg_predictor"):
        Animator({k: v for k, v in tiny_models.items() if k != "bg_predictor"}, source, background=True)


def test_tpsmm_reduced_precision_is_the_same_forward(tiny_models, clip):
    """bf16 engine: the same forward code on a bf16 copy; close to fp32, geometry and outputs fp32."""
    source, driving = clip
    exact = Animator(tiny_models, source, mode="standard", background=True)(driving)
    animator = Animator(tiny_models, source, mode="standard", precision="bf16", background=True)
    fast = animator(driving)
    assert fast.dtype == torch.float32 and 0 < (fast - exact).abs().max() < 0.2
    assert _psnr(fast, exact) > 40
    assert animator.inpainting.first.conv.weight.dtype == torch.float32  # the once-per-video encoder
    assert animator.inpainting.final.weight.dtype == torch.bfloat16
    assert animator.bg_net.bg_encoder.conv1.weight.dtype == torch.float32
    # the user's networks are untouched: their forward has no engine casts
    assert tiny_models["dense_motion_network"].compute is None
    assert tiny_models["inpainting_network"].final.weight.dtype == torch.float32


def test_tpsmm_anchor_equals_prepending_it(tiny_models, clip):
    source, driving = clip
    anchor = driving[2:3]
    prepended = Animator(tiny_models, source, mode="relative")(torch.cat([anchor, driving]))[1:]
    got = Animator(tiny_models, source, mode="relative", anchor=anchor)(driving)
    assert (got - prepended).abs().max() < TOL  # batch composition alone moves the convs by ~3e-5
    assert (got - Animator(tiny_models, source, mode="relative")(driving)).abs().max() > 1e-3  # it matters


@torch.no_grad()
def _fomm_own_forward(models: dict, source: torch.Tensor, driving: torch.Tensor, relative: bool) -> torch.Tensor:
    t = driving.shape[0]
    kp_source = models["kp_detector"](source)
    kp_driving = models["kp_detector"](driving)
    kp_s = {k: v.expand(t, *v.shape[1:]) for k, v in kp_source.items()}
    kp_0 = {k: v[:1].expand(t, *v.shape[1:]) for k, v in kp_driving.items()}
    kp_norm = normalize_kp(kp_s, kp_driving, kp_0, adapt_movement_scale=relative, use_relative_movement=relative,
                           use_relative_jacobian=relative)
    return models["generator"](source.expand(t, -1, -1, -1), kp_driving=kp_norm, kp_source=kp_s)["prediction"]


@pytest.mark.parametrize("mode", ["standard", "relative"])
def test_fomm_engine_equals_the_generators_forward(fomm_models, clip, mode):
    source, driving = clip
    want = _fomm_own_forward(fomm_models, source, driving, relative=mode == "relative")
    animator = FOMMAnimator(fomm_models, source, mode=mode)
    got = torch.cat([animator(driving[:1]), animator(driving[1:])])
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (got - want).abs().max() < TOL
    # the prepared copy folds the UpBlocks of the fp32 path too
    from modules.animation import _PhaseUpBlock

    assert any(isinstance(m, _PhaseUpBlock) for m in animator.generator.modules())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fomm_reduced_precision_is_honoured(fomm_models, clip, precision):
    source, driving = clip
    exact = FOMMAnimator(fomm_models, source)(driving)
    animator = FOMMAnimator(fomm_models, source, precision=precision)
    fast = animator(driving)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert (fast - exact).abs().max() > 1e-4  # not silently fp32
    assert _psnr(fast, exact) > 40
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    dense = animator.generator.dense_motion_network
    assert dense.hourglass.encoder.down_blocks[0].conv.weight.dtype == dtype
    assert animator.generator.final.weight.dtype == dtype
    assert animator.generator.first.conv.weight.dtype == torch.float32  # source encoder, once per video
    with torch.inference_mode():
        kp = animator.keypoints(driving)
        out = animator.generate(driving)
    assert kp["value"].dtype == kp["jacobian"].dtype == torch.float32  # keypoints and Jacobians fp32
    assert out["deformation"].dtype == out["mask"].dtype == out["occlusion_map"].dtype == torch.float32


def test_fomm_anchor_equals_prepending_it(fomm_models, clip):
    source, driving = clip
    anchor = driving[1:2]
    prepended = FOMMAnimator(fomm_models, source)(torch.cat([anchor, driving]))[1:]
    got = FOMMAnimator(fomm_models, source, anchor=anchor)(driving)
    assert (got - prepended).abs().max() < TOL
    assert (got - FOMMAnimator(fomm_models, source)(driving)).abs().max() > 1e-4


def test_unsupported_precision_is_an_error_naming_the_family(tiny_models, fomm_models, clip):
    from modules.animation import make_animation

    source, driving = clip
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16 for the TPSMM family, got 'int8'"):
        Animator(tiny_models, source, precision="int8")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16 for the FOMM family, got 'fp64'"):
        FOMMAnimator(fomm_models, source, precision="fp64")
    with pytest.raises(ValueError, match="FOMM family, got 'int8'"):
        make_animation(source, driving, fomm_models, precision="int8")
    with pytest.raises(ValueError, match="no background predictor"):
        FOMMAnimator(fomm_models, source, background=True)


def test_size_multiple_per_family():
    from modules.family import load_config

    tpsmm = load_config(os.path.join(ROOT, "config", "vox-256.yaml"))  # 5 hourglass blocks at 1/4, 3 down blocks
    fomm = load_config(os.path.join(ROOT, "config", "fomm", "vox-256.yaml"))  # 5 blocks at 1/4 (both hourglasses)
    tiny = load_config(os.path.join(FIXTURES, "fomm_tiny.yaml"))  # 3 blocks at 1/4, 2 down blocks
    assert size_multiple(tpsmm) == Animator.size_multiple(tpsmm) == 128
    assert fomm_size_multiple(fomm) == FOMMAnimator.size_multiple(fomm) == 128
    assert fomm_size_multiple(tiny) == 32
