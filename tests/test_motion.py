"""evaluation.motion on a real 64 px clip: moving copies correlate, frozen and shuffled ones do not."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.motion import as_uint8_frames, displacements, landmark_tracks, motion_correlation, pearson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.path.join(ROOT, "data", "demo", "test", "carphone#003.png")  # 30 frames, 64 px, a man talking


@pytest.fixture(scope="module")
def clip():
    frames = as_uint8_frames(CLIP)
    return frames, landmark_tracks(frames)


def half_resolution(frames: np.ndarray) -> np.ndarray:
    """The clip shrunk to 32 px and back: same motion, blurred (what a good animation looks like)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # T x 3 x 64 x 64
    y = F.interpolate(F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True), size=(64, 64), mode="bilinear")
    return y.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_pearson_matches_numpy_and_constant_is_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(size=40)
    b = b + 0.5 * a
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert pearson(np.full(10, 0.3), a[:10]) == 0.0


def test_landmarks_found_on_every_frame(clip):
    frames, tracks = clip
    assert tracks.shape == (30, 68, 2)
    assert np.isfinite(tracks).all()
    assert 0.0 < np.nanmin(tracks) and np.nanmax(tracks) < 1.0  # in frame widths, inside the frame
    steps = displacements(tracks)
    assert steps.shape == (29,) and steps.max() > 0.005  # the man moves (half a pixel per frame or more)


def test_clip_against_itself_and_a_blurred_copy(clip):
    frames, tracks = clip
    same = motion_correlation(frames, frames, driving_tracks=tracks)
    assert same["pearson"] == pytest.approx(1.0, abs=1e-9) and same["steps"] == 29
    blurred = motion_correlation(half_resolution(frames), frames, driving_tracks=tracks)
    assert blurred["pearson"] >= 0.8, blurred
    as_tensor = torch.from_numpy(half_resolution(frames)).permute(0, 3, 1, 2).float() / 255.0  # T x 3 x H x W
    assert motion_correlation(as_tensor, frames, driving_tracks=tracks)["pearson"] == pytest.approx(blurred["pearson"])


def test_frozen_and_shuffled_copies_do_not_correlate(clip):
    frames, tracks = clip
    frozen = motion_correlation(np.repeat(frames[:1], len(frames), axis=0), frames, driving_tracks=tracks)
    assert frozen["pearson"] == 0.0 and frozen["generated_motion"] == 0.0 and frozen["driving_motion"] > 0.0
    order = np.random.default_rng(0).permutation(len(frames))
    shuffled = motion_correlation(frames[order], frames, driving_tracks=tracks)
    assert shuffled["pearson"] < 0.5, shuffled
    assert shuffled["generated_motion"] > 2 * shuffled["driving_motion"]  # jumps between random frames


def test_length_mismatch_is_an_error(clip):
    frames, tracks = clip
    with pytest.raises(ValueError, match="frames"):
        motion_correlation(frames[:10], frames, driving_tracks=tracks)
