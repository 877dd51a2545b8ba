"""Fitting a user's photo or video to the model's input: centre crop, resize, face/person auto-crop.

Boxes are (x0, y0, x1, y1) float pixels of the original frame. A video's auto-crop box
is detected every few frames, interpolated over the gaps, and smoothed over time
(centre and size separately), so the crop follows the face/person without jitter.
Detection uses the offline detectors of `utils.detectors` (MediaPipe, dlib).
The best-frame search follows the reference demo (`find_best_frame`): landmarks
normalised by their mean and the square root of their convex hull's area.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterable, Iterator

import numpy as np

from utils.errors import UserError

CROPS = ("centre", "none", "face", "person")
# Side of the square crop as a multiple of the detected box's longer side.
FACE_SCALE = 1.9      # a face box (brows to chin) grown to head and shoulders, like VoxCeleb frames
PERSON_SCALE = 1.15   # a person box (already padded by the detector) with a little room


class CropError(UserError):
    """A crop that cannot be made (e.g. no face in the source image); one-line message."""


def centre_box(height: int, width: int) -> np.ndarray:
    """The largest square centred in a (height, width) frame."""
    side = min(height, width)
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    return np.array([x0, y0, x0 + side, y0 + side], dtype=np.float64)


def full_box(height: int, width: int) -> np.ndarray:
    """The whole frame (resizing to the model's size changes the aspect ratio)."""
    return np.array([0.0, 0.0, float(width), float(height)], dtype=np.float64)


def square_around(box, scale: float, height: int, width: int) -> np.ndarray:
    """A square of side `scale` x the box's longer side, centred on the box, moved inside the frame when it fits."""
    x0, y0, x1, y1 = [float(v) for v in box]
    side = scale * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return square_at(cx, cy, side, height, width)


def square_at(cx: float, cy: float, side: float, height: int, width: int, shrink: bool = False) -> np.ndarray:
    """A square box of `side` centred at (cx, cy), moved inside the (height, width) frame where it fits.

    With `shrink`, a side longer than the frame's shorter side is cut to it, so the box always
    lies inside the frame; otherwise such a box is centred on the frame and reaches outside it.
    """
    side = max(side, 8.0)
    if shrink:
        side = min(side, float(height), float(width))
    if side <= width:
        cx = min(max(cx, side / 2.0), width - side / 2.0)
    else:
        cx = width / 2.0
    if side <= height:
        cy = min(max(cy, side / 2.0), height - side / 2.0)
    else:
        cy = height / 2.0
    return np.array([cx - side / 2.0, cy - side / 2.0, cx + side / 2.0, cy + side / 2.0], dtype=np.float64)


def crop_resize(frame: np.ndarray, box, size: tuple[int, int], fill: str = "edge") -> np.ndarray:
    """Crop `box` out of `frame` (H, W, 3) uint8 and resize it to `size` = (height, width) (bicubic, antialiased).

    Parts of the box outside the frame are filled by repeating the border pixels (`fill='edge'`)
    or with black (`fill='constant'`).
    """
    from PIL import Image

    if fill not in ("edge", "constant"):
        raise ValueError(f"fill must be 'edge' or 'constant', got {fill!r}")
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = [float(v) for v in box]
    pad = int(math.ceil(max(0.0, -x0, -y0, x1 - width, y1 - height)))
    if pad > 0:
        frame = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode=fill)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    image = Image.fromarray(np.ascontiguousarray(frame))
    out = image.resize((int(size[1]), int(size[0])), Image.BICUBIC, box=(x0, y0, x1, y1), reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


def detect_scaled(frame: np.ndarray, detect: Callable[[np.ndarray], list], max_side: int) -> list[np.ndarray]:
    """Run `detect` on a copy of `frame` shrunk to at most `max_side` pixels; boxes in original pixels."""
    from PIL import Image

    height, width = frame.shape[:2]
    factor = max(height, width) / float(max_side)
    if factor > 1.0:
        small = np.asarray(Image.fromarray(frame).resize((round(width / factor), round(height / factor)), Image.BILINEAR))
    else:
        factor, small = 1.0, frame
    return [np.asarray(b, dtype=np.float64) * factor for b in detect(small)]


def detector(kind: str) -> Callable[[np.ndarray], list]:
    """`frame -> list of boxes, largest first` for 'face' (MediaPipe, dlib as second chance) or 'person'."""
    from utils import detectors

    if kind == "face":
        def faces(frame: np.ndarray) -> list:
            found = detectors.face_boxes(frame, backend="mediapipe")
            return found if found else detectors.face_boxes(frame, backend="dlib")
        return faces
    if kind == "person":
        def person(frame: np.ndarray) -> list:
            box = detectors.person_box(frame)
            return [] if box is None else [box]
        return person
    raise ValueError(f"no detector for crop {kind!r}")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def image_box(image: np.ndarray, crop: str, max_side: int = 960,
              report: Callable[[str], None] | None = None) -> np.ndarray:
    """The crop box of a still image for `crop` in CROPS (largest face / most prominent person).

    report: called with one line saying which one is used when several are found.
    """
    height, width = image.shape[:2]
    if crop == "centre":
        return centre_box(height, width)
    if crop == "none":
        return full_box(height, width)
    boxes = detect_scaled(image, detector(crop), max_side)
    if not boxes:
        raise CropError(f"no {crop} found in the source image; use --crop centre")
    if len(boxes) > 1 and report is not None:
        x0, y0, x1, y1 = (int(round(float(v))) for v in boxes[0])
        report(f"{len(boxes)} {crop}s found in the source image; animating the largest at x={x0}, y={y0}, "
               f"w={x1 - x0}, h={y1 - y0} (pixels)")
    return square_around(boxes[0], FACE_SCALE if crop == "face" else PERSON_SCALE, height, width)


def _gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(values) < 2:
        return values
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(values, sigma=sigma, axis=0, mode="nearest")


def track_boxes(frames: Iterable[np.ndarray], num_frames: int, height: int, width: int, crop: str,
                fps: float = 25.0, detect_every: int | None = None, centre_seconds: float = 0.3,
                size_seconds: float = 1.0, max_side: int = 960) -> np.ndarray | None:
    """Per-frame square crop boxes (T, 4) following the face/person, smoothed over time; None if never found.

    Detection runs every `detect_every` frames (default: ~8 times a second), on frames
    shrunk to `max_side`. The tracked object is the largest one in the first frame
    where something is found, then the detection overlapping the previous box most.
    Gaps are interpolated linearly (held at the ends); the centre is smoothed with a
    Gaussian of `centre_seconds`, the side with one of `size_seconds`.
    """
    if detect_every is None:
        detect_every = max(1, int(round(fps / 8.0)))
    detect = detector(crop)
    raw = np.full((num_frames, 4), np.nan)
    previous = None
    count = 0
    for index, frame in enumerate(frames):
        if index >= num_frames:
            break
        count = index + 1
        if index % detect_every and index != num_frames - 1:
            continue
        boxes = detect_scaled(frame, detect, max_side)
        if not boxes:
            continue
        if previous is None:
            chosen = boxes[0]
        else:
            overlaps = [_iou(previous, b) for b in boxes]
            chosen = boxes[int(np.argmax(overlaps))] if max(overlaps) > 0 else boxes[0]
        raw[index] = chosen
        previous = chosen
    raw = raw[:max(count, 1)]
    found = ~np.isnan(raw[:, 0])
    if not found.any():
        return None
    t = np.arange(len(raw))
    scale = FACE_SCALE if crop == "face" else PERSON_SCALE
    cx = np.interp(t, t[found], (raw[found, 0] + raw[found, 2]) / 2.0)
    cy = np.interp(t, t[found], (raw[found, 1] + raw[found, 3]) / 2.0)
    side = np.interp(t, t[found], scale * np.maximum(raw[found, 2] - raw[found, 0], raw[found, 3] - raw[found, 1]))
    centre = _gaussian_smooth(np.stack([cx, cy], axis=1), centre_seconds * fps)
    side = _gaussian_smooth(side, size_seconds * fps)
    boxes = np.stack([square_at(c[0], c[1], s, height, width) for c, s in zip(centre, side)])
    if len(boxes) < num_frames:  # the video ended early: hold the last box
        boxes = np.concatenate([boxes, np.repeat(boxes[-1:], num_frames - len(boxes), axis=0)])
    return boxes  # T x 4


# ----------------------------------------------------------------------------- best frame (reference demo)

def normalize_landmarks(points: np.ndarray) -> np.ndarray:
    """Landmarks (68, 2) centred on their mean and divided by sqrt(area of their convex hull) (reference demo)."""
    from scipy.spatial import ConvexHull

    points = np.asarray(points, dtype=np.float64)[:, :2]
    points = points - points.mean(axis=0, keepdims=True)
    area = ConvexHull(points).volume
    return points / np.sqrt(max(area, 1e-12))


def landmark_backend() -> str:
    """face-alignment (the papers' FAN) when its weights are in torch hub's cache, else dlib."""
    from utils import detectors

    folder = detectors.fan_weights_folder()
    if all(os.path.isfile(os.path.join(folder, f)) for f in detectors.FAN_WEIGHTS):
        return "face-alignment"
    return "dlib"


def best_frame(source: np.ndarray, frames: Iterator[np.ndarray], backend: str | None = None) -> tuple[int, int]:
    """Index of the driving frame whose face pose best matches the source's, and how many frames had a face.

    `source` and `frames` are crops already fitted to the model (uint8 RGB); they are
    compared at 256 px at least so that small models still get landmarks.
    """
    from utils.detectors import face_landmarker

    landmarker = face_landmarker(backend or landmark_backend())

    def landmarks(image: np.ndarray):
        if min(image.shape[:2]) < 256:
            factor = 256.0 / min(image.shape[:2])
            image = crop_resize(image, full_box(*image.shape[:2]),
                                (round(image.shape[0] * factor), round(image.shape[1] * factor)))
        return landmarker(image)

    kp_source = landmarks(source)
    if kp_source is None:
        raise CropError("--find_best_frame: no face found in the source image")
    kp_source = normalize_landmarks(kp_source)
    best, best_norm, with_face = 0, math.inf, 0
    for index, frame in enumerate(frames):
        kp = landmarks(frame)
        if kp is None:
            continue
        with_face += 1
        norm = float(((kp_source - normalize_landmarks(kp)) ** 2).sum())
        if norm < best_norm:
            best, best_norm = index, norm
    if with_face == 0:
        raise CropError("--find_best_frame: no face found in any driving frame")
    return best, with_face
