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
import os
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from evaluation.videos import batches, list_videos, resize_frames, to_uint8
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
        from evaluation import detectors

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.keypoints: Optional[KeypointSource] = None
        self.embedder = None
        self.info: dict[str, Any] = {"kind": kind}
        if kind == "face":
            if face_backend not in detectors.FACE_BACKENDS:
                raise ValueError(f"unknown face backend {face_backend!r} (choose from {', '.join(detectors.FACE_BACKENDS)})")
            landmarker = detectors.face_landmarker(face_backend, device=device)
            self.keypoints = KeypointSource("face", landmarker)
            self.embedder = detectors.face_embedder(embed_backend)
            self.info["keypoints"] = {"backend": landmarker.name, "version": landmarker.version, "points": 68}
            self.info["identity"] = {"backend": self.embedder.name, "version": self.embedder.version,
                                     "distance": f"{self.embedder.distance} (128-d)"}
            self.info["aed_distance"] = f"{self.embedder.distance}, {self.embedder.name} 128-d descriptor"
        elif kind == "body":
            if body_backend not in detectors.BODY_BACKENDS:
                raise ValueError(f"unknown body backend {body_backend!r} (choose from {', '.join(detectors.BODY_BACKENDS)})")
            keypointer = detectors.body_keypointer(body_backend)
            self.keypoints = KeypointSource("body", keypointer, detectors.VISIBILITY_THRESHOLD)
            self.info["keypoints"] = {"backend": keypointer.name, "version": keypointer.version, "points": 33,
                                      "visibility_threshold": detectors.VISIBILITY_THRESHOLD}
            self.info["aed"] = "not computed for bodies (no offline person re-identification model)"
        self.info["akd_definition"] = "mean |dx|, |dy| in pixels over keypoints detected in both frames"
        # Only the papers' own detector (FAN) gives face AKD comparable to published tables.
        self.info["akd_comparable_to_papers"] = (kind == "face" and face_backend == "face-alignment")

    def compare_frames(self, gen_u8: np.ndarray, gt_u8: np.ndarray, acc: MetricAccumulator) -> None:
        """Detector metrics of one pair of (H, W, 3) uint8 frames."""
        if self.keypoints is not None:
            acc.add_keypoints(self.keypoints(gt_u8), self.keypoints(gen_u8))
        if self.embedder is not None:
            acc.add_identity(self.embedder(gt_u8), self.embedder(gen_u8))

    def evaluate_video(self, generated: str, ground_truth: str, batch_size: int = 16,
                       progress=None) -> MetricAccumulator:
        """Compare a generated video with its ground truth (resized to the generated frames' size)."""
        gen_reader, gt_reader = open_video(generated), open_video(ground_truth)
        if len(gen_reader) != len(gt_reader):
            raise MediaError(f"{generated} has {len(gen_reader)} frames but its ground truth "
                             f"{ground_truth} has {len(gt_reader)}")
        size = (gen_reader.height, gen_reader.width)
        acc = MetricAccumulator()
        for gen, gt in zip(batches(iter(gen_reader), batch_size), batches(iter(gt_reader), batch_size)):
            gen_f = resize_frames(gen, size)  # n x 3 x h x w, float32 k/255 (no resize: same size)
            gt_f = resize_frames(gt, size)  # n x 3 x h x w, float32 as the model saw it
            acc.add_l1((gen_f.double() - gt_f.double()).abs().mean(dim=(1, 2, 3)).tolist())
            if self.kind != "none":
                gt_u8 = to_uint8(gt_f)
                for p, g in zip(gen, gt_u8):
                    self.compare_frames(p, g, acc)
            if progress is not None:
                progress.update(len(gen))
        return acc


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
             max_videos: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
    """Compare every generated video (folder, strip or file) with the ground-truth video of the same name."""
    from tqdm import tqdm

    pairs, unmatched = match_videos(generated_dir, ground_truth_dir, max_videos)
    evaluator = Evaluator(kind, face_backend=face_backend, body_backend=body_backend, device=device)
    total = sum(len(open_video(gen)) for _, gen, _ in pairs)
    overall = MetricAccumulator()
    videos: dict[str, Any] = {}
    with tqdm(total=total, unit="frame", desc=f"metrics ({kind})", disable=not progress, dynamic_ncols=True) as bar:
        for name, gen, gt in pairs:
            bar.set_postfix_str(name[-40:])
            acc = evaluator.evaluate_video(gen, gt, batch_size=batch_size, progress=bar)
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
