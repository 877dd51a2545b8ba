"""Metrics on real clips (tests/data): self-comparison is zero, a known shift gives that AKD,
another person gives a large AED, cropped limbs give MKR > 0; detectors, CLI and the runs table."""
from __future__ import annotations

import json
import os
import urllib.error

import imageio.v3 as iio
import numpy as np
import pytest

from utils import detectors
from evaluation.metrics import Evaluator, MetricAccumulator, evaluate, guess_kind, keypoint_distances
from evaluation.videos import resize_frames, to_uint8
from utils.video import open_video

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _clip(name: str, indices, box, size) -> np.ndarray:
    """Frames `indices` of tests/data/<name>, cropped to box (x0, y0, x1, y1), resized: (n, h, w, 3) uint8."""
    frames = open_video(os.path.join(DATA, name)).get_frames(list(indices))
    x0, y0, x1, y1 = box
    return to_uint8(resize_frames(frames[:, y0:y1, x0:x1], size))


def _shift(frames: np.ndarray, s: int) -> np.ndarray:
    """Content moved s pixels right and s pixels down (edges replicated)."""
    out = np.roll(frames, (s, s), axis=(1, 2))
    out[:, :s] = out[:, s:s + 1]
    out[:, :, :s] = out[:, :, s:s + 1]
    return out


@pytest.fixture(scope="module")
def face():
    # the man of single_face.mp4, a 320 px square around his face, at 160 px (face ~95 px)
    return _clip("single_face.mp4", [0, 18, 36, 54], (133, 37, 453, 357), (160, 160))


@pytest.fixture(scope="module")
def other_face():
    # a different man (carphone.mp4), same frame size
    return _clip("carphone.mp4", [0, 30, 60, 90], (10, 0, 154, 144), (160, 160))


@pytest.fixture(scope="module")
def body():
    # the walking woman of two_people_body.mp4, a 256 px square following her, at 160 px
    reader = open_video(os.path.join(DATA, "two_people_body.mp4"))
    centers = {100: 375, 120: 302, 140: 224, 150: 180}
    frames = [reader.get_frames([i])[0][104:360, c - 128:c + 128] for i, c in centers.items()]
    return to_uint8(resize_frames(np.stack(frames), (160, 160)))


def _compare(evaluator: Evaluator, generated: np.ndarray, truth: np.ndarray) -> dict:
    acc = MetricAccumulator()
    for g, t in zip(generated, truth):
        evaluator.compare_frames(g, t, acc)
    return acc.summary()


def _write_folder(folder, frames):
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames):
        iio.imwrite(os.path.join(folder, f"{i:06d}.png"), frame)


# ----------------------------------------------------------------------------- metrics on real clips

def test_face_video_against_itself_is_zero_through_the_cli(tmp_path, face):
    from evaluation.cli import main

    gt_root = tmp_path / "vox"
    (gt_root / "test").mkdir(parents=True)
    iio.imwrite(gt_root / "test" / "man.png", np.concatenate(list(face), axis=1))  # ground truth as a png strip
    _write_folder(tmp_path / "gen" / "man", face)  # generated as a frame folder
    out = tmp_path / "m.json"
    assert main(["--generated", str(tmp_path / "gen"), "--ground_truth", str(gt_root / "test"),
                 "--kind", "auto", "--face_backend", "dlib", "--out", str(out), "--quiet",
                 "--cache_dir", str(tmp_path / "cache")]) == 0
    result = json.loads(out.read_text())
    assert result["detectors"]["kind"] == "face"  # guessed from 'vox'
    assert result["frames"] == 4 and result["akd_frames"] == 4 and result["aed_frames"] == 4
    assert result["l1"] == 0.0 and result["akd"] == 0.0 and result["aed"] == 0.0 and result["mkr"] == 0.0
    assert result["detectors"]["keypoints"]["backend"] == "dlib"
    assert "dlib" in result["detectors"]["keypoints"]["version"]
    assert "euclidean" in result["detectors"]["aed_distance"]
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].startswith("video,frames,l1,akd") and rows[1].startswith("man,4,") and rows[-1].startswith("ALL,4,")


@pytest.mark.parametrize("backend", ["dlib", "mediapipe"])
def test_akd_equals_a_known_shift(face, backend):
    shift = 6
    result = _compare(Evaluator("face", face_backend=backend), _shift(face, shift), face)
    assert result["akd_frames"] == 4 and result["frames_no_generated_detection"] == 0
    assert result["akd"] == pytest.approx(shift, abs=0.75)  # mean |dx|, |dy| = the shift
    assert result["akd_euclidean"] == pytest.approx(shift * np.sqrt(2), abs=1.0)
    assert result["mkr"] == 0.0
    assert result["aed"] < 0.2  # same face, moved


def test_aed_another_person_is_well_above_same_person(face, other_face):
    embed = detectors.face_embedder("dlib")
    assert embed.distance == "euclidean"
    ours, theirs = [embed(f) for f in face], [embed(f) for f in other_face]  # 4 x (128,)
    assert all(e is not None and e.shape == (128,) for e in ours + theirs)
    acc_same, acc_other = MetricAccumulator(), MetricAccumulator()
    for i in range(4):
        acc_same.add_identity(ours[i], ours[(i + 1) % 4])  # same man, other frames
        acc_other.add_identity(ours[i], theirs[i])
    same, other = acc_same.summary()["aed"], acc_other.summary()["aed"]
    assert same < 0.45 < 0.6 < other  # dlib: same person < 0.6 apart
    assert other > 3 * same


def test_body_mkr_when_legs_are_cropped_away(body):
    evaluator = Evaluator("body", body_backend="mediapipe")
    itself = _compare(evaluator, body, body)
    assert itself["akd"] == 0.0 and itself["mkr"] == 0.0 and itself["frames_no_gt_detection"] == 0
    cut = body.copy()
    cut[:, 96:] = 128  # legs below 60 % of the frame painted over
    result = _compare(evaluator, cut, body)
    assert result["mkr"] > 0.1
    assert result["mkr_keypoints_in_gt"] == itself["mkr_keypoints_in_gt"] > 4 * 20
    assert "aed" not in result


def test_frames_without_detection_are_counted_not_dropped(face):
    blank = np.full_like(face, 128)
    result = _compare(Evaluator("face", face_backend="dlib"), blank, face)
    assert result["akd"] is None and result["akd_frames"] == 0
    assert result["frames_no_generated_detection"] == 4 and result["frames_no_gt_detection"] == 0
    assert result["mkr"] == 1.0
    assert result["aed"] is None and result["aed_frames_no_generated_face"] == 4
    reverse = _compare(Evaluator("face", face_backend="dlib"), face, blank)
    assert reverse["frames_no_gt_detection"] == 4 and reverse["mkr"] is None


def test_keypoint_distances():
    gt = np.array([[0.0, 0.0], [10.0, 10.0]])
    assert keypoint_distances(gt, gt + [3.0, 4.0]) == pytest.approx((3.5, 5.0))


def test_guess_kind():
    assert guess_kind("data/vox") == "face" and guess_kind("/x/taichi/") == "body"
    assert guess_kind("ted-384") == "body" and guess_kind("moving-gif") == "none"


def test_frame_count_mismatch_is_an_error(tmp_path, face):
    from utils.video import MediaError

    _write_folder(tmp_path / "gen" / "a", face[:3])
    _write_folder(tmp_path / "gt" / "a", face)
    with pytest.raises(MediaError, match="3 frames but its ground truth"):
        evaluate(str(tmp_path / "gen"), str(tmp_path / "gt"), kind="none", progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from evaluation.cli import main

    assert main(["--generated", str(tmp_path / "nope"), "--ground_truth", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: folder not found") and err.count("\n") == 1
    assert main(["--log_dir", str(tmp_path)]) == 2
    assert "run reconstruction first" in capsys.readouterr().err


# ----------------------------------------------------------------------------- detectors

def test_mediapipe_68_point_mapping_agrees_with_dlib(face):
    dlib_pts = detectors.face_landmarker("dlib")(face[0])
    mp_pts = detectors.face_landmarker("mediapipe")(face[0])
    assert dlib_pts.shape == mp_pts.shape == (68, 2)
    inter_ocular = np.linalg.norm(dlib_pts[36:42].mean(0) - dlib_pts[42:48].mean(0))
    per_point = np.linalg.norm(dlib_pts - mp_pts, axis=1) / inter_ocular  # 68
    assert per_point.mean() < 0.15  # a wrong index table puts points across the face
    assert np.median(per_point) < 0.15


def test_face_boxes_and_person_box(face, body):
    center = detectors.face_landmarker("dlib")(face[0]).mean(0)
    for backend in ("mediapipe", "dlib"):
        boxes = detectors.face_boxes(face[0], backend=backend)
        assert len(boxes) == 1
        x0, y0, x1, y1 = boxes[0]
        assert all(isinstance(v, int) for v in boxes[0])
        assert x0 < center[0] < x1 and y0 < center[1] < y1 and 50 < x1 - x0 < 160
    blank = np.full((160, 160, 3), 128, np.uint8)
    assert detectors.face_boxes(blank) == [] and detectors.person_box(blank) is None
    points, visibility = detectors.body_keypointer()(body[0])
    box = detectors.person_box(body[0])
    visible = points[visibility >= detectors.VISIBILITY_THRESHOLD]
    assert box[0] <= visible[:, 0].min() and visible[:, 0].max() <= box[2]
    assert box[1] <= visible[:, 1].min() and visible[:, 1].max() <= box[3]
    assert box[3] - box[1] > 100  # a standing person, most of the 160 px frame
    with pytest.raises(ValueError, match="uint8"):
        detectors.face_boxes(face[0].astype(np.float32))


def test_detectors_are_cached_and_describe_themselves():
    assert detectors.face_landmarker("dlib") is detectors.face_landmarker("dlib")
    for det in (detectors.face_landmarker("mediapipe"), detectors.face_embedder(), detectors.body_keypointer()):
        assert det.name and det.version
    with pytest.raises(ValueError, match="unknown face backend"):
        detectors.face_landmarker("openface")


def test_face_alignment_offline_names_files_and_folder(tmp_path, monkeypatch):
    """The real FAN loading code, with an empty torch hub cache and no network."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = detectors.fan_weights_folder()
    assert folder == str(tmp_path / "torch" / "hub" / "checkpoints")
    no_download = detectors.FanLandmarker(allow_download=False)
    with pytest.raises(detectors.DetectorError) as info:
        no_download(np.zeros((64, 64, 3), np.uint8))
    message = str(info.value)
    assert "\n" not in message and folder in message
    assert "2DFAN4-11f355bf06.pth.tar" in message and "s3fd-619a316812.pth" in message

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(detectors.DetectorError, match="download failed: Name or service not known") as info:
        detectors.FanLandmarker(allow_download=True)(np.zeros((64, 64, 3), np.uint8))
    assert folder in str(info.value) and "2DFAN4-11f355bf06.pth.tar" in str(info.value)


def test_ground_truth_detections_are_cached_between_runs(tmp_path, face, monkeypatch):
    from evaluation import metrics

    _write_folder(tmp_path / "gt" / "man", face)
    _write_folder(tmp_path / "gen" / "man", _shift(face, 6))
    cache = str(tmp_path / "cache")
    first = evaluate(str(tmp_path / "gen"), str(tmp_path / "gt"), kind="face", progress=False, cache_dir=cache)
    assert len(os.listdir(cache)) == 1
    calls = []
    original = metrics.Evaluator.features
    monkeypatch.setattr(metrics.Evaluator, "features", lambda self, frame: calls.append(1) or original(self, frame))
    second = evaluate(str(tmp_path / "gen"), str(tmp_path / "gt"), kind="face", progress=False, cache_dir=cache)
    assert len(calls) == 4  # generated frames only
    for key in ("l1", "akd", "akd_euclidean", "mkr", "aed", "akd_frames", "aed_frames"):
        assert second[key] == first[key]
    iio.imwrite(tmp_path / "gt" / "man" / "000000.png", face[1])  # ground truth changed: detected again
    os.utime(tmp_path / "gt" / "man" / "000000.png", ns=(1, 1))
    calls.clear()
    evaluate(str(tmp_path / "gen"), str(tmp_path / "gt"), kind="face", progress=False, cache_dir=cache)
    assert len(calls) == 8 and len(os.listdir(cache)) == 2
