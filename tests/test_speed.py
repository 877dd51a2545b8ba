"""The animation engine's fast paths give the plain path's results (tiny config, real frames)."""
from __future__ import annotations

import gc
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.animation import (Animator, _InstanceNormCL, _PhaseUpBlock, animate_plain, make_animation, prepared,
                               relative_kp)
from modules.blocks import UpBlock2d

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
TOL = 1e-4


def _frames(path: str, indices, size: int = 64) -> torch.Tensor:
    from utils.video import open_video, square_frames

    return square_frames(open_video(path).get_frames(indices), size)


@pytest.fixture(scope="module")
def clip():
    """Source: a face photo frame; driving: 4 frames of another real clip (64 px)."""
    source = _frames(os.path.join(DATA, "single_face.mp4"), [0])
    driving = _frames(os.path.join(DATA, "carphone.mp4"), list(range(0, 60, 15)))
    return source, driving


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("mode", ["relative", "standard", "avd"])
def test_exact_path_matches_plain_path(tiny_models, clip, mode):
    """Engine (cached source, folded upsampling, batched dense motion) == reference demo loop, frame by frame.

    The seeded tiny networks amplify rounding: the plain path itself moves by up to ~1e-4
    when the driving frames change by 1e-6 (250x below 8-bit quantisation). The engine must
    stay within 1e-4, or within twice that rounding-level spread where it is larger.
    """
    source, driving = clip
    plain = animate_plain(source, driving, tiny_models, mode=mode)
    noise = 1e-6 * torch.randn(driving.shape, generator=torch.Generator().manual_seed(0))
    spread = float((animate_plain(source, driving + noise, tiny_models, mode=mode) - plain).abs().max())
    animator = Animator(tiny_models, source, mode=mode)
    fast = torch.cat([animator(driving[i:i + 1]) for i in range(driving.shape[0])])
    assert fast.shape == plain.shape and fast.dtype == torch.float32
    assert (fast - plain).abs().max() < max(TOL, 2 * spread)
    batched = Animator(tiny_models, source, mode=mode)(driving)
    assert (batched - plain).abs().max() < max(TOL, 2 * spread)


def test_batched_engine_matches_batched_plain(tiny_models, clip):
    """Driving frames in batches: the same as the original modules run on the same batch."""
    source, driving = clip
    m = tiny_models
    t = driving.shape[0]
    with torch.no_grad():
        kp_source = m["kp_detector"](source)
        kp_driving = m["kp_detector"](driving)
        kp_norm = relative_kp({k: v.expand(t, -1, -1) for k, v in kp_source.items()}, kp_driving,
                              {k: v[:1].expand(t, -1, -1) for k, v in kp_driving.items()})
        motion = m["dense_motion_network"](source, kp_driving=kp_norm, kp_source=kp_source)
        plain = m["inpainting_network"](source, motion)["prediction"]
    fast = make_animation(source, driving, m, mode="relative", batch_size=t)
    assert (fast - plain).abs().max() < TOL
    # batches of 3 then 1 (the anchor stays the first frame)
    fast2 = make_animation(source, driving, m, mode="relative", batch_size=3)
    assert (fast2 - plain).abs().max() < TOL


def test_engine_options_match(tiny_models, clip):
    source, driving = clip
    a = Animator(tiny_models, source, channels_last=False, fold_upsampling=False)  # the networks' own forms
    b = Animator(tiny_models, source)  # folded upsampling; decoder one frame at a time on a CPU
    c = Animator(tiny_models, source, decoder_batch=0)  # decoder on the whole batch
    d = Animator(tiny_models, source, channels_last=True)  # channels-last fp32
    assert b.decoder_batch == 1 and b.memory_format == torch.contiguous_format
    assert d.memory_format == torch.channels_last
    assert Animator(tiny_models, source, precision="bf16").memory_format == torch.channels_last
    want = a(driving[:3])
    for other in (b, c, d):
        assert (other(driving[:3]) - want).abs().max() < TOL


def test_channels_last_fp32_instance_norm_stays_channels_last_and_exact():
    torch.manual_seed(0)
    norm = torch.nn.InstanceNorm2d(16, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    wrapped = _InstanceNormCL(norm)
    x = torch.randn(2, 16, 40, 24) * 0.5 + 30  # a large mean against the spread: a one-pass variance loses digits
    want = F.instance_norm(x.double(), weight=norm.weight.double(), bias=norm.bias.double(), eps=norm.eps)
    for layout in (torch.channels_last, torch.contiguous_format):
        got = wrapped(x.contiguous(memory_format=layout))
        assert got.dtype == torch.float32 and got.is_contiguous(memory_format=layout)
        assert (got.double() - want).abs().max() < 2e-4, layout


def test_folded_upblock_equals_upsample_then_conv():
    torch.manual_seed(0)
    block = UpBlock2d(6, 5).eval()
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
        folded = _PhaseUpBlock(block, _InstanceNormCL(block.norm))
        for size, min_pixels in (((16, 20), 256), ((7, 9), 0), ((7, 9), 256)):  # folded, folded, small-map path
            folded.MIN_PIXELS = min_pixels
            x = torch.randn(2, 6, *size)
            want = block(x)
            got = folded(x.contiguous(memory_format=torch.channels_last))
            assert got.shape == want.shape == (2, 5, 2 * size[0], 2 * size[1])
            assert (got - want).abs().max() < 1e-5, size
    # 2x2 taps on the low-resolution input: 16 instead of 36 multiply-adds per input pixel and channel pair
    assert folded.weight.shape == (4 * 5, 6, 2, 2)


def test_bf16_path_is_close_and_keeps_geometry_fp32(tiny_models, clip):
    source, driving = clip
    exact = Animator(tiny_models, source)(driving)
    animator = Animator(tiny_models, source, precision="bf16")
    assert animator.dense_motion.hourglass.encoder.down_blocks[0].conv.weight.dtype == torch.bfloat16
    assert animator.inpainting.resblock[0].conv1.weight.dtype == torch.bfloat16
    assert animator.kp_net.fg_encoder.conv1.weight.dtype == torch.float32  # keypoints drive the TPS solve
    fast = animator(driving)
    with torch.inference_mode():
        kp = animator.keypoints(driving)["fg_kp"]
        motion = animator.dense_motion_forward(kp)
    assert kp.dtype == motion["deformation"].dtype == torch.float32
    assert all(o.dtype == torch.float32 for o in motion["occlusion_map"])
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert _psnr(fast, exact) > 40
    assert 0 < (fast - exact).abs().max() < 0.2


def test_prepared_copies_follow_weight_updates(tiny_models, clip):
    """A cached prepared copy is rebuilt when the weights change in place (e.g. a new checkpoint loaded)."""
    source, driving = clip
    final = tiny_models["inpainting_network"].final
    before = prepared(final)
    assert prepared(final) is before
    with torch.no_grad():
        final.bias.add_(0.5)
    after = prepared(final)
    assert after is not before and torch.allclose(after.bias, final.bias)
    plain = animate_plain(source, driving[:2], tiny_models)
    animator = Animator(tiny_models, source)
    fast = torch.cat([animator(driving[i:i + 1]) for i in range(2)])
    assert (fast - plain).abs().max() < TOL
    # the user's modules are never changed by the engine
    assert final.weight.dtype == torch.float32 and final.weight.is_contiguous()


def test_engine_keeps_no_per_frame_state(tiny_models, clip):
    """Memory is flat in video length: nothing accumulates in the Animator or in live tensors across batches."""
    source, driving = clip
    animator = Animator(tiny_models, source, precision="bf16")

    def held_bytes():
        return sum(v.numel() * v.element_size() for v in _tensors(animator.__dict__))

    def live_tensors():
        gc.collect()
        with warnings.catch_warnings():  # isinstance on deprecated torch objects warns
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    animator(driving[:2])
    held, live = held_bytes(), live_tensors()
    for _ in range(4):
        out = animator(driving[1:4])
        del out
    assert held_bytes() == held
    assert live_tensors() <= live


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def test_bad_precision_is_a_clear_error(tiny_models, clip):
    source, driving = clip
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16 for the TPSMM family, got .int8."):
        Animator(tiny_models, source, precision="int8")
    with pytest.raises(ValueError, match="precision"):
        make_animation(source, driving, tiny_models, precision="double")


def test_hull_scale_cached_matches_relative_kp(tiny_models, clip):
    source, driving = clip
    animator = Animator(tiny_models, source, mode="relative")
    kp = animator.keypoints(driving[:2])["fg_kp"]
    kp_source = animator.kp_detector(source)
    kp_driving = animator.kp_detector(driving)
    want = relative_kp({k: v.expand(4, -1, -1) for k, v in kp_source.items()}, kp_driving,
                       {k: v[:1].expand(4, -1, -1) for k, v in kp_driving.items()})["fg_kp"]
    later = animator.keypoints(driving[2:])["fg_kp"]  # same anchor for later batches
    assert np.allclose(torch.cat([kp, later]).numpy(), want.numpy(), atol=1e-6)
