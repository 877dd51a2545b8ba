"""Offline keypoint, identity and box detectors for the evaluation metrics (FOMM Sec. 4.1 protocol: AKD, MKR, AED).

Every detector takes one RGB frame, a (H, W, 3) uint8 array, and answers in pixels
(x, y) of that frame. Heavy models load lazily on the first call and are cached per
backend, so `face_landmarker("dlib")` is cheap to call many times.

Backends:
- ``face-alignment``: FAN (2DFAN-4 + S3FD), the papers' face detector. Its weights are
  read from torch hub's cache (``$TORCH_HOME/hub/checkpoints/``); offline and absent,
  it stops with a one-line `DetectorError` naming the files and the folder.
- ``dlib``: HOG face detector, 68-point shape predictor and the 128-d ResNet face
  descriptor (weights shipped inside the ``face-recognition-models`` package).
- ``mediapipe``: face mesh (468 points, mapped to the 68-point layout), face detection
  and BlazePose (33 body points with visibility), all shipped inside the package.

Each detector carries ``.name`` and ``.version``: numbers from different detectors are
not comparable, so every result records them.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
import threading
import warnings
from typing import Callable, Optional

import numpy as np

from utils.errors import UserError

FACE_BACKENDS = ("dlib", "mediapipe", "face-alignment")
BODY_BACKENDS = ("mediapipe",)
EMBED_BACKENDS = ("dlib",)

# Files face-alignment (FAN, TWO_D, LARGE, S3FD detector) loads from torch hub's cache.
FAN_WEIGHTS = {
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}

# MediaPipe face-mesh indices of the 68 iBUG/dlib landmarks, in dlib order: jaw 0-16, brows 17-26,
# nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67.
MEDIAPIPE_TO_68 = (
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)

# A body keypoint counts as detected when its BlazePose visibility is at least this.
VISIBILITY_THRESHOLD = 0.5

Box = tuple[int, int, int, int]


class DetectorError(UserError, RuntimeError):
    """A detector that cannot be loaded (missing package or weights); one-line message."""


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DetectorError(f"backend needs the '{package}' package ({err}); pip install '{package}'") from None


def _import_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging is noisy at import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _import("mediapipe", "mediapipe==0.10.21")


def _dlib_models_dir() -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise DetectorError("the dlib backend needs the 'face-recognition-models' package "
                            "(pip install face-recognition-models)")
    return os.path.join(os.path.dirname(spec.origin), "models")


def _dlib_upsample(frame: np.ndarray) -> int:
    """HOG finds faces from ~80 px; upsample small frames once (faces down to ~40 px)."""
    return 1 if min(frame.shape[:2]) < 320 else 0


def _clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box:
    return (int(max(0, np.floor(x0))), int(max(0, np.floor(y0))),
            int(min(width, np.ceil(x1))), int(min(height, np.ceil(y1))))


@contextlib.contextmanager
def native_stderr_captured():
    """Capture what native code writes to file descriptor 2 (TFLite / absl start-up lines) for the block;
    replayed to stderr if the block raises, dropped otherwise. Used once per detector, at its start-up."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (a daemon): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_BLANK = np.zeros((64, 64, 3), np.uint8)  # warm-up frame


class _Lazy:
    """Base: `_load()` runs once, on first use, under a lock."""

    name = "?"

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded = False

    def _ensure(self) -> None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    with native_stderr_captured():  # the native libraries' start-up log lines
                        self._load()
                        self._warm_up()
                    self._loaded = True

    def _load(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _warm_up(self) -> None:
        """One call on a blank frame, where a backend prints its start-up lines (captured by `_ensure`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name} {self.version})"


# ----------------------------------------------------------------------------- dlib

class _DlibFace(_Lazy):
    """Shared dlib models: HOG detector, 68- and 5-point shape predictors, ResNet descriptor."""

    name = "dlib"

    def __init__(self):
        super().__init__()
        self.version = _dist_version("dlib-bin", "dlib")
        self._recent: list = []

    def _load(self) -> None:
        dlib = _import("dlib", "dlib-bin")
        models = _dlib_models_dir()
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape68 = dlib.shape_predictor(os.path.join(models, "shape_predictor_68_face_landmarks.dat"))
        self.shape5 = dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat"))
        self.descriptor = dlib.face_recognition_model_v1(os.path.join(models, "dlib_face_recognition_resnet_model_v1.dat"))

    def rects(self, frame: np.ndarray) -> list:
        """dlib rectangles, largest first (the last few frames' answers are reused: landmarks
        and embedding of one frame share one HOG pass)."""
        self._ensure()
        key = (frame.shape, hash(frame.tobytes()))
        with self._lock:
            for k, rects in self._recent:
                if k == key:
                    return rects
        rects = sorted(self.detector(frame, _dlib_upsample(frame)), key=lambda r: r.area(), reverse=True)
        with self._lock:
            self._recent = ([(key, rects)] + self._recent)[:4]
        return rects


@functools.lru_cache(maxsize=None)
def _dlib_face() -> _DlibFace:
    return _DlibFace()


class DlibLandmarker:
    """68 face landmarks (iBUG layout) of the largest face: dlib HOG + shape predictor."""

    name = "dlib"

    def __init__(self):
        self._face = _dlib_face()
        self.version = f"dlib-bin {self._face.version}, shape_predictor_68_face_landmarks"

    def __call__(self, frame: np.ndarray) -> Optional[np.ndarray]:
        frame = _check_frame(frame)
        rects = self._face.rects(frame)
        if not rects:
            return None
        shape = self._face.shape68(frame, rects[0])
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # 68 x 2


class DlibEmbedder:
    """128-d identity descriptor (dlib ResNet, face_recognition's model) of the largest face.

    Same person: Euclidean distance < ~0.6; different people: > ~0.6 (dlib's threshold).
    """

    name = "dlib"
    distance = "euclidean"

    def __init__(self):
        self._face = _dlib_face()
        self.version = f"dlib-bin {self._face.version}, dlib_face_recognition_resnet_model_v1"

    def __call__(self, frame: np.ndarray) -> Optional[np.ndarray]:
        frame = _check_frame(frame)
        rects = self._face.rects(frame)
        if not rects:
            return None
        shape = self._face.shape5(frame, rects[0])
        return np.asarray(self._face.descriptor.compute_face_descriptor(frame, shape), dtype=np.float64)  # 128


# ----------------------------------------------------------------------------- mediapipe

class MediapipeFaceLandmarker(_Lazy):
    """Face mesh (468 points) of the largest face, reduced to the 68-point layout (`MEDIAPIPE_TO_68`)."""

    name = "mediapipe"

    def __init__(self):
        super().__init__()
        self.version = f"mediapipe {_dist_version('mediapipe')}, face_mesh->68"

    def _load(self) -> None:
        mp = _import_mediapipe()
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4,
                                                    refine_landmarks=False, min_detection_confidence=0.5)

    def _warm_up(self) -> None:
        self.mesh.process(_BLANK)

    def __call__(self, frame: np.ndarray) -> Optional[np.ndarray]:
        frame = _check_frame(frame)
        self._ensure()
        h, w = frame.shape[:2]
        with self._lock:
            result = self.mesh.process(frame)
        if not result.multi_face_landmarks:
            return None
        faces = [np.array([[p.x * w, p.y * h] for p in face.landmark], dtype=np.float64)  # 468 x 2
                 for face in result.multi_face_landmarks]
        largest = max(faces, key=lambda pts: np.prod(pts.max(0) - pts.min(0)))
        return largest[list(MEDIAPIPE_TO_68)]  # 68 x 2


class MediapipeFaceBoxes(_Lazy):
    """MediaPipe face detection, full-range model (faces up to ~5 m from the camera)."""

    name = "mediapipe"

    def __init__(self):
        super().__init__()
        self.version = f"mediapipe {_dist_version('mediapipe')}, face_detection full-range"

    def _load(self) -> None:
        mp = _import_mediapipe()
        self.detection = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def _warm_up(self) -> None:
        self.detection.process(_BLANK)

    def __call__(self, frame: np.ndarray) -> list[Box]:
        frame = _check_frame(frame)
        self._ensure()
        h, w = frame.shape[:2]
        with self._lock:
            result = self.detection.process(frame)
        boxes = []
        for det in result.detections or []:
            rb = det.location_data.relative_bounding_box
            box = _clip_box(rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h, w, h)
            if box[2] > box[0] and box[3] > box[1]:
                boxes.append(box)
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


class MediapipeBody(_Lazy):
    """BlazePose (`model_complexity=1`, each frame on its own): 33 body points with visibility."""

    name = "mediapipe"
    num_keypoints = 33

    def __init__(self):
        super().__init__()
        self.version = f"mediapipe {_dist_version('mediapipe')}, pose complexity 1"

    def _load(self) -> None:
        mp = _import_mediapipe()
        self.pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                           enable_segmentation=False, min_detection_confidence=0.5)

    def _warm_up(self) -> None:
        self.pose.process(_BLANK)

    def __call__(self, frame: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(points (33, 2) in pixels, visibility (33,) in [0, 1]) of the most prominent person, or None."""
        frame = _check_frame(frame)
        self._ensure()
        h, w = frame.shape[:2]
        with self._lock:
            result = self.pose.process(frame)
        if result.pose_landmarks is None:
            return None
        lms = result.pose_landmarks.landmark
        points = np.array([[p.x * w, p.y * h] for p in lms], dtype=np.float64)  # 33 x 2
        visibility = np.array([p.visibility for p in lms], dtype=np.float64)  # 33
        return points, visibility


# ----------------------------------------------------------------------------- face-alignment (FAN)

def fan_weights_folder() -> str:
    """Where face-alignment reads its weights: torch hub's cache (honours $TORCH_HOME)."""
    import torch.hub
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def fan_missing_message(missing: list[str], folder: str, reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    return (f"face-alignment weights not found: {', '.join(missing)} in {folder}{why}; "
            f"download them there (or set TORCH_HOME), or use --face_backend dlib|mediapipe")


class FanLandmarker(_Lazy):
    """FAN 2D landmarks (face-alignment: 2DFAN-4 with the S3FD detector), the papers' AKD detector.

    `allow_download`: when the weights are not in torch hub's cache, let face-alignment
    fetch them (online); offline, or with `allow_download=False`, a `DetectorError`
    names the missing files and the folder.
    """

    name = "face-alignment"

    def __init__(self, device: str = "cpu", allow_download: bool = True):
        super().__init__()
        self.device = device
        self.allow_download = allow_download
        self.version = f"face-alignment {_dist_version('face-alignment')}, 2DFAN-4 + S3FD"

    def _load(self) -> None:
        folder = fan_weights_folder()
        missing = [f for f in FAN_WEIGHTS if not os.path.isfile(os.path.join(folder, f))]
        if missing and not self.allow_download:
            raise DetectorError(fan_missing_message(missing, folder, "downloads disabled"))
        fa = _import("face_alignment", "face-alignment")
        try:
            self.fa = fa.FaceAlignment(fa.LandmarksType.TWO_D, device=self.device, face_detector="sfd",
                                       flip_input=False, compile=False)
        except OSError as err:  # URLError is an OSError: offline, DNS failure, HTTP error
            if missing:
                reason = str(getattr(err, "reason", err)).splitlines()[0] if str(err) else type(err).__name__
                raise DetectorError(fan_missing_message(missing, folder, f"download failed: {reason}")) from None
            raise

    def __call__(self, frame: np.ndarray) -> Optional[np.ndarray]:
        frame = _check_frame(frame)
        self._ensure()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected."
            landmarks, _, boxes = self.fa.get_landmarks_from_image(frame, return_bboxes=True)
        if not landmarks:
            return None
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        return np.asarray(landmarks[int(np.argmax(areas))], dtype=np.float64)[:, :2]  # 68 x 2


# ----------------------------------------------------------------------------- public factories

@functools.lru_cache(maxsize=None)
def face_landmarker(backend: str = "dlib", device: str = "cpu"):
    """68 face landmarks of the largest face: `__call__(frame) -> (68, 2) float pixels (x, y) or None`."""
    if backend == "dlib":
        return DlibLandmarker()
    if backend == "mediapipe":
        return MediapipeFaceLandmarker()
    if backend == "face-alignment":
        return FanLandmarker(device=device)
    raise ValueError(f"unknown face backend {backend!r} (choose from {', '.join(FACE_BACKENDS)})")


@functools.lru_cache(maxsize=None)
def face_embedder(backend: str = "dlib"):
    """Identity embedding of the largest face: `__call__(frame) -> (128,) or None`; `.distance` names the metric."""
    if backend == "dlib":
        return DlibEmbedder()
    raise ValueError(f"unknown face embedding backend {backend!r} (choose from {', '.join(EMBED_BACKENDS)})")


@functools.lru_cache(maxsize=None)
def body_keypointer(backend: str = "mediapipe"):
    """Body keypoints: `__call__(frame) -> ((33, 2) pixels, visibility (33,)) or None`."""
    if backend == "mediapipe":
        return MediapipeBody()
    raise ValueError(f"unknown body backend {backend!r} (choose from {', '.join(BODY_BACKENDS)})")


@functools.lru_cache(maxsize=None)
def _face_box_detector(backend: str) -> Callable[[np.ndarray], list[Box]]:
    if backend == "mediapipe":
        return MediapipeFaceBoxes()
    if backend == "dlib":
        face = _dlib_face()

        def dlib_boxes(frame: np.ndarray) -> list[Box]:
            h, w = frame.shape[:2]
            return [_clip_box(r.left(), r.top(), r.right() + 1, r.bottom() + 1, w, h) for r in face.rects(frame)]
        return dlib_boxes
    raise ValueError(f"unknown face box backend {backend!r} (choose from mediapipe, dlib)")


def face_boxes(frame: np.ndarray, backend: str = "mediapipe") -> list[Box]:
    """Face boxes (x0, y0, x1, y1) in integer pixels, clipped to the frame, largest first; [] when none.

    Offline detectors only: MediaPipe face detection (full-range, default) or dlib HOG.
    """
    frame = _check_frame(frame)
    return _face_box_detector(backend)(frame)


def person_box(frame: np.ndarray, margin: float = 0.1) -> Optional[Box]:
    """Box (x0, y0, x1, y1) around the most prominent person, or None.

    The box of the BlazePose keypoints with visibility >= `VISIBILITY_THRESHOLD`
    (at least 4 of them), grown by `margin` of its size on every side (joints sit
    inside the silhouette), clipped to the frame.
    """
    frame = _check_frame(frame)
    found = body_keypointer("mediapipe")(frame)
    if found is None:
        return None
    points, visibility = found
    pts = points[visibility >= VISIBILITY_THRESHOLD]
    if len(pts) < 4:
        return None
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = frame.shape[:2]
    box = _clip_box(x0 - mx, y0 - my, x1 + mx, y1 + my, w, h)
    return box if box[2] > box[0] and box[3] > box[1] else None


__all__ = ["DetectorError", "FACE_BACKENDS", "BODY_BACKENDS", "FAN_WEIGHTS", "MEDIAPIPE_TO_68",
           "VISIBILITY_THRESHOLD", "face_landmarker", "face_embedder", "body_keypointer", "face_boxes",
           "person_box", "fan_weights_folder"]
