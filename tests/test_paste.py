"""Paste-back geometry and blending (utils/paste.py) on real photos.

Photos: scikit-image's astronaut (a real 512x512 portrait), enlarged at test time to a
1080x1350 portrait, and a frame of tests/data/single_face.mp4 (640x360 landscape).
Nothing large is committed: the big images are made here from the small real ones.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEAM_BOUND = 1.5  # see test_seam_measure_bound


def portrait_1080x1350() -> np.ndarray:
    """The astronaut enlarged to 1350x1350 and cut to 1080 wide: a real 1080x1350 (W x H) portrait."""
    from PIL import Image
    from skimage import data

    big = np.asarray(Image.fromarray(data.astronaut()).resize((1350, 1350), Image.BICUBIC))
    return np.ascontiguousarray(big[:, 135:135 + 1080])  # 1350 x 1080 x 3


def landscape_640x360() -> np.ndarray:
    from utils.video import open_video

    return open_video(os.path.join(ROOT, "tests", "data", "single_face.mp4")).get_frames([0])[0]  # 360 x 640 x 3


@pytest.fixture(scope="module")
def photos():
    from utils.crop import image_box

    out = {}
    for name, photo in (("portrait", portrait_1080x1350()), ("landscape", landscape_640x360())):
        out[name] = (photo, image_box(photo, "face"))
    return out


def test_geometry_round_trip_and_window():
    """Crop box -> affine -> inverse: corners map to the crop's corners and back; the window clips to the photo."""
    from utils.paste import apply_affine, paste_geometry

    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0 = rng.uniform(-100, 400, size=2)  # may start outside the photo, always overlaps it
        side = rng.uniform(120, 400)
        box = (x0, y0, x0 + side, y0 + side * rng.uniform(0.8, 1.2))
        size = (int(rng.integers(32, 300)), int(rng.integers(32, 300)))
        g = paste_geometry(box, size, (480, 640))
        corners = apply_affine(g.affine, [[box[0], box[1]], [box[2], box[3]]])
        np.testing.assert_allclose(corners, [[0, 0], [size[1], size[0]]], atol=1e-9)
        points = rng.uniform(-50, 700, size=(20, 2))
        np.testing.assert_allclose(apply_affine(g.inverse, apply_affine(g.affine, points)), points, atol=1e-8)
        wx0, wy0, wx1, wy1 = g.window
        assert 0 <= wx0 < wx1 <= 640 and 0 <= wy0 < wy1 <= 480
        assert wx0 <= max(box[0], 0) + 1 and wx1 >= min(box[2], 640) - 1
        np.testing.assert_allclose(apply_affine(g.inverse, [g.window_in_crop[:2], g.window_in_crop[2:]]),
                                   [[wx0, wy0], [wx1, wy1]], atol=1e-8)
    with pytest.raises(ValueError, match="does not overlap"):
        paste_geometry((700, 10, 800, 110), (64, 64), (480, 640))


def test_crop_then_paste_is_the_photo(photos):
    """At scale 1 (box on whole pixels, side = crop size) pasting the crop back gives the photo exactly;
    at the model's scale it gives the photo up to resampling, and pixels outside the window exactly."""
    from utils.crop import crop_resize
    from utils.paste import PasteBack

    photo, box = photos["landscape"]
    exact_box = (200.0, 40.0, 456.0, 296.0)
    crop = crop_resize(photo, exact_box, (256, 256))
    assert np.array_equal(PasteBack(photo, exact_box, (256, 256))(crop), photo)

    for name, (photo, box) in photos.items():
        paste = PasteBack(photo, box, (256, 256))
        out = paste(crop_resize(photo, box, (256, 256)))
        mask = paste.full_mask()
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert np.array_equal(out[mask == 0], photo[mask == 0])
        assert (mask == 0).sum() > 0.3 * mask.size, name  # the face region, not the whole photo
        diff = np.abs(out.astype(int) - photo.astype(int))[mask > 0].mean()
        assert diff < 6.0, (name, diff)  # resampling through 256 px only


def test_blend_mask_is_feathered_and_full_inside():
    from utils.paste import blend_mask, paste_geometry

    feather = 0.1
    g = paste_geometry((100.0, 50.0, 300.0, 250.0), (64, 64), (400, 400))
    mask = blend_mask(g, (400, 400), feather)
    assert mask.shape == (200, 200) and mask.min() >= 0 and mask.max() == 1.0
    feather_px = feather * 200
    assert np.all(mask[21:-21, 21:-21] == 1.0)  # full weight inside the feather
    assert mask[0, 100] < 0.01 and mask[100, 0] < 0.01 and mask[-1, 100] < 0.01 and mask[100, -1] < 0.01
    # smooth: no step larger than the smoothstep's steepest slope (1.5 / feather px)
    assert np.abs(np.diff(mask, axis=1)).max() <= 1.5 / feather_px * 1.01
    assert np.abs(np.diff(mask, axis=0)).max() <= 1.5 / feather_px * 1.01

    # A box reaching past the photo's left and top edges: no ramp there (nothing to blend with).
    g = paste_geometry((-30.0, -10.0, 170.0, 190.0), (64, 64), (400, 400))
    mask = blend_mask(g, (400, 400), feather)
    assert g.window[:2] == (0, 0)
    assert np.all(mask[:150, 0] == 1.0) and np.all(mask[0, :150] == 1.0)
    assert mask[100, -1] < 0.01 and mask[-1, 100] < 0.01


def test_seam_measure_bound(photos):
    """The seam measure on real photos: a crop 20 grey levels off (a colour drift of a model output)
    pasted with the feathered mask stays under SEAM_BOUND; pasted hard (no feather) it is well above.

    Why 1.5: with no drift the measure reads 0.7-0.9 (feathered) and 1.0 (hard: the photo's own
    texture); a hard paste of the 20-level drift reads 2.0 (portrait) and 2.9 (landscape, whose
    background is smooth), 40 levels 3.1 and 5.0. The feather spreads the drift over 0.1 of the
    crop's side (35-52 px here) and reads 0.72 and 1.23. Under 1.5, the border adds at most half
    the gradient the photo has there, less than half of what a hard edge adds."""
    from utils.crop import crop_resize
    from utils.paste import PasteBack, seam_measure

    for name, (photo, box) in photos.items():
        crop = crop_resize(photo, box, (64, 64))
        shifted = np.clip(crop.astype(int) + 20, 0, 255).astype(np.uint8)
        soft, hard = PasteBack(photo, box, (64, 64)), PasteBack(photo, box, (64, 64), feather=0.0)
        soft_seam = seam_measure(soft(shifted), photo, soft.full_mask())
        hard_seam = seam_measure(hard(shifted), photo, hard.full_mask())
        assert soft_seam < SEAM_BOUND, (name, soft_seam)
        assert hard_seam > 1.25 * SEAM_BOUND, (name, hard_seam)  # the measure sees a real seam
        assert seam_measure(soft(crop), photo, soft.full_mask()) < SEAM_BOUND


def test_colour_matching_removes_a_colour_drift(photos):
    from utils.crop import crop_resize
    from utils.paste import PasteBack

    photo, box = photos["portrait"]
    crop = crop_resize(photo, box, (64, 64))
    drift = np.clip(crop.astype(np.float64) * [1.0, 0.9, 1.1] + [30, -20, 10], 0, 255).astype(np.uint8)
    plain, matched = PasteBack(photo, box, (64, 64)), PasteBack(photo, box, (64, 64), colour_match=True)
    for _ in range(15):  # the gain and offset are smoothed over frames
        out_matched = matched(drift)
    out_plain = plain(drift)
    window = plain.full_mask() == 1.0  # where the prediction alone is shown
    err_plain = np.abs(out_plain[window].mean(axis=0) - photo[window].mean(axis=0)).max()
    err_matched = np.abs(out_matched[window].mean(axis=0) - photo[window].mean(axis=0)).max()
    assert err_plain > 15 and err_matched < 0.3 * err_plain, (err_plain, err_matched)


def test_pasted_head_motion_moves_the_landmarks(photos):
    """A prediction whose head moved (the crop cut from a shifted box) pasted back: dlib's 68 landmarks in
    the full frame move by that shift in photo pixels, and the face is not cut off."""
    from utils.detectors import face_landmarker
    from utils.crop import crop_resize
    from utils.paste import PasteBack

    landmarks = face_landmarker("dlib")
    photo, box = photos["landscape"]
    side = box[2] - box[0]
    paste = PasteBack(photo, box, (256, 256))
    still = landmarks(paste(crop_resize(photo, box, (256, 256))))
    assert still is not None
    for dx, dy in ((0.08, 0.0), (0.0, 0.06), (-0.07, 0.05)):  # head moved by this fraction of the crop
        moved_box = box - np.array([dx, dy, dx, dy]) * side  # the content moves by +d inside the crop
        moved = landmarks(paste(crop_resize(photo, moved_box, (256, 256))))
        assert moved is not None, (dx, dy)
        shift = (moved - still).mean(axis=0)
        np.testing.assert_allclose(shift, [dx * side, dy * side], atol=0.012 * side)


def test_fit_max_size():
    from utils.paste import fit_max_size

    photo = portrait_1080x1350()
    assert fit_max_size(photo, 640).shape == (640, 512, 3)
    assert fit_max_size(photo, 1920) is photo and fit_max_size(photo, 0) is photo and fit_max_size(photo, None) is photo
