"""datasets.prepare: raw videos -> face/person-centred clips that the training dataset loads."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

from datasets.frames_dataset import FramesDataset
from datasets.prepare import main, prepare_dataset
from utils.crop import crop_resize, detector, full_box
from utils.media import open_writer
from utils.video import open_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


def face_offset(frame: np.ndarray, find) -> float | None:
    """Distance of the detected face's centre from the frame's centre, as a fraction of the frame size."""
    big = crop_resize(frame, full_box(*frame.shape[:2]), (256, 256))  # detectors need ~40+ px faces
    boxes = find(big)
    if not boxes:
        return None
    x0, y0, x1, y1 = boxes[0]
    return max(abs((x0 + x1) / 2 - 128), abs((y0 + y1) / 2 - 128)) / 256


@pytest.fixture(scope="module")
def face_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("faces")
    summary = prepare_dataset([os.path.join(DATA, "single_face.mp4"), os.path.join(DATA, "carphone.mp4")], str(out),
                              kind="face", image_shape=(128, 128), detect_every=2, min_frames=16,
                              test_videos=["carphone"])
    return out, summary


def test_face_clips_layout_and_centred(face_dataset):
    out, summary = face_dataset
    assert sorted(os.listdir(out / "train")) == ["single_face#000.mp4"]
    assert sorted(os.listdir(out / "test")) == ["carphone#000.mp4"]
    with open(out / "clips.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["clip"] for r in rows] == ["train/single_face#000.mp4", "test/carphone#000.mp4"]
    find = detector("face")
    for row in rows:
        reader = open_video(str(out / row["clip"]))
        assert reader.num_frames == int(row["frames"]) >= 60  # the face is visible throughout both clips
        assert (reader.height, reader.width) == (128, 128)
        source_fps = open_video(row["video"]).fps
        assert reader.fps == pytest.approx(source_fps, rel=1e-3)
        offsets = [face_offset(frame, find) for frame in reader]
        assert all(o is not None for o in offsets), f"{row['clip']}: no face in frames {[i for i, o in enumerate(offsets) if o is None]}"
        assert max(offsets) < 0.15, f"{row['clip']}: face off centre by {max(offsets):.2f}"


def test_training_code_loads_the_dataset(face_dataset):
    out, _ = face_dataset
    train = FramesDataset(str(out), frame_shape=(64, 64, 3), id_sampling=True, is_train=True)
    assert len(train) == 1
    item = train[0]
    assert item["source"].shape == item["driving"].shape == (3, 64, 64)
    assert torch.isfinite(item["source"]).all() and item["name"] == "single_face#000.mp4"
    test = FramesDataset(str(out), frame_shape=(64, 64, 3), is_train=False)
    video = test[0]["video"]
    assert video.shape[:1] == (3,) and video.shape[2:] == (64, 64) and video.shape[1] >= 60


def test_clip_split_where_face_is_lost_png_format(tmp_path):
    """30 face frames, 15 frames without a face, 30 face frames: two clips, split at the gap."""
    face = open_video(os.path.join(DATA, "single_face.mp4"))
    raw = tmp_path / "raw"
    raw.mkdir()
    writer = open_writer(str(raw / "id007#talk.mp4"), fps=25)
    frames = list(face.get_frames(list(range(30))))
    for frame in frames:
        writer.write(frame)
    for _ in range(15):
        writer.write(np.full_like(frames[0], 200))
    for frame in frames:
        writer.write(frame)
    writer.close()
    out = tmp_path / "dataset"
    summary = prepare_dataset(str(raw), str(out), kind="face", image_shape=(64, 64), fmt="png", min_frames=10,
                              test_ratio=0.0)
    spans = [(r["start"], r["end"]) for r in summary["clips"]]
    assert spans == [(0, 29), (45, 74)]
    assert sorted(os.listdir(out / "train")) == ["id007#talk#000", "id007#talk#001"]
    assert len(os.listdir(out / "train" / "id007#talk#001")) == 30
    dataset = FramesDataset(str(out), frame_shape=(64, 64, 3), id_sampling=True, is_train=True)
    assert len(dataset) == 1 and dataset[0]["source"].shape == (3, 64, 64)  # one id: 'id007'


def test_person_clips(tmp_path):
    out = tmp_path / "bodies"
    summary = prepare_dataset(os.path.join(DATA, "two_people_body.mp4"), str(out), kind="person",
                              image_shape=(64, 64), detect_every=3, min_frames=12, test_ratio=0.0)
    assert summary["clips"] and summary["train"] == len(summary["clips"])
    for row in summary["clips"]:
        reader = open_video(str(out / row["clip"]))
        assert reader.num_frames == row["frames"] >= 12 and (reader.height, reader.width) == (64, 64)
        x0, y0, x1, y1 = [float(v) for v in row["box"].split()]
        assert x1 - x0 == pytest.approx(y1 - y0)  # square crops: the aspect is kept


def test_cli_errors(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"error: input not found: {tmp_path / 'nope'}"
    code = main(["--input", os.path.join(DATA, "carphone.mp4"), "--output", str(tmp_path / "out"),
                 "--min_frames", "1000", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: no clips found") and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")


def test_square_box_shrinks_to_fit_only_when_asked():
    from utils.crop import square_at

    kept = square_at(320, 180, 500, 360, 640)  # taller than the frame: centred on it, outside above and below
    assert kept[3] - kept[1] == 500 and kept[1] < 0 and kept[3] > 360
    inside = square_at(600, 100, 500, 360, 640, shrink=True)  # cut to 360 and moved inside
    assert inside[2] - inside[0] == inside[3] - inside[1] == 360
    assert inside[0] >= 0 and inside[1] == 0 and inside[2] == 640 and inside[3] == 360
    assert np.array_equal(square_at(300, 180, 200, 360, 640, shrink=True), square_at(300, 180, 200, 360, 640))


def test_crop_resize_fills_outside_with_black_or_edge_pixels():
    frame = np.full((40, 40, 3), 200, dtype=np.uint8)
    frame[0] = 90  # the top row, repeated upward by 'edge'
    box = (0, -40, 40, 40)  # the top half of the box is above the frame
    edge = crop_resize(frame, box, (40, 40), fill="edge")
    black = crop_resize(frame, box, (40, 40), fill="constant")
    assert np.abs(edge[:18].astype(int) - 90).max() <= 2
    assert black[:18].max() == 0
    assert np.array_equal(edge[24:36, 4:36], black[24:36, 4:36])  # inside the frame (away from its border) both are the frame
    with pytest.raises(ValueError, match="fill"):
        crop_resize(frame, box, (40, 40), fill="mirror")


def test_fill_option_keeps_the_box_inside_the_video_by_default(tmp_path):
    """A face too large for a short video: 'inside' (default) shrinks the box into the frame, no invented pixels;
    'constant' keeps the box and fills outside black; 'edge' (before the option) repeats the edge rows."""
    face = open_video(os.path.join(DATA, "single_face.mp4"))
    raw = tmp_path / "raw"
    raw.mkdir()
    writer = open_writer(str(raw / "tall_face.mp4"), fps=25)
    for frame in face.get_frames(list(range(12))):
        writer.write(np.ascontiguousarray(frame[30:330]))  # 640x300: the grown face box is taller than the frame
    writer.close()
    boxes, firsts = {}, {}
    for fill in ("inside", "constant", "edge"):
        out = tmp_path / fill
        args = ["--input", str(raw), "--output", str(out), "--image_shape", "64,64", "--min_frames", "8",
                "--detect_every", "4", "--test_ratio", "0", "--quiet"] + ([] if fill == "inside" else ["--fill", fill])
        assert main(args) == 0
        with open(out / "clips.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 1
        boxes[fill] = [float(v) for v in rows[0]["box"].split()]
        firsts[fill] = open_video(str(out / rows[0]["clip"])).get_frames([0])[0].astype(int)
    x0, y0, x1, y1 = boxes["inside"]
    assert x0 >= 0 and y0 >= 0 and x1 <= 640 and y1 <= 300 and x1 - x0 == pytest.approx(300)
    assert boxes["constant"] == boxes["edge"] and boxes["edge"][1] < -5 and boxes["edge"][3] > 305
    rows_out = int(-boxes["edge"][1] / (boxes["edge"][3] - boxes["edge"][1]) * 64)  # output rows above the video
    assert rows_out >= 1
    assert firsts["constant"][:rows_out].max() <= 20  # black (after H.264)
    assert firsts["edge"][:rows_out].mean() > 40  # the repeated top rows (a door and wall)
    assert firsts["inside"][:rows_out].mean() > 40  # real pixels
    with pytest.raises(SystemExit) as stop:  # argparse: not one of the choices
        main(["--input", str(raw), "--output", str(tmp_path / "bad"), "--fill", "mirror", "--quiet"])
    assert stop.value.code == 2 and not os.path.exists(tmp_path / "bad")
