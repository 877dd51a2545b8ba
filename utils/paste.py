"""Full-frame results: the animated crop pasted back into the photo, frame by frame.

The model animates a square crop of the photo (`utils.crop.image_box`: the face grown
`FACE_SCALE` times, or the person). `paste_geometry` turns that crop box into the affine
map photo -> crop and its inverse crop -> photo, and the photo pixels the crop covers (the
window). `PasteBack` resizes each prediction through the inverse map onto the window and
blends it in with a feathered mask: weight 1 in the middle of the crop, falling smoothly
to 0 at the crop's border (no step, so no seam), and 1 up to the photo's edge on sides
where the crop reaches it (nothing to blend with there). Pixels outside the window are
the photo's own, unchanged. Optional colour matching fits a per-channel gain and offset
that makes the prediction agree with the photo in the feather band (smoothed over
frames). Everything is per frame: memory does not grow with the video's length.

Coordinates are continuous pixels: pixel i spans [i, i + 1), as in `utils.crop.crop_resize`
and PIL's `resize(box=...)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Feather width as a fraction of the crop's side, per crop kind. A face crop is 1.9 face boxes
# wide (utils.crop.FACE_SCALE), so a 0.1 feather leaves the middle 0.8 x 1.9 = 1.52 face boxes at
# full weight: the face box plus 0.26 of its side on every side for a nodding or turning head,
# then 0.19 face boxes of feather. A person box already fills the crop (PERSON_SCALE 1.15), so
# its feather is narrower. 'none' crops are the whole photo: nothing to blend with.
FEATHER = {"face": 0.10, "person": 0.05, "centre": 0.10, "none": 0.0}
DEFAULT_MAX_SIZE = 1920  # long side of full-frame results


@dataclass(frozen=True)
class PasteGeometry:
    """Where a crop of the photo sits: affine maps both ways and the photo pixels it covers.

    affine: 2x3, photo (x, y) -> crop (u, v); inverse: 2x3, crop -> photo.
    window: (x0, y0, x1, y1) integer photo pixels touched by the crop box, clipped to the photo.
    window_in_crop: the window's corners in crop coordinates (the resize box for the prediction).
    box: the crop box (x0, y0, x1, y1) in photo pixels; crop_size: (height, width) of the crop.
    """

    affine: np.ndarray
    inverse: np.ndarray
    window: tuple[int, int, int, int]
    window_in_crop: tuple[float, float, float, float]
    box: tuple[float, float, float, float]
    crop_size: tuple[int, int]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) as (x, y) through a 2x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]  # N x 2


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (as a 2x3 matrix)."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])  # 3 x 3
    return np.linalg.inv(full)[:2]


def paste_geometry(box, crop_size: tuple[int, int], photo_shape: tuple[int, int]) -> PasteGeometry:
    """Crop box -> affine (photo -> crop) -> inverse (crop -> photo), and the photo window it covers.

    box: (x0, y0, x1, y1) in photo pixels, as `utils.crop.image_box` returns (may reach outside
    the photo: `crop_resize` fills that part by repeating the border); crop_size: (height, width)
    the crop was resized to; photo_shape: (height, width) of the photo.
    """
    x0, y0, x1, y1 = [float(v) for v in box]
    height, width = int(crop_size[0]), int(crop_size[1])
    if x1 <= x0 or y1 <= y0 or height < 1 or width < 1:
        raise ValueError(f"empty crop box {box} or size {crop_size}")
    sx, sy = width / (x1 - x0), height / (y1 - y0)
    affine = np.array([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0]])  # photo -> crop
    ph, pw = int(photo_shape[0]), int(photo_shape[1])
    window = (max(0, int(math.floor(x0))), max(0, int(math.floor(y0))),
              min(pw, int(math.ceil(x1))), min(ph, int(math.ceil(y1))))
    if window[2] <= window[0] or window[3] <= window[1]:
        raise ValueError(f"crop box {box} does not overlap the {pw}x{ph} photo")
    (u0, v0), (u1, v1) = apply_affine(affine, [[window[0], window[1]], [window[2], window[3]]])
    return PasteGeometry(affine=affine, inverse=invert_affine(affine), window=window,
                         window_in_crop=(float(u0), float(v0), float(u1), float(v1)),
                         box=(x0, y0, x1, y1), crop_size=(height, width))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)  # 0 and 1 with zero slope at both ends: no visible ramp start


def _ramp(start: int, stop: int, edge0: float, edge1: float, feather: float, limit: int) -> np.ndarray:
    """Weights of pixels start..stop-1 along one axis: 0 at the box edges, 1 at `feather` px inside.

    An edge at or beyond the photo's border (0 or `limit`) gets no ramp.
    """
    centres = np.arange(start, stop, dtype=np.float64) + 0.5
    ramp = np.ones_like(centres)
    if feather <= 0:
        return ramp
    if edge0 > 0:
        ramp *= _smoothstep((centres - edge0) / feather)
    if edge1 < limit:
        ramp *= _smoothstep((edge1 - centres) / feather)
    return ramp


def blend_mask(geometry: PasteGeometry, photo_shape: tuple[int, int], feather: float) -> np.ndarray:
    """Blend weights (h, w) float32 over the geometry's window; `feather` as a fraction of the box's side."""
    x0, y0, x1, y1 = geometry.box
    wx0, wy0, wx1, wy1 = geometry.window
    feather_px = float(feather) * min(x1 - x0, y1 - y0)
    rx = _ramp(wx0, wx1, x0, x1, feather_px, int(photo_shape[1]))
    ry = _ramp(wy0, wy1, y0, y1, feather_px, int(photo_shape[0]))
    return (ry[:, None] * rx[None, :]).astype(np.float32)  # h x w


def fit_max_size(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """`image` (H, W, 3) uint8 shrunk (aspect kept, antialiased) so its long side is at most `max_size`."""
    if not max_size or max(image.shape[:2]) <= int(max_size):
        return image
    from PIL import Image

    factor = int(max_size) / float(max(image.shape[:2]))
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS, reducing_gap=3.0), dtype=np.uint8)


def paste_back_bytes(photo_shape: tuple[int, int], box) -> int:
    """Lower bound of `PasteBack`'s memory: the full result frame (uint8) and, over the photo window the box
    covers, the blend mask and the float32 photo region, warped prediction and blend of one frame."""
    height, width = int(photo_shape[0]), int(photo_shape[1])
    x0, y0, x1, y1 = [float(v) for v in box]
    window = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
    return int(height * width * 3 + window * (4 + 3 * 3 * 4))


class PasteBack:
    """`compose(prediction)` -> the full photo with the animated crop blended in (a stream: one frame at a time).

    photo: (H, W, 3) uint8, the frame every result is pasted into; box: the crop box the model's
    source was cut with; crop_size: (height, width) of the predictions; feather: fraction of the
    box side (FEATHER); colour_match: fit the prediction's colours to the photo's in the feather
    band, a per-channel gain and offset smoothed over frames with `colour_momentum`.
    """

    def __init__(self, photo: np.ndarray, box, crop_size: tuple[int, int], feather: float = FEATHER["face"],
                 colour_match: bool = False, colour_momentum: float = 0.8):
        self.photo = np.ascontiguousarray(photo, dtype=np.uint8)
        self.geometry = paste_geometry(box, crop_size, self.photo.shape[:2])
        self.mask = blend_mask(self.geometry, self.photo.shape[:2], feather)[..., None]  # h x w x 1
        x0, y0, x1, y1 = self.geometry.window
        self.region = self.photo[y0:y1, x0:x1].astype(np.float32)  # h x w x 3
        band = (self.mask[..., 0] > 0.02) & (self.mask[..., 0] < 0.98)
        self.band = band if band.sum() >= 16 else None  # no feather band: no colour matching possible
        self.colour_match = bool(colour_match)
        self.colour_momentum = float(colour_momentum)
        self.gain_offset: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.photo.shape[:2]

    def full_mask(self) -> np.ndarray:
        """The blend weights over the whole photo (H, W) float32: 0 outside the window."""
        out = np.zeros(self.photo.shape[:2], dtype=np.float32)
        x0, y0, x1, y1 = self.geometry.window
        out[y0:y1, x0:x1] = self.mask[..., 0]
        return out

    def warp(self, prediction: np.ndarray) -> np.ndarray:
        """A prediction (h, w, 3) uint8 at the crop size, resampled onto the photo window (float32)."""
        from PIL import Image

        if tuple(prediction.shape[:2]) != self.geometry.crop_size:
            raise ValueError(f"prediction is {prediction.shape[:2]}, the crop is {self.geometry.crop_size}")
        x0, y0, x1, y1 = self.geometry.window
        # The window's outer pixels reach up to one photo pixel past the crop box: repeat the border.
        pad = 2 + int(math.ceil(max(self.geometry.affine[0, 0], self.geometry.affine[1, 1])))
        padded = np.pad(np.ascontiguousarray(prediction, dtype=np.uint8), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        u0, v0, u1, v1 = self.geometry.window_in_crop
        out = Image.fromarray(padded).resize((x1 - x0, y1 - y0), Image.BICUBIC,
                                             box=(u0 + pad, v0 + pad, u1 + pad, v1 + pad))
        return np.asarray(out, dtype=np.float32)  # h x w x 3, window size

    def _match_colours(self, warped: np.ndarray) -> np.ndarray:
        pred, ref = warped[self.band], self.region[self.band]  # N x 3 each
        gain = np.clip(ref.std(axis=0) / np.maximum(pred.std(axis=0), 1.0), 0.75, 1.33)
        offset = ref.mean(axis=0) - gain * pred.mean(axis=0)
        if self.gain_offset is not None:
            m = self.colour_momentum
            gain = m * self.gain_offset[0] + (1 - m) * gain
            offset = m * self.gain_offset[1] + (1 - m) * offset
        self.gain_offset = (gain, offset)
        return warped * gain + offset

    def __call__(self, prediction: np.ndarray) -> np.ndarray:
        """One prediction (h, w, 3) uint8 -> the full frame (H, W, 3) uint8."""
        warped = self.warp(prediction)
        if self.colour_match and self.band is not None:
            warped = self._match_colours(warped)
        blended = self.region + self.mask * (warped - self.region)
        out = self.photo.copy()
        x0, y0, x1, y1 = self.geometry.window
        out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out

    compose = __call__


def seam_measure(frame: np.ndarray, photo: np.ndarray, mask: np.ndarray, width: int = 2) -> float:
    """Mean gradient magnitude of `frame` across the blend border, over the photo's own there.

    The blend border is where the full-photo blend weights `mask` (H, W) cross 0.5 (the edge
    of a hard paste; the middle of a feather), widened by `width` pixels to both sides; the
    photo's own edges do not count. About 1: the border shows no more structure than the
    photo has there; a visible edge (a step between the paste and the photo) raises it.
    """
    from scipy.ndimage import binary_dilation, binary_erosion

    inside = mask >= 0.5
    band = binary_dilation(inside, iterations=int(width)) & ~binary_erosion(inside, iterations=int(width),
                                                                             border_value=1)

    def gradient(image: np.ndarray) -> np.ndarray:
        gray = image.astype(np.float64).mean(axis=2)
        gy, gx = np.gradient(gray)
        return np.hypot(gx, gy)  # H x W

    if not band.any():
        return 1.0  # no border inside the photo (the crop covers it all)
    return float(gradient(frame)[band].mean() / max(gradient(photo)[band].mean(), 1e-6))
