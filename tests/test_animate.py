"""animate.py end to end on the real clips (tests/data) with the tiny random-weight checkpoint.

Checks what a user sees: frame count, frame rate and audio of the result, gif and PNG
outputs, crops of any photo, the best-frame anchor, and one-line errors for bad input
that leave no file behind.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import animate
from utils.crop import centre_box, crop_resize
from utils.media import ffmpeg_exe, probe
from utils.video import open_video, read_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny 64 px networks run fastest on one thread when the CPU is shared (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def leftovers(folder) -> list[str]:
    """Temporary outputs a run may have left (there must be none)."""
    return [n for n in os.listdir(folder) if ".partial-" in n]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Test inputs made from the real clips: with sound, short cuts, a photo."""
    import skimage.data
    from PIL import Image

    d = tmp_path_factory.mktemp("media")
    paths = {
        # carphone (120 frames, 29.97 fps, no sound) with a 440 Hz tone muxed on
        "carphone_audio": str(d / "carphone_audio.mp4"),
        "face_short": str(d / "face_short.mp4"),          # 12 frames of single_face, with sound
        "body_short": str(d / "body_short.mp4"),          # 10 frames of two_people_body, a person walking
        "photo": str(d / "astronaut.jpg"),
    }
    ffmpeg("-i", os.path.join(DATA, "carphone.mp4"), "-f", "lavfi", "-i", "sine=frequency=440:duration=10",
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", paths["carphone_audio"])
    ffmpeg("-i", os.path.join(DATA, "single_face.mp4"), "-f", "lavfi", "-i", "sine=frequency=300:duration=10",
           "-map", "0:v", "-map", "1:a", "-frames:v", "12", "-c:v", "libx264", "-c:a", "aac", "-shortest",
           paths["face_short"])
    ffmpeg("-ss", "4.5", "-i", os.path.join(DATA, "two_people_body.mp4"), "-frames:v", "10", "-c:v", "libx264",
           paths["body_short"])
    Image.fromarray(skimage.data.astronaut()).save(paths["photo"], quality=92)
    return paths


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = animate.main(args + ["--quiet", "--cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_mp4_keeps_frames_rate_and_audio(tiny_config_path, tiny_checkpoint, media, tmp_path, capsys):
    result, sbs = tmp_path / "result.mp4", tmp_path / "sbs.mp4"
    code, out, err = run(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint,
                          "--source_image", media["photo"], "--driving_video", media["carphone_audio"],
                          "--result_video", str(result), "--side_by_side", str(sbs), "--batch_size", "16"], capsys)
    assert code == 0, err
    assert "120 frames" in out and "with audio" in out
    driving = probe(media["carphone_audio"])
    info = probe(str(result))
    assert info["num_frames"] == driving["num_frames"] == 120
    assert abs(info["fps"] - 30000 / 1001) < 1e-3
    assert (info["width"], info["height"]) == (64, 64) and info["video_codec"] == "h264"
    assert info["has_audio"] and abs(info["audio_seconds"] - 120 / (30000 / 1001)) < 0.1
    side = probe(str(sbs))
    assert (side["width"], side["height"], side["num_frames"]) == (192, 64, 120) and side["has_audio"]
    assert leftovers(tmp_path) == []


def test_no_audio_flag_and_progress(tiny_config_path, tiny_checkpoint, media, tmp_path):
    calls = []
    info = animate.run_animation(tiny_config_path, tiny_checkpoint, media["photo"], media["face_short"],
                                 str(tmp_path / "silent.mp4"), audio=False, batch_size=5,
                                 progress=lambda done, total: calls.append((done, total)))
    assert info["num_frames"] == 12 and info["audio"] is False and info["fps"] == pytest.approx(30.0)
    assert calls == [(0, 12), (5, 12), (10, 12), (12, 12)]
    probed = probe(str(tmp_path / "silent.mp4"))
    assert probed["num_frames"] == 12 and not probed["has_audio"]


def test_gif_output_avd_mode(tiny_config_path, tiny_checkpoint, media, tmp_path, capsys):
    from PIL import Image

    result = tmp_path / "result.gif"
    code, out, err = run(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image",
                          media["photo"], "--driving_video", media["face_short"], "--result_video", str(result),
                          "--mode", "avd"], capsys)
    assert code == 0, err
    assert "with audio" not in out  # gifs have no sound
    with Image.open(result) as gif:
        assert gif.n_frames == 12 and gif.size == (64, 64)
    assert leftovers(tmp_path) == []


def test_png_frames_match_reference_best_frame_semantics(tiny_config_path, tiny_checkpoint, tiny_models, tmp_path):
    """--best_frame k animates forwards and backwards from frame k (reference demo), into a folder of PNGs."""
    frames = open_video(os.path.join(DATA, "carphone.mp4")).get_frames(list(range(0, 40, 4)))  # 10 x 144 x 176 x 3
    folder = tmp_path / "driving"
    folder.mkdir()
    from PIL import Image
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    photo = read_image(str(folder / "007.png"))
    out = tmp_path / "frames"
    info = animate.run_animation(tiny_config_path, tiny_checkpoint, str(folder / "007.png"), str(folder), str(out),
                                 best_frame=4, batch_size=3)
    assert info["anchor_frame"] == 4 and info["num_frames"] == 10
    written = sorted(os.listdir(out))
    assert written == [f"{i:06d}.png" for i in range(10)]
    got = np.stack([read_image(str(out / name)) for name in written])  # 10 x 64 x 64 x 3

    def fit(image):
        return torch.from_numpy(crop_resize(image, centre_box(*image.shape[:2]), (64, 64)).copy()).permute(2, 0, 1).float() / 255

    source = fit(photo)[None]
    driving = torch.stack([fit(f) for f in frames])  # 10 x 3 x 64 x 64
    forward = animate.make_animation(source, driving[4:], tiny_models, mode="relative")
    backward = animate.make_animation(source, driving[:5].flip(0), tiny_models, mode="relative")
    expected = torch.cat([backward.flip(0)[:-1], forward])  # 10 x 3 x 64 x 64
    expected = (expected.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_fomm_model_batches_keep_the_first_frame_anchor(tmp_path):
    """A FOMM checkpoint: batch by batch, every frame is still animated relative to driving frame 0."""
    from modules import build_models, load_checkpoint

    config = os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.yaml")
    checkpoint = os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.pth.tar")
    frames = open_video(os.path.join(DATA, "single_face.mp4")).get_frames(list(range(0, 60, 10)))  # 6 frames
    folder = tmp_path / "driving"
    folder.mkdir()
    from PIL import Image
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    info = animate.run_animation(config, checkpoint, str(folder / "003.png"), str(folder), str(tmp_path / "out"),
                                 batch_size=2)
    size = tuple(info["size"])
    got = np.stack([read_image(str(tmp_path / "out" / f"{i:06d}.png")) for i in range(6)])
    models = build_models(config)
    load_checkpoint(checkpoint, models, strict=False)
    for m in models.values():
        m.eval()

    def fit(image):
        return torch.from_numpy(crop_resize(image, centre_box(*image.shape[:2]), size).copy()).permute(2, 0, 1).float() / 255

    with torch.no_grad():
        expected = animate.make_animation(fit(frames[3])[None], torch.stack([fit(f) for f in frames]), models,
                                          mode="relative", batch_size=6)
    expected = (expected.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_find_best_frame_picks_matching_pose():
    """single_face is neutral in frames 0-16 and smiling in 21-68; a re-cropped frame finds its own pose."""
    from utils.crop import best_frame

    reader = open_video(os.path.join(DATA, "single_face.mp4"))
    step = 4
    frames = [crop_resize(f, centre_box(*f.shape[:2]), (128, 128)) for i, f in enumerate(reader) if i % step == 0]
    for index, allowed in ((6, range(0, 17)), (45, range(21, 69))):
        frame = reader.get_frames([index])[0]
        source = crop_resize(frame, (170, 40, 470, 340), (160, 160))  # another zoom and offset
        found, with_face = best_frame(source, iter(frames), backend="dlib")
        assert with_face == len(frames)
        assert found * step in allowed


def test_face_crop_and_find_best_frame_end_to_end(tiny_config_path, tiny_checkpoint, media, tmp_path):
    info = animate.run_animation(tiny_config_path, tiny_checkpoint, media["photo"], media["face_short"],
                                 str(tmp_path / "face.mp4"), crop="face", find_best_frame=True)
    assert 0 <= info["anchor_frame"] < 12 and info["num_frames"] == 12 and info["crop"] == "face"
    assert probe(str(tmp_path / "face.mp4"))["has_audio"]


def test_person_crop_end_to_end(tiny_config_path, tiny_checkpoint, media, tmp_path):
    info = animate.run_animation(tiny_config_path, tiny_checkpoint, media["body_short"], media["body_short"],
                                 str(tmp_path / "body"), crop="person", mode="standard", precision="bf16")
    assert info["num_frames"] == 10 and len(os.listdir(tmp_path / "body")) == 10


@pytest.mark.parametrize("kind", ["rgba", "gray"])
def test_any_photo(kind, tiny_config_path, tiny_checkpoint, tmp_path):
    """RGBA and grayscale photos of odd sizes and aspects; a gif as the driving video."""
    from PIL import Image

    rng = np.random.default_rng(0)
    if kind == "rgba":
        photo = tmp_path / "photo.png"
        Image.fromarray(rng.integers(0, 255, (203, 517, 4), dtype=np.uint8), "RGBA").save(photo)
    else:
        photo = tmp_path / "photo.jpg"
        Image.fromarray(rng.integers(0, 255, (391, 97), dtype=np.uint8), "L").save(photo)
    gif = tmp_path / "driving.gif"
    frames = open_video(os.path.join(DATA, "single_face.mp4")).get_frames([0, 5, 10, 15, 20])
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=100, loop=0)
    info = animate.run_animation(tiny_config_path, tiny_checkpoint, str(photo), str(gif), str(tmp_path / "out.mp4"),
                                 crop="none" if kind == "gray" else "centre")
    probed = probe(str(tmp_path / "out.mp4"))
    assert info["num_frames"] == probed["num_frames"] == 5
    assert probed["fps"] == pytest.approx(10.0)


def test_failure_while_writing_leaves_no_file(tiny_config_path, tiny_checkpoint, media, tmp_path):
    def stop(done, total):
        if done >= 4:
            raise RuntimeError("boom")

    result = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        animate.run_animation(tiny_config_path, tiny_checkpoint, media["photo"], media["face_short"], str(result),
                              side_by_side=str(tmp_path / "sbs.mp4"), batch_size=4, progress=stop)
    assert os.listdir(tmp_path) == []


def test_sigterm_mid_run_leaves_no_file(tiny_config_path, tiny_checkpoint, media, tmp_path, capsys, monkeypatch):
    """`kill <pid>` during the animation: exit code 143 (128 + SIGTERM), the partial outputs are removed."""
    import signal

    calls = []
    original = animate.to_uint8

    def to_uint8(frames):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(frames)

    monkeypatch.setattr(animate, "to_uint8", to_uint8)
    handler = signal.getsignal(signal.SIGTERM)
    code, _, err = run(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image",
                        media["photo"], "--driving_video", media["face_short"], "--result_video",
                        str(tmp_path / "r.mp4"), "--side_by_side", str(tmp_path / "s.mp4"), "--batch_size", "4"], capsys)
    assert code == 143 and err.strip() == "error: terminated (SIGTERM); no output written"
    assert os.listdir(tmp_path) == [] and len(calls) == 2
    assert signal.getsignal(signal.SIGTERM) == handler  # restored


def test_container_formats(tiny_config_path, tiny_checkpoint, media, tmp_path):
    """Driving videos as mov, webm (VP9) and avi of an unusual size; outputs in the same containers."""
    for ext, codec in (("mov", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4")):
        driving = tmp_path / f"driving.{ext}"
        ffmpeg("-i", os.path.join(DATA, "single_face.mp4"), "-frames:v", "6", "-vf", "scale=318:210,setsar=1",
               "-r", "24", "-c:v", codec, str(driving))
        result = tmp_path / f"result.{ext}"
        info = animate.run_animation(tiny_config_path, tiny_checkpoint, media["photo"], str(driving), str(result))
        probed = probe(str(result))
        assert info["num_frames"] == probed["num_frames"] == 6, ext
        assert probed["fps"] == pytest.approx(24.0, rel=1e-3), ext


# ----------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_checkpoint):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.jpg").write_text("not an image")
    (d / "notes.mp4").write_text("not a video")
    (d / "empty.mp4").write_bytes(b"")
    (d / "no_frames").mkdir()
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(d / "noise.png")
    ffmpeg("-f", "lavfi", "-i", "color=s=64x64:d=1", "-frames:v", "0", "-c:v", "libx264", str(d / "zero.avi"))
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(d / "audio_only.mp4"))
    data = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in data.items() if k != "avd_network"}, d / "no_avd.pth.tar")
    with open(tiny_checkpoint, "rb") as src, open(d / "truncated.pth.tar", "wb") as dst:
        dst.write(src.read(100_000))
    return d


@pytest.mark.parametrize("case, message", [
    ("missing_source", "file not found"),
    ("source_not_image", "not a readable image"),
    ("driving_not_video", "not a readable video"),
    ("driving_empty_file", "empty file"),
    ("driving_zero_frames", "video has no frames"),
    ("driving_audio_only", "no video stream"),
    ("driving_empty_folder", "no frames"),
    ("checkpoint_mismatch", "does not match the config"),
    ("checkpoint_truncated", "cannot read checkpoint"),
    ("checkpoint_missing", "checkpoint not found"),
    ("avd_without_avd_network", "needs a checkpoint with an avd_network"),
    ("config_missing", "config file not found"),
    ("bad_output_extension", "unsupported output"),
    ("output_overwrites_input", "would overwrite the input"),
    ("best_frame_out_of_range", "outside the driving video"),
    ("no_face_in_source", "no face found in the source image"),
    ("image_size_unsupported", "sides must be multiples of 32"),
])
def test_bad_input_one_line_error(case, message, bad, media, tiny_config_path, tiny_checkpoint, tmp_path, capsys):
    args = {"--config": tiny_config_path, "--checkpoint": tiny_checkpoint, "--source_image": media["photo"],
            "--driving_video": media["face_short"], "--result_video": str(tmp_path / "out" / "result.mp4")}
    extra: list[str] = []
    if case == "missing_source":
        args["--source_image"] = str(bad / "nope.png")
    elif case == "source_not_image":
        args["--source_image"] = str(bad / "notes.jpg")
    elif case == "driving_not_video":
        args["--driving_video"] = str(bad / "notes.mp4")
    elif case == "driving_empty_file":
        args["--driving_video"] = str(bad / "empty.mp4")
    elif case == "driving_zero_frames":
        args["--driving_video"] = str(bad / "zero.avi")
    elif case == "driving_audio_only":
        args["--driving_video"] = str(bad / "audio_only.mp4")
    elif case == "driving_empty_folder":
        args["--driving_video"] = str(bad / "no_frames")
    elif case == "checkpoint_mismatch":
        args["--config"] = os.path.join(ROOT, "config", "vox-256.yaml")
    elif case == "checkpoint_truncated":
        args["--checkpoint"] = str(bad / "truncated.pth.tar")
    elif case == "checkpoint_missing":
        args["--checkpoint"] = str(bad / "nope.pth.tar")
    elif case == "avd_without_avd_network":
        args["--checkpoint"] = str(bad / "no_avd.pth.tar")
        extra = ["--mode", "avd"]
    elif case == "config_missing":
        args["--config"] = str(bad / "nope.yaml")
    elif case == "bad_output_extension":
        args["--result_video"] = str(tmp_path / "out" / "result.txt")
    elif case == "output_overwrites_input":
        args["--result_video"] = media["face_short"]
    elif case == "best_frame_out_of_range":
        extra = ["--best_frame", "99"]
    elif case == "image_size_unsupported":
        extra = ["--img_shape", "48,80"]
    elif case == "no_face_in_source":
        args["--source_image"] = str(bad / "noise.png")
        extra = ["--crop", "face"]
    before = sorted(os.listdir(os.path.dirname(media["face_short"])))
    code, out, err = run([x for kv in args.items() for x in kv] + extra, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not os.path.exists(tmp_path / "out")
    assert sorted(os.listdir(os.path.dirname(media["face_short"]))) == before


def test_cli_subprocess_no_traceback(tmp_path, tiny_config_path):
    """The real command line: one line on stderr, exit code 2, nothing written."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "animate.py"), "--config", tiny_config_path,
                           "--checkpoint", str(tmp_path / "missing.pth.tar"), "--source_image",
                           str(tmp_path / "missing.png"), "--driving_video", os.path.join(DATA, "carphone.mp4"),
                           "--result_video", str(tmp_path / "r.mp4"), "--cpu"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: file not found: {tmp_path / 'missing.png'}"
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- crops

def test_crop_resize_any_box():
    frame = np.arange(30 * 50 * 3, dtype=np.uint8).reshape(30, 50, 3)
    assert crop_resize(frame, centre_box(30, 50), (16, 16)).shape == (16, 16, 3)
    assert np.array_equal(centre_box(30, 50), [10, 0, 40, 30])
    out = crop_resize(frame, (-20, -20, 70, 70), (8, 12))  # box larger than the frame: borders repeated
    assert out.shape == (8, 12, 3) and out.dtype == np.uint8


def test_track_boxes_smooth_and_follow(monkeypatch):
    """A face moving right with detector jitter and missed frames: square boxes that follow it smoothly."""
    import utils.crop as crop

    rng = np.random.default_rng(0)
    num, height, width = 90, 360, 640
    truth_x = np.linspace(150, 450, num)
    jitter = rng.normal(0, 6, size=(num, 2))

    class Frame(np.ndarray):
        pass

    frames = []
    for i in range(num):
        f = np.zeros((height, width, 3), np.uint8).view(Frame)
        f.index = i
        frames.append(f)

    def fake_detector(kind):
        def detect(frame):
            i = frame.index
            if i % 7 == 3:
                return []  # missed detection
            x, y = truth_x[i] + jitter[i, 0], 180 + jitter[i, 1]
            return [(x - 40, y - 50, x + 40, y + 50)]
        return detect

    monkeypatch.setattr(crop, "detector", fake_detector)
    monkeypatch.setattr(crop, "detect_scaled", lambda frame, detect, max_side: [np.asarray(b, float) for b in detect(frame)])
    boxes = crop.track_boxes(iter(frames), num, height, width, "face", fps=30.0, detect_every=1)
    assert boxes.shape == (num, 4)
    sides = boxes[:, 2] - boxes[:, 0]
    assert np.allclose(sides, boxes[:, 3] - boxes[:, 1])  # square
    assert np.allclose(sides, crop.FACE_SCALE * 100, rtol=0.05)
    assert (boxes[:, 0] >= -1e-6).all() and (boxes[:, 2] <= width + 1e-6).all()
    centre = (boxes[:, 0] + boxes[:, 2]) / 2
    inside = (centre > 200) & (centre < 400)  # away from the frame's borders, where the box is pushed inside
    assert np.abs(centre - truth_x)[inside].max() < 12
    raw_jerk = np.abs(np.diff(truth_x + jitter[:, 0], 2)).mean()
    assert np.abs(np.diff(centre, 2)).mean() < raw_jerk / 5  # smooth


def test_phone_photo_and_video_are_turned_upright(tmp_path):
    """EXIF orientation (photos) and display rotation (videos) are applied, as viewers and ffmpeg do."""
    from PIL import Image, ImageOps

    from utils.media import open_upright_video, read_photo

    frame = open_video(os.path.join(DATA, "single_face.mp4")).get_frames([0])[0]  # 360 x 640 x 3
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(frame).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    photo = read_photo(str(tmp_path / "phone.jpg"))
    with Image.open(tmp_path / "phone.jpg") as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert photo.shape == (640, 360, 3) and np.array_equal(photo, expected)

    ffmpeg("-display_rotation", "90", "-i", os.path.join(DATA, "single_face.mp4"), "-frames:v", "3", "-c", "copy",
           str(tmp_path / "phone.mp4"))
    ffmpeg("-i", str(tmp_path / "phone.mp4"), "-frames:v", "1", str(tmp_path / "shown.png"))  # ffmpeg autorotates
    reader = open_upright_video(str(tmp_path / "phone.mp4"))
    assert (reader.height, reader.width, reader.num_frames) == (640, 360, 3)
    first = next(iter(reader))
    assert first.shape == (640, 360, 3) and np.array_equal(reader.get_frames([0])[0], first)
    shown = np.asarray(Image.open(tmp_path / "shown.png").convert("RGB"))
    assert np.abs(first.astype(int) - shown.astype(int)).mean() < 2
    assert open_upright_video(os.path.join(DATA, "carphone.mp4")).height == 144  # no rotation: unchanged
