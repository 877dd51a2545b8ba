"""Live animation without a browser: the latest-frame queue, the online crop tracker, and
`animate.py --live` driven by a real clip served as a live stream on the loopback address."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from utils.live import LatestFrameQueue, OnlineBoxTracker, is_live_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.path.join(ROOT, "tests", "data", "single_face.mp4")
PHOTO = os.path.join(ROOT, "web", "examples", "astronaut.png")


def test_latest_frame_queue_drops_stale_frames():
    queue = LatestFrameQueue(capacity=2)
    assert [queue.put(i) for i in range(5)] == [False, False, True, True, True]
    assert queue.dropped == 3 and len(queue) == 2
    assert queue.get() == 3 and queue.get() == 4          # the newest frames, oldest of them first
    assert queue.get(timeout=0.05) is None                 # empty: waits, then gives up
    got = []
    reader = threading.Thread(target=lambda: got.append(queue.get(timeout=5)))
    reader.start()
    time.sleep(0.05)
    queue.put("late")                                      # wakes a waiting reader
    reader.join(5)
    assert got == ["late"]
    queue.put("x")
    queue.close()
    assert queue.get() == "x" and queue.get() is None      # closed: drained, then None at once
    assert queue.put("after") is False and len(queue) == 0
    with pytest.raises(ValueError):
        LatestFrameQueue(0)


def test_lossless_queue_keeps_every_frame_in_order():
    """Writing a file (issue 25): a full queue makes the producer wait instead of dropping."""
    queue = LatestFrameQueue(capacity=2, lossless=True)
    producer = threading.Thread(target=lambda: [queue.put(i) for i in range(50)] and queue.close())
    producer.start()
    time.sleep(0.1)
    assert len(queue) == 2 and producer.is_alive()         # blocked on the third item, nothing dropped
    got = []
    while (item := queue.get(timeout=5)) is not None:
        got.append(item)
    producer.join(5)
    assert got == list(range(50)) and queue.dropped == 0


def test_online_tracker_detects_every_n_frames_and_smooths():
    calls = []

    def detect(frame):  # a face box whose centre moves 10 px right per call
        calls.append(1)
        x = 100 + 10 * (len(calls) - 1)
        return [np.array([x, 100, x + 40, 140], dtype=float)]

    frame = np.zeros((300, 400, 3), np.uint8)
    tracker = OnlineBoxTracker(detect, scale=2.0, every=3, smoothing=0.5)
    boxes = [tracker.update(frame) for _ in range(7)]
    assert len(calls) == 3                                  # frames 0, 3, 6
    side = boxes[0][2] - boxes[0][0]
    assert side == pytest.approx(80.0)                      # 2 x the 40 px box, square
    assert np.allclose(boxes[0], boxes[1]) and np.allclose(boxes[1], boxes[2])  # reused between detections
    centres = [(b[0] + b[2]) / 2 for b in (boxes[0], boxes[3], boxes[6])]
    assert centres == pytest.approx([120.0, 125.0, 132.5])  # exponential smoothing of 120, 130, 140
    tracker.reset()
    empty = OnlineBoxTracker(lambda f: [], scale=2.0)
    assert np.allclose(empty.update(frame), [50, 0, 350, 300])  # no face yet: the centre square


def test_live_source_kinds():
    assert is_live_source("/dev/video0") and is_live_source("tcp://127.0.0.1:9000")
    assert is_live_source("udp://127.0.0.1:9000") and is_live_source("rtsp://cam.local/stream")
    assert not is_live_source(CLIP) and not is_live_source("clips/driving.mp4")


def _serve_stream(port: int) -> subprocess.Popen:
    """ffmpeg plays the clip in real time (-re, looped) as MPEG-TS to the first client of tcp://127.0.0.1:PORT."""
    from utils.media import ffmpeg_exe

    return subprocess.Popen([ffmpeg_exe(), "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", CLIP, "-an",
                             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10",
                             "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_cli_live_from_loopback_stream(tmp_path, tiny_config_path, tiny_checkpoint):
    """`animate.py --driving_video tcp://127.0.0.1:PORT --live --result_video out.mp4 --live_frames N`."""
    from utils.video import open_video
    from web.harness import free_port

    port = free_port()
    server = _serve_stream(port)
    out = tmp_path / "live.mp4"
    frames = 20
    try:
        time.sleep(1.0)  # ffmpeg listening
        run = subprocess.run([sys.executable, os.path.join(ROOT, "animate.py"), "--config", tiny_config_path,
                              "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                              "--driving_video", f"tcp://127.0.0.1:{port}", "--live", "--result_video", str(out),
                              "--live_frames", str(frames), "--cpu"],
                             cwd=ROOT, capture_output=True, text=True, timeout=240,
                             env=dict(os.environ, OMP_NUM_THREADS="1", DISPLAY=""))
    finally:
        server.kill()
        server.wait(10)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"live: {frames} frames" in run.stdout and "frames/s" in run.stdout and "latency" in run.stdout
    video = open_video(str(out))
    assert (len(video), video.width, video.height) == (frames, 64, 64)
    result = np.stack(list(video)).astype(np.float32)  # T x 64 x 64 x 3
    assert result.std() > 5.0                          # an image, not a blank
    steps = np.abs(np.diff(result, axis=0)).mean(axis=(1, 2, 3))
    assert steps.max() > 0.5                           # the photo moves with the stream


def test_stream_without_live_writes_every_frame_read(tmp_path, tiny_config_path, tiny_checkpoint, capsys):
    """Without --live a stream is recorded (issue 25): `--live_frames N` reads N frames and writes all N."""
    import animate
    from utils.video import open_video
    from web.harness import free_port

    port = free_port()
    server = _serve_stream(port)
    out = tmp_path / "recorded"
    frames = 12
    try:
        time.sleep(1.0)  # ffmpeg listening
        code = animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                             "--driving_video", f"tcp://127.0.0.1:{port}", "--result_video", str(out),
                             "--live_frames", str(frames), "--cpu", "--quiet", "--batch_size", "4"])
    finally:
        server.kill()
        server.wait(10)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"({frames} frames, every frame read from the stream, none dropped" in printed, printed
    assert len(open_video(str(out))) == frames


def test_cli_live_needs_an_output_without_display(tmp_path, tiny_config_path, tiny_checkpoint):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "animate.py"), "--config", tiny_config_path,
                          "--checkpoint", tiny_checkpoint, "--source_image", PHOTO, "--driving_video", CLIP,
                          "--live", "--live_frames", "2", "--cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env=dict(os.environ, OMP_NUM_THREADS="1", DISPLAY="", WAYLAND_DISPLAY=""))
    assert run.returncode == 2
    assert "error: no display for a live window" in run.stderr and "Traceback" not in run.stderr
