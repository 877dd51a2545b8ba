"""`datasets.prepare --metadata`: the published clips cut from local source videos.

The synthetic source videos say where every pixel came from: red encodes the frame
number, green the row and blue the column. So a written clip shows which source
frames it holds and which box it was cut from, independently of the crop code.
"""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from datasets import FramesDataset
from datasets.metadata import MetaClip, read_metadata
from datasets.prepare import main
from utils.crop import crop_resize
from utils.media import open_writer
from utils.video import open_video

SIZE = (64, 64)
HEADER = "video_id,start,end,bbox,fps,width,height,partition,person_id"
VOX_ROWS = [
    "vidA,5,20,100-60-300-260,25,640,480,train,id001",   # a 640x480 reference frame: boxes halve
    "vidA,30,50,320-200-520-400,25,640,480,test,id001",
    "vidB,10,40,0-0-200-200,50,320,240,test,id002",      # numbered at 50 fps: local frames 5..19
    "vidB,0,8,250-150-350-260,25,320,240,train,id002",   # past the frame's edge: clipped
]
# name -> (split, local source frames, local box (left, top, right, bottom))
EXPECTED = {
    "id001#vidA#000005#000020": ("train", range(5, 20), (50, 30, 150, 130)),
    "id001#vidA#000030#000050": ("test", range(30, 50), (160, 100, 260, 200)),
    "id002#vidB#000010#000040": ("test", range(5, 20), (0, 0, 200, 200)),
    "id002#vidB#000000#000008": ("train", range(0, 8), (250, 150, 320, 240)),
}


def source_frames(n: int, height: int = 240, width: int = 320) -> np.ndarray:
    """(n, H, W, 3): red = 8 + 4 * frame number, green = the row, blue = the column (scaled to 0..255)."""
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = 8 + 4 * i
        frames[i, ..., 1] = y.round()
        frames[i, ..., 2] = x.round()
    return frames


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("youtube")
    for name, n in (("vidA", 60), ("vidB", 30)):
        with open_writer(str(folder / f"{name}.mp4"), fps=25) as writer:
            writer.write_batch(source_frames(n))
    return folder


def write_metadata(path, rows, header=HEADER) -> str:
    path.write_text("\n".join([header] + rows) + "\n")
    return str(path)


def test_reads_the_published_columns(tmp_path):
    clips = read_metadata(write_metadata(tmp_path / "m.csv", VOX_ROWS))
    assert clips[0] == MetaClip(video_id="vidA", start=5, end=20, bbox=(100, 60, 300, 260), fps=25.0,
                                width=640, height=480, partition="train", person_id="id001")
    assert [c.name for c in clips] == list(EXPECTED)
    assert clips[0].box_in(240, 320) == (50, 30, 150, 130)
    assert clips[2].local_frames(25.0) == list(range(5, 20))


def test_cuts_the_clips_ranges_boxes_and_splits(tmp_path, sources):
    out = tmp_path / "vox"
    meta = write_metadata(tmp_path / "vox-metadata.csv", VOX_ROWS)
    assert main(["--metadata", meta, "--source_dir", str(sources), "--output", str(out),
                 "--format", "png", "--image_shape", "64,64", "--quiet"]) == 0
    for split in ("train", "test"):
        assert sorted(os.listdir(out / split)) == sorted(n for n, e in EXPECTED.items() if e[0] == split)
    decoded = {v: np.stack(list(open_video(str(sources / f"{v}.mp4")))) for v in ("vidA", "vidB")}
    for name, (split, frames, box) in EXPECTED.items():
        clip = np.stack(list(open_video(str(out / split / name))))  # lossless PNG frames
        assert clip.shape == (len(frames), 64, 64, 3), name
        # the frames: red says which source frame each one is
        numbers = np.round((clip[..., 0].astype(float).mean(axis=(1, 2)) - 8) / 4).astype(int)
        assert numbers.tolist() == list(frames), name
        # the box: mean green / blue give the crop's centre row / column
        left, top, right, bottom = box
        assert abs(clip[..., 1].mean() - (top + bottom - 1) / 2 * 255 / 239) < 3, name
        assert abs(clip[..., 2].mean() - (left + right - 1) / 2 * 255 / 319) < 3, name
        # and exactly the decoded source frames, cropped and resized
        source = decoded[name.split("#")[1]]
        expected = np.stack([crop_resize(source[i], box, SIZE) for i in frames])
        assert np.array_equal(clip, expected), name
    with open(out / "clips.csv", newline="") as handle:
        rows = {r["clip"]: r for r in csv.DictReader(handle)}
    row = rows[os.path.join("test", "id002#vidB#000010#000040")]
    assert (row["partition"], row["frames"], row["expected_frames"], row["box"]) == ("test", "15", "15", "0-0-200-200")
    ds = FramesDataset(str(out), frame_shape=(64, 64, 3), is_train=True, id_sampling=True)
    assert ds.ids == ["id001", "id002"]  # grouped by person, as the papers train
    assert len(FramesDataset(str(out), frame_shape=(64, 64, 3), is_train=False)) == 2


def test_mp4_output_and_workers(tmp_path, sources):
    out = tmp_path / "vox-mp4"
    meta = write_metadata(tmp_path / "m.csv", VOX_ROWS)
    assert main(["--metadata", meta, "--source_dir", str(sources), "--output", str(out),
                 "--image_shape", "64,64", "--workers", "2", "--quiet"]) == 0
    decoded = {v: np.stack(list(open_video(str(sources / f"{v}.mp4")))) for v in ("vidA", "vidB")}
    for name, (split, frames, box) in EXPECTED.items():
        reader = open_video(str(out / split / f"{name}.mp4"))
        assert (reader.num_frames, reader.height, reader.width) == (len(frames), 64, 64), name
        crops = np.stack([crop_resize(f, box, SIZE) for f in decoded[name.split("#")[1]]]).astype(float)
        for k in (0, len(frames) - 1):  # the nearest source frame (lossy twice over) is the right one
            frame = reader.get_frames([k])[0].astype(float)
            distances = np.abs(crops - frame).mean(axis=(1, 2, 3))
            assert int(distances.argmin()) == frames[k] and distances.min() < 3, (name, k)


def test_missing_sources_are_one_clear_error(tmp_path, sources, capsys):
    meta = write_metadata(tmp_path / "m.csv", VOX_ROWS + ["vidC,0,10,0-0-100-100,25,320,240,test,id003",
                                                         "vidD,0,10,0-0-100-100,25,320,240,test,id004"])
    out = tmp_path / "out"
    assert main(["--metadata", meta, "--source_dir", str(sources), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "2 of 4 source videos missing" in err and os.path.join(str(sources), "vidC.mp4") in err
    assert not out.exists()  # nothing written
    assert main(["--metadata", meta, "--source_dir", str(sources), "--output", str(out), "--format", "png",
                 "--image_shape", "64,64", "--skip_missing", "--quiet"]) == 0
    assert len(os.listdir(out / "train")) + len(os.listdir(out / "test")) == 4


def test_taichi_table_without_partition(tmp_path, sources, capsys):
    header = "video_id,start,end,bbox,fps,width,height"
    meta = write_metadata(tmp_path / "taichi-metadata.csv", ["vidA,0,6,0-0-320-240,25,320,240"], header)
    out = tmp_path / "taichi"
    assert main(["--metadata", meta, "--source_dir", str(sources), "--output", str(out), "--quiet"]) == 2
    assert "--default_partition" in capsys.readouterr().err
    assert main(["--metadata", meta, "--source_dir", str(sources), "--output", str(out), "--format", "png",
                 "--image_shape", "64,64", "--default_partition", "test", "--quiet"]) == 0
    assert os.listdir(out / "test") == ["vidA#000000#000006"] and os.listdir(out / "train") == []
    assert open_video(str(out / "test" / "vidA#000000#000006")).num_frames == 6


def test_bad_tables_are_one_line_errors(tmp_path, sources, capsys):
    cases = [("video_id,start,end\nvidA,0,5\n", "missing columns bbox"),
             (HEADER + "\nvidA,9,5,0-0-10-10,25,320,240,train,id\n", "empty frame range"),
             (HEADER + "\nvidA,0,5,0-0-10,25,320,240,train,id\n", "unreadable row"),
             (HEADER + "\nvidA,0,5,0-0-10-10,25,320,240,val,id\n", "partition must be train or test")]
    for text, message in cases:
        (tmp_path / "bad.csv").write_text(text)
        assert main(["--metadata", str(tmp_path / "bad.csv"), "--source_dir", str(sources),
                     "--output", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
