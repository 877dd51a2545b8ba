"""Reconstruction metrics of FOMM / TPSMM (FOMM Sec. 4.1): L1, AKD, MKR and AED, frame by frame.

For every frame pair (ground truth G, generated P), at the generated frames' size:

- **L1**: mean |P - G| over pixels and channels, both in [0, 1].
- **AKD** (average keypoint distance): keypoints detected in both frames; mean absolute
  difference of their pixel coordinates, over points and over x and y (the papers'
  evaluation code); `akd_euclidean` is the mean Euclidean distance of the same points.
  Frames where G or P has no detection are left out of AKD, and counted.
- **MKR** (missing keypoint rate): keypoints detected in G but not in P, over keypoints
  detected in G. Bodies: a point is detected when its visibility is >= 0.5; faces:
  all 68 points or none.
- **AED** (average Euclidean distance between identity embeddings), faces only:
  distance of the embeddings of G and P; frames where either has no face are left out,
  and counted. The papers use OpenFace (squared L2); we use dlib's 128-d descriptor and
  plain Euclidean distance (recorded as `aed_distance`).

Overall numbers average all frames of all videos (the papers' scripts pool frames);
each video's own numbers are kept too. Numbers from different detectors are not
comparable: every result records the backends and their versions.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from evaluation.videos import batches, list_videos, resize_frames, to_uint8
from utils.errors import UserError
from utils.io import atomic_write
from utils.video import MediaError, open_video

KINDS = ("face", "body", "none")
FACE_HINTS = ("vox", "face", "celeb", "talking", "hdtf", "mead")
BODY_HINTS = ("taichi", "tai-chi", "tai_chi", "ted", "body", "fashion", "pose", "human")


def guess_kind(name: str) -> str:
    """'face', 'body' or 'none' from a dataset's name (vox -> face; taichi, ted -> body; mgif -> none)."""
    name = os.path.basename(os.path.normpath(str(name))).lower()
    if any(h in name for h in FACE_HINTS):
        return "face"
    if any(h in name for h in BODY_HINTS):
        return "body"
    return "none"


def keypoint_distances(gt: np.ndarray, gen: np.ndarray) -> tuple[float, float]:
    """(mean |dx|,|dy| over points and coordinates, mean Euclidean distance) of two (K, 2) arrays."""
    diff = np.asarray(gt, dtype=np.float64) - np.asarray(gen, dtype=np.float64)  # K x 2
    return float(np.abs(diff).mean()), float(np.linalg.norm(diff, axis=1).mean())


class KeypointSource:
    """Keypoints and a detected mask per frame, from a face landmarker or a body keypointer."""

    def __init__(self, kind: str, detector: Callable, visibility_threshold: float = 0.5):
        self.kind = kind
        self.detector = detector
        self.threshold = visibility_threshold
        self.num_keypoints = 33 if kind == "body" else 68

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(points (K, 2), detected (K,) bool); undetected points are NaN."""
        found = self.detector(frame)
        points = np.full((self.num_keypoints, 2), np.nan)
        detected = np.zeros(self.num_keypoints, dtype=bool)
        if found is None:
            return points, detected
        if self.kind == "body":
            pts, visibility = found
            detected = np.asarray(visibility) >= self.threshold
            points[detected] = np.asarray(pts)[detected]
        else:
            points[:] = found
            detected[:] = True
        return points, detected


class MetricAccumulator:
    """Per-frame metric values of one or more videos, and their summary."""

    def __init__(self):
        self.l1: list[float] = []
        self.akd: list[float] = []
        self.akd_euclidean: list[float] = []
        self.missing = 0            # keypoints detected in G, missing in P
        self.gt_detected = 0        # keypoints detected in G
        self.kp_frames_no_gt = 0    # frames with no keypoint in G
        self.kp_frames_no_gen = 0   # frames with keypoints in G but none in P
        self.kp_frames_no_common = 0  # both detected something, but no point in common
        self.aed: list[float] = []
        self.aed_frames_no_gt = 0
        self.aed_frames_no_gen = 0
        self.has_keypoints = False
        self.has_identity = False

    def add_l1(self, values: Iterable[float]) -> None:
        self.l1.extend(float(v) for v in values)

    def add_keypoints(self, gt: tuple[np.ndarray, np.ndarray], gen: tuple[np.ndarray, np.ndarray]) -> None:
        self.has_keypoints = True
        (g, dg), (p, dp) = gt, gen
        self.gt_detected += int(dg.sum())
        self.missing += int((dg & ~dp).sum())
        if not dg.any():
            self.kp_frames_no_gt += 1
            return
        if not dp.any():
            self.kp_frames_no_gen += 1
            return
        both = dg & dp
        if not both.any():
            self.kp_frames_no_common += 1
            return
        akd, euclid = keypoint_distances(g[both], p[both])
        self.akd.append(akd)
        self.akd_euclidean.append(euclid)

    def add_identity(self, gt: Optional[np.ndarray], gen: Optional[np.ndarray]) -> None:
        self.has_identity = True
        if gt is None:
            self.aed_frames_no_gt += 1
        elif gen is None:
            self.aed_frames_no_gen += 1
        else:
            self.aed.append(float(np.linalg.norm(np.asarray(gt, np.float64) - np.asarray(gen, np.float64))))

    def merge(self, other: "MetricAccumulator") -> None:
        for key, value in vars(other).items():
            if isinstance(value, list):
                getattr(self, key).extend(value)
            elif isinstance(value, bool):
                setattr(self, key, getattr(self, key) or value)
            else:
                setattr(self, key, getattr(self, key) + value)

    def summary(self) -> dict[str, Any]:
        mean = (lambda xs: float(np.mean(xs)) if xs else None)
        out: dict[str, Any] = {"frames": len(self.l1), "l1": mean(self.l1)}
        if self.has_keypoints:
            out.update({
                "akd": mean(self.akd),
                "akd_euclidean": mean(self.akd_euclidean),
                "akd_frames": len(self.akd),
                "mkr": (self.missing / self.gt_detected) if self.gt_detected else None,
                "mkr_keypoints_in_gt": self.gt_detected,
                "frames_no_gt_detection": self.kp_frames_no_gt,
                "frames_no_generated_detection": self.kp_frames_no_gen,
                "frames_no_common_keypoint": self.kp_frames_no_common,
            })
        if self.has_identity:
            out.update({
                "aed": mean(self.aed),
                "aed_frames": len(self.aed),
                "aed_frames_no_gt_face": self.aed_frames_no_gt,
                "aed_frames_no_generated_face": self.aed_frames_no_gen,
            })
        return out


class Evaluator:
    """Detectors for one kind of video and the per-frame metrics of a (generated, ground truth) pair."""

    def __init__(self, kind: str = "face", face_backend: str = "dlib", body_backend: str = "mediapipe",
                 embed_backend: str = "dlib", device: str = "cpu"):
        from utils import detectors

        if kind not in KINDS:
            raise UserError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.keypoints: Optional[KeypointSource] = None
        self.embedder = None
        self.info: dict[str, Any] = {"kind": kind}
        if kind == "face":
            if face_backend not in detectors.FACE_BACKENDS:
                raise UserError(f"unknown face backend {face_backend!r} (choose from {', '.join(detectors.FACE_BACKENDS)})")
            landmarker = detectors.face_landmarker(face_backend, device=device)
            self.keypoints = KeypointSource("face", landmarker)
            self.embedder = detectors.face_embedder(embed_backend)
            self.info["keypoints"] = {"backend": landmarker.name, "version": landmarker.version, "points": 68}
            self.info["identity"] = {"backend": self.embedder.name, "version": self.embedder.version,
                                     "distance": f"{self.embedder.distance} (128-d)"}
            self.info["aed_distance"] = f"{self.embedder.distance}, {self.embedder.name} 128-d descriptor"
        elif kind == "body":
            if body_backend not in detectors.BODY_BACKENDS:
                raise UserError(f"unknown body backend {body_backend!r} (choose from {', '.join(detectors.BODY_BACKENDS)})")
            keypointer = detectors.body_keypointer(body_backend)
            self.keypoints = KeypointSource("body", keypointer, detectors.VISIBILITY_THRESHOLD)
            self.info["keypoints"] = {"backend": keypointer.name, "version": keypointer.version, "points": 33,
                                      "visibility_threshold": detectors.VISIBILITY_THRESHOLD}
            self.info["aed"] = "not computed for bodies (no offline person re-identification model)"
        self.info["akd_definition"] = "mean |dx|, |dy| in pixels over keypoints detected in both frames"
        # Only the papers' own detector (FAN) gives face AKD comparable to published tables.
        self.info["akd_comparable_to_papers"] = (kind == "face" and face_backend == "face-alignment")

    def features(self, frame: np.ndarray) -> dict[str, Any]:
        """Detections of one (H, W, 3) uint8 frame: keypoints (points, detected) and identity embedding."""
        out: dict[str, Any] = {}
        if self.keypoints is not None:
            out["keypoints"] = self.keypoints(frame)
        if self.embedder is not None:
            out["identity"] = self.embedder(frame)
        return out

    def accumulate(self, gen: Mapping[str, Any], gt: Mapping[str, Any], acc: MetricAccumulator) -> None:
        if "keypoints" in gt:
            acc.add_keypoints(gt["keypoints"], gen["keypoints"])
        if "identity" in gt:
            acc.add_identity(gt["identity"], gen["identity"])

    def compare_frames(self, gen_u8: np.ndarray, gt_u8: np.ndarray, acc: MetricAccumulator) -> None:
        """Detector metrics of one pair of (H, W, 3) uint8 frames."""
        self.accumulate(self.features(gen_u8), self.features(gt_u8), acc)

    def cache_key(self, ground_truth: str, size: tuple[int, int]) -> str:
        """Names the ground truth's detections: file identity, frame size and detector versions."""
        parts = [os.path.abspath(ground_truth), _fingerprint(ground_truth), size, self.kind,
                 self.info.get("keypoints", {}).get("version"), self.info.get("identity", {}).get("version"),
                 self.info.get("keypoints", {}).get("visibility_threshold"), CACHE_FORMAT]
        return hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()

    def evaluate_video(self, generated: str, ground_truth: str, batch_size: int = 16,
                       progress=None, cache_dir: Optional[str] = None) -> MetricAccumulator:
        """Compare a generated video with its ground truth (resized to the generated frames' size).

        cache_dir: where the ground truth's detections are kept between runs (they do not
        change from one checkpoint to the next); None runs every detector every time.
        """
        gen_reader, gt_reader = open_video(generated), open_video(ground_truth)
        if len(gen_reader) != len(gt_reader):
            raise MediaError(f"{generated} has {len(gen_reader)} frames but its ground truth "
                             f"{ground_truth} has {len(gt_reader)}")
        size = (gen_reader.height, gen_reader.width)
        cache = None
        if cache_dir is not None and self.kind != "none":
            cache = GroundTruthCache(os.path.join(cache_dir, self.cache_key(ground_truth, size) + ".npz"),
                                     len(gt_reader))
        acc = MetricAccumulator()
        index = 0
        for gen, gt in zip(batches(iter(gen_reader), batch_size), batches(iter(gt_reader), batch_size)):
            gen_f = resize_frames(gen, size)  # n x 3 x h x w, float32 k/255 (no resize: same size)
            gt_f = resize_frames(gt, size)  # n x 3 x h x w, float32 as the model saw it
            acc.add_l1((gen_f.double() - gt_f.double()).abs().mean(dim=(1, 2, 3)).tolist())
            if self.kind != "none":
                gt_u8 = to_uint8(gt_f)
                for p, g in zip(gen, gt_u8):
                    truth = cache.get(index) if cache is not None else None
                    if truth is None:
                        truth = self.features(g)
                        if cache is not None:
                            cache.put(index, truth)
                    self.accumulate(self.features(p), truth, acc)
                    index += 1
            if progress is not None:
                progress.update(len(gen))
        if cache is not None:
            cache.save()
        return acc


CACHE_FORMAT = 1


def _fingerprint(path: str) -> tuple:
    """(size, mtime) of a file; (count, total size, newest mtime) of a frame folder's files."""
    if not os.path.isdir(path):
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns)
    stats = [os.stat(os.path.join(path, f)) for f in sorted(os.listdir(path))]
    return (len(stats), sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0))


class GroundTruthCache:
    """Per-frame ground-truth detections of one video in an .npz (written atomically, read if complete)."""

    def __init__(self, path: str, num_frames: int):
        self.path = path
        self.num_frames = num_frames
        self.frames: dict[int, dict[str, Any]] = {}
        self.loaded = False
        self.dirty = False
        if os.path.isfile(path):
            try:
                with np.load(path) as data:
                    self.frames = self._unpack(data)
                self.loaded = len(self.frames) == num_frames
            except (OSError, ValueError, KeyError):
                self.frames = {}
            if not self.loaded:
                self.frames = {}

    def get(self, index: int) -> Optional[dict[str, Any]]:
        return self.frames.get(index) if self.loaded else None

    def put(self, index: int, features: dict[str, Any]) -> None:
        self.frames[index] = features
        self.dirty = True

    def _unpack(self, data) -> dict[int, dict[str, Any]]:
        frames: dict[int, dict[str, Any]] = {}
        n = int(data["num_frames"])
        for i in range(n):
            item: dict[str, Any] = {}
            if "points" in data:
                item["keypoints"] = (data["points"][i], data["detected"][i])
            if "identity" in data:
                item["identity"] = data["identity"][i] if data["identity_found"][i] else None
            frames[i] = item
        return frames

    def save(self) -> None:
        if not self.dirty or len(self.frames) != self.num_frames:
            return
        items = [self.frames[i] for i in range(self.num_frames)]
        arrays: dict[str, np.ndarray] = {"num_frames": np.array(self.num_frames)}
        if "keypoints" in items[0]:
            arrays["points"] = np.stack([it["keypoints"][0] for it in items])  # n x K x 2
            arrays["detected"] = np.stack([it["keypoints"][1] for it in items])  # n x K
        if "identity" in items[0]:
            found = np.array([it["identity"] is not None for it in items])
            dim = next((len(it["identity"]) for it in items if it["identity"] is not None), 128)
            arrays["identity"] = np.stack([it["identity"] if it["identity"] is not None else np.zeros(dim)
                                           for it in items])  # n x 128
            arrays["identity_found"] = found
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with atomic_write(self.path, "wb") as handle:
            np.savez(handle, **arrays)


def default_cache_dir() -> str:
    """$XDG_CACHE_HOME/tpsmm-eval, else ~/.cache/tpsmm-eval."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tpsmm-eval")


def match_videos(generated_dir: str, ground_truth_dir: str,
                 max_videos: Optional[int] = None) -> tuple[list[tuple[str, str, str]], list[str]]:
    """[(name, generated path, ground-truth path)] by name, and the ground-truth names with no generated video."""
    generated = list_videos(generated_dir)
    if not generated:
        raise MediaError(f"no generated videos in {generated_dir}")
    truth = dict(list_videos(ground_truth_dir))
    missing = [name for name, _ in generated if name not in truth]
    if missing:
        raise MediaError(f"no ground truth for generated video {missing[0]!r} in {ground_truth_dir}"
                         + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    pairs = [(name, path, truth[name]) for name, path in generated]
    if max_videos is not None:
        pairs = pairs[:max_videos]
    used = {name for name, _, _ in pairs}
    return pairs, sorted(set(truth) - used)


def evaluate(generated_dir: str, ground_truth_dir: str, kind: str = "face", face_backend: str = "dlib",
             body_backend: str = "mediapipe", device: str = "cpu", batch_size: int = 16,
             max_videos: Optional[int] = None, progress: bool = True,
             cache_dir: Optional[str] = None) -> dict[str, Any]:
    """Compare every generated video (folder, strip or file) with the ground-truth video of the same name.

    cache_dir: keep the ground truth's detections there between runs (see `default_cache_dir`).
    """
    from tqdm import tqdm

    pairs, unmatched = match_videos(generated_dir, ground_truth_dir, max_videos)
    evaluator = Evaluator(kind, face_backend=face_backend, body_backend=body_backend, device=device)
    total = sum(len(open_video(gen)) for _, gen, _ in pairs)
    overall = MetricAccumulator()
    videos: dict[str, Any] = {}
    with tqdm(total=total, unit="frame", desc=f"metrics ({kind})", disable=not progress, dynamic_ncols=True) as bar:
        for name, gen, gt in pairs:
            bar.set_postfix_str(name[-40:])
            acc = evaluator.evaluate_video(gen, gt, batch_size=batch_size, progress=bar, cache_dir=cache_dir)
            videos[name] = acc.summary()
            overall.merge(acc)
    result: dict[str, Any] = dict(overall.summary())
    result.update({
        "num_videos": len(videos),
        "ground_truth_videos_not_evaluated": len(unmatched),
        "detectors": evaluator.info,
        "generated": os.path.abspath(generated_dir),
        "ground_truth": os.path.abspath(ground_truth_dir),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "videos": videos,
    })
    return result


def metric_columns(result: Mapping[str, Any]) -> list[str]:
    """The metric names present in a result, in table order."""
    return [k for k in ("l1", "akd", "akd_euclidean", "mkr", "aed") if k in result]


def format_summary(result: Mapping[str, Any]) -> str:
    """One line: L1 0.0412 | AKD 1.27 px (1830/1840 frames) | MKR 0.012 | AED 0.21 (dlib ...)."""
    parts = [f"L1 {result['l1']:.6f}"]
    fmt = (lambda v, f: "n/a" if v is None else format(v, f))
    if "akd" in result:
        skipped = result["frames"] - result["akd_frames"]
        parts.append(f"AKD {fmt(result['akd'], '.4f')} px ({result['akd_frames']} frames; {skipped} without "
                     f"detection: {result['frames_no_gt_detection']} in ground truth, "
                     f"{result['frames_no_generated_detection']} in generated)")
        parts.append(f"MKR {fmt(result['mkr'], '.4f')}")
    if "aed" in result:
        parts.append(f"AED {fmt(result['aed'], '.4f')} ({result['aed_frames']} frames)")
    det = result.get("detectors", {})
    if "keypoints" in det:
        parts.append(f"keypoints: {det['keypoints']['version']}")
    return " | ".join(parts)
