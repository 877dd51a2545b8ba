"""The reference's `python demo.py ...` command, run from a shell script, for both families.

Inputs are float32 TIFFs made from the fixtures (lossless, so the frames can be compared
with the reference's); results are written as PNG frames and compared with
`img_as_ubyte` of the reference frames (1 grey level: rounding at the boundary).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def write_inputs(folder, source: torch.Tensor, driving: torch.Tensor) -> tuple[str, str]:
    """(1, 3, H, W) source and (T, 3, H, W) driving -> source.tif and a folder of TIFF frames."""
    import imageio.v2 as imageio

    src = os.path.join(folder, "source.tif")
    imageio.imwrite(src, source[0].permute(1, 2, 0).numpy().astype(np.float32))
    drv = os.path.join(folder, "driving")
    os.makedirs(drv)
    for t, frame in enumerate(driving):
        imageio.imwrite(os.path.join(drv, f"{t:04d}.tif"), frame.permute(1, 2, 0).numpy().astype(np.float32))
    return src, drv


def run_script(folder, command: str) -> subprocess.CompletedProcess:
    script = os.path.join(folder, "animate.sh")
    with open(script, "w") as f:
        f.write(f"#!/bin/sh\nset -e\ncd {ROOT}\n{command}\n")
    return subprocess.run(["sh", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})


def read_result(folder: str) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack([imageio.imread(os.path.join(folder, n)) for n in sorted(os.listdir(folder))])


def expected_ubyte(frames: list[torch.Tensor]) -> np.ndarray:
    from skimage import img_as_ubyte

    return img_as_ubyte(np.clip(torch.cat(frames).permute(0, 2, 3, 1).numpy(), 0, 1))


@pytest.mark.parametrize("mode", ["relative", "standard"])
def test_tpsmm_reference_command(tmp_path, tiny_io, tiny_config_path, tiny_checkpoint, mode):
    src, drv = write_inputs(tmp_path, tiny_io["source"], tiny_io["driving"])
    out = tmp_path / "result"
    proc = run_script(tmp_path, f"{sys.executable} demo.py --config {tiny_config_path} "
                                f"--checkpoint {tiny_checkpoint} --source_image {src} --driving_video {drv} "
                                f"--result_video {out} --mode {mode} --cpu")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = read_result(str(out))
    expected = expected_ubyte([r["prediction"] for r in tiny_io[mode]])
    assert got.shape == expected.shape == (3, 64, 64, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_fomm_reference_command(tmp_path):
    io = torch.load(os.path.join(FIXTURES, "fomm_tiny_io.pt"), weights_only=True)
    src, drv = write_inputs(tmp_path, io["inputs"]["source"], io["inputs"]["driving"])
    config, checkpoint = os.path.join(FIXTURES, "fomm_tiny.yaml"), os.path.join(FIXTURES, "fomm_tiny.pth.tar")
    base = (f"{sys.executable} demo.py --config {config} --checkpoint {checkpoint} --source_image {src} "
            f"--driving_video {drv} --cpu")
    proc = run_script(tmp_path, f"{base} --result_video {tmp_path / 'rel'} --relative --adapt_scale\n"
                                f"{base} --result_video {tmp_path / 'abs'}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name, setting in (("rel", "relative_adapt"), ("abs", "absolute")):  # FOMM's default is absolute
        got = read_result(str(tmp_path / name))
        expected = expected_ubyte([f["prediction"] for f in io["animation"][setting]["frames"]])
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, name


def test_reference_flags_and_defaults():
    from demo import _reference_defaults, build_parser

    args = build_parser().parse_args(["--config", "config/vox-256.yaml"])
    assert (args.mode, args.find_best_frame, args.cpu, args.relative, args.adapt_scale, args.audio,
            args.best_frame, args.img_shape) == (None, False, False, False, False, False, None, None)  # mode: per family
    assert _reference_defaults("tpsmm") == {"checkpoint": "checkpoints/vox.pth.tar",
                                            "source_image": "./assets/source.png",
                                            "driving_video": "./assets/driving.mp4", "result_video": "./result.mp4"}
    assert _reference_defaults("fomm")["checkpoint"] == "vox-cpk.pth.tar"
    args = build_parser().parse_args(["--config", "c", "--img_shape", "384,384", "--mode", "avd", "--best_frame", "4"])
    assert args.img_shape == [384, 384] and args.mode == "avd" and args.best_frame == 4


def test_missing_file_is_one_line(tmp_path, tiny_config_path, tiny_checkpoint):
    from demo import main

    code = main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image",
                 str(tmp_path / "nope.png"), "--driving_video", str(tmp_path / "nope.mp4"), "--cpu"])
    assert code == 2


def test_best_frame_animates_backwards_and_forwards(tmp_path, tiny_io, tiny_config_path, tiny_checkpoint):
    """`--best_frame 1`: frames 1..0 animated from frame 1 backwards, frames 1..2 forwards (the reference's order)."""
    import imageio.v2 as imageio
    from skimage import img_as_ubyte

    from demo import load_checkpoints, main, make_animation

    src, drv = write_inputs(tmp_path, tiny_io["source"], tiny_io["driving"])
    out = tmp_path / "result"
    assert main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", src,
                 "--driving_video", drv, "--result_video", str(out), "--best_frame", "1", "--cpu"]) == 0
    got = read_result(str(out))
    nets = load_checkpoints(tiny_config_path, tiny_checkpoint, "cpu")
    source = imageio.imread(src)
    driving = [imageio.imread(os.path.join(drv, n)) for n in sorted(os.listdir(drv))]
    backward = make_animation(source, driving[:2][::-1], *nets, device="cpu")
    forward = make_animation(source, driving[1:], *nets, device="cpu")
    expected = np.stack([img_as_ubyte(np.clip(f, 0, 1)) for f in backward[::-1] + forward[1:]])
    assert got.shape == (3, 64, 64, 3) and np.array_equal(got, expected)
    # anchored at frame 1, frame 0 is not the fixture's relative frame 0 (anchored at frame 0)
    first = img_as_ubyte(np.clip(tiny_io["relative"][0]["prediction"][0].permute(1, 2, 0).numpy(), 0, 1))
    assert np.abs(got[0].astype(int) - first.astype(int)).max() > 1


def test_audio_flag_keeps_the_driving_audio(tmp_path, tiny_config_path, tiny_checkpoint):
    from demo import main
    from utils.media import has_audio
    from utils.video import open_video

    import imageio.v3 as iio

    src = tmp_path / "s.png"
    iio.imwrite(src, np.full((64, 64, 3), 100, np.uint8))
    clip = os.path.join(ROOT, "tests", "data", "single_face.mp4")
    args = ["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", str(src),
            "--driving_video", clip, "--cpu"]
    assert main(args + ["--result_video", str(tmp_path / "silent.mp4")]) == 0
    assert main(args + ["--result_video", str(tmp_path / "sound.mp4"), "--audio"]) == 0
    assert not has_audio(str(tmp_path / "silent.mp4")) and has_audio(str(tmp_path / "sound.mp4"))
    assert open_video(str(tmp_path / "sound.mp4")).num_frames == open_video(clip).num_frames
