"""Live animation plumbing: camera / stream sources, a latest-frame queue, an online crop tracker, sinks.

Real-time rule: the animation never falls behind the camera. Frames go through a
`LatestFrameQueue` (bounded; when full, the oldest frame is dropped), so a slow model
animates the newest frame it can, and the latency stays one frame of compute plus
transport. Nothing here knows the networks: `run_live` takes the animation as a
callable (the engine is built by the entry point, `animate.py --live` or `web/live.py`).

Sources (`open_live_source`): a V4L2 camera (`/dev/video0`), a stream URL (tcp://,
udp://, rtsp://, rtmp://, srt://, http(s)://) or, for tests and replays, a video file,
decoded by ffmpeg (imageio-ffmpeg's binary) in a reader thread.
Sinks (`open_live_sink`): a window (OpenCV) when there is a display, else an encoded
stream: a video file (H.264) or a stream URL (MPEG-TS over tcp/udp, or any URL ffmpeg
can write).
"""
from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from typing import Callable, Iterator

import numpy as np

from utils.errors import UserError

STREAM_SCHEMES = ("tcp://", "udp://", "rtsp://", "rtmp://", "srt://", "http://", "https://", "rtp://")
CAMERA_PREFIX = "/dev/video"


class LiveError(UserError):
    """A live source or sink that cannot be opened (one-line message)."""


def is_camera(path: str) -> bool:
    return str(path).startswith(CAMERA_PREFIX)


def is_stream_url(path: str) -> bool:
    return str(path).lower().startswith(STREAM_SCHEMES)


def is_live_source(path: str) -> bool:
    """A camera device or a stream URL (http(s) URLs count: `animate.py` reads no remote files otherwise)."""
    return is_camera(path) or is_stream_url(path)


class LatestFrameQueue:
    """A bounded FIFO that drops its oldest item when full (stale camera frames), never blocking the producer.

    `get` waits for an item; after `close` it returns None once the queue is empty.
    `dropped` counts the items thrown away. lossless: a full queue makes `put` wait for room
    instead (every item kept, in order; the producer slows to the consumer's pace).
    """

    def __init__(self, capacity: int = 1, lossless: bool = False):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.lossless = lossless
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, item) -> bool:
        """Add `item`; True when an older item had to be dropped for it (lossless: waits for room instead)."""
        with self._cond:
            while self.lossless and len(self._items) >= self.capacity and not self.closed:
                self._cond.wait()
            if self.closed:
                return False
            dropped = len(self._items) >= self.capacity
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None):
        """The oldest item kept, waiting up to `timeout` s; None on timeout or when closed and empty."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._items and not self.closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if not self._items:
                return None
            self._cond.notify_all()  # a lossless producer waits for this room
            return self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class OnlineBoxTracker:
    """A crop box for a live stream: detect every `every` frames, smooth centre and side exponentially.

    detect: frame -> list of boxes (x0, y0, x1, y1), largest first (`utils.crop.detector`); frames
    in between reuse the last detection. smoothing in [0, 1): weight of the previous box (0: none).
    Until the first detection the box is the centre square. `scale` grows the detected box
    (utils.crop.FACE_SCALE for faces).
    """

    def __init__(self, detect: Callable[[np.ndarray], list], scale: float, every: int = 5, smoothing: float = 0.6,
                 max_side: int = 480):
        if every < 1 or not 0.0 <= smoothing < 1.0:
            raise ValueError("every must be >= 1 and smoothing in [0, 1)")
        self.detect, self.scale, self.every, self.smoothing, self.max_side = detect, scale, every, smoothing, max_side
        self.count = 0
        self.state: np.ndarray | None = None  # (cx, cy, side)
        self.detections = 0

    def reset(self) -> None:
        self.count, self.state = 0, None

    def update(self, frame: np.ndarray) -> np.ndarray:
        """The box for this frame (H, W, 3): (x0, y0, x1, y1) float pixels."""
        from utils.crop import centre_box, detect_scaled, square_at

        height, width = frame.shape[:2]
        if self.count % self.every == 0:
            boxes = detect_scaled(frame, self.detect, self.max_side)
            if boxes:
                self.detections += 1
                x0, y0, x1, y1 = [float(v) for v in boxes[0]]
                found = np.array([(x0 + x1) / 2, (y0 + y1) / 2, self.scale * max(x1 - x0, y1 - y0)])
                self.state = found if self.state is None else self.smoothing * self.state + (1 - self.smoothing) * found
        self.count += 1
        if self.state is None:
            return centre_box(height, width)
        return square_at(float(self.state[0]), float(self.state[1]), float(self.state[2]), height, width)


def ffmpeg_input_args(path: str) -> list[str]:
    """ffmpeg options before `-i` for a live source: low-delay flags, V4L2 for cameras."""
    args = ["-flags", "low_delay"]
    if is_camera(path):
        args = ["-f", "v4l2", *args]
    elif is_stream_url(path):
        args += ["-probesize", "500000", "-analyzeduration", "500000"]
    return args


class LiveSource:
    """Frames of a camera / stream / file decoded by ffmpeg in a thread, into a `LatestFrameQueue`.

    Items are (capture_time, frame (H, W, 3) uint8), capture_time from time.monotonic() when the frame
    was decoded. `realtime` (files only) paces a file at its frame rate, as a camera would.
    lossless: every frame is kept, in order (writing a file, `every_frame`): the queue holds up to
    `buffer_bytes` of frames (at least `capacity`), and when it is full the reader waits, so a file or
    URL is read at the animation's pace and a camera or stream is buffered that far ahead.
    """

    def __init__(self, path: str, capacity: int = 1, realtime: bool = False, open_timeout: float = 20.0,
                 lossless: bool = False, buffer_bytes: int = 512 << 20):
        import imageio_ffmpeg

        self.path = str(path)
        self.queue = LatestFrameQueue(capacity, lossless=lossless)
        self.error: BaseException | None = None
        self.frames_read = 0
        input_params = ffmpeg_input_args(self.path) + (["-re"] if realtime else [])
        if not (is_live_source(self.path) or os.path.exists(self.path)):
            raise LiveError(f"driving source {self.path} is neither a camera, a stream URL nor a file")
        self._gen = imageio_ffmpeg.read_frames(self.path, pix_fmt="rgb24", input_params=input_params)
        meta: dict = {}
        opened = threading.Event()

        def first() -> None:
            try:
                meta.update(self._gen.__next__())
            except BaseException as err:  # ffmpeg could not open the source
                self.error = err
            opened.set()

        threading.Thread(target=first, daemon=True).start()
        if not opened.wait(open_timeout) or self.error is not None:
            self._close_gen()
            why = str(self.error).strip().splitlines()[-1][:200] if self.error else f"nothing after {open_timeout:.0f} s"
            raise LiveError(f"cannot open the live source {self.path}: {why}")
        self.width, self.height = (int(v) for v in meta["size"])
        self.fps = float(meta.get("fps") or 0.0) or 25.0
        if lossless:
            self.queue.capacity = max(capacity, buffer_bytes // max(1, self.width * self.height * 3))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="live-source", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        size = self.width * self.height * 3
        try:
            for raw in self._gen:
                if self._stop.is_set():
                    break
                if len(raw) != size:
                    continue
                frame = np.frombuffer(raw, dtype=np.uint8).reshape(self.height, self.width, 3)
                self.frames_read += 1
                self.queue.put((time.monotonic(), frame))
        except BaseException as err:  # the stream broke off
            if not self._stop.is_set():
                self.error = err
        finally:
            self.queue.close()

    def _close_gen(self) -> None:
        try:
            self._gen.close()  # imageio-ffmpeg stops its ffmpeg process
        except BaseException:
            pass

    @property
    def ended(self) -> bool:
        return self.queue.closed and not len(self.queue)

    def close(self) -> None:
        self._stop.set()
        self.queue.close()
        self._close_gen()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def has_display() -> bool:
    """A window can be shown: an X11/Wayland display and OpenCV with a GUI backend."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        import cv2
    except ImportError:
        return False
    info = cv2.getBuildInformation()
    return any(f"{gui}:" in info and "YES" in info.split(f"{gui}:")[1].splitlines()[0] for gui in ("GTK", "QT", "Win32 UI"))


class WindowSink:
    """Shows frames in an OpenCV window; `closed` once the user presses q / Esc or closes the window."""

    def __init__(self, title: str = "live animation"):
        import cv2

        self.cv2, self.title, self.closed, self.path = cv2, title, False, None
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def write(self, frame: np.ndarray) -> None:
        self.cv2.imshow(self.title, frame[:, :, ::-1])
        key = self.cv2.waitKey(1) & 0xFF
        if key in (27, ord("q")) or self.cv2.getWindowProperty(self.title, self.cv2.WND_PROP_VISIBLE) < 1:
            self.closed = True

    def close(self) -> None:
        self.cv2.destroyWindow(self.title)


class StreamSink:
    """Frames encoded by ffmpeg as they come: a video file (H.264; written whole, kept on Ctrl-C) or a stream URL.

    URLs: tcp:// and udp:// get MPEG-TS (H.264, zero-latency tuning); other URLs let ffmpeg pick the
    format by scheme (e.g. rtmp:// -> flv).
    """

    def __init__(self, target: str, fps: float, size: tuple[int, int]):
        from utils.media import ffmpeg_exe

        self.path, self.closed, self.frames = str(target), False, 0
        height, width = size
        fmt: list[str] = []
        if is_stream_url(self.path):
            fmt = ["-f", "mpegts"] if self.path.startswith(("tcp://", "udp://")) else (["-f", "flv"] if self.path.startswith("rtmp://") else [])
        elif os.path.dirname(os.path.abspath(self.path)):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        codec = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]
        if self.path.lower().endswith(".gif"):
            codec = []
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-framerate", f"{fps:g}", "-i", "-", *codec, *fmt, self.path]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
            self.frames += 1
        except (BrokenPipeError, OSError):
            err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
            self.closed = True
            raise LiveError(f"the live output {self.path} stopped: {err[-1] if err else 'ffmpeg exited'}") from None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_live_sink(target: str | None, fps: float, size: tuple[int, int], window: bool | None = None):
    """A window when `window` (None: when there is a display and no target), else a `StreamSink` to `target`."""
    if window is None:
        window = target is None and has_display()
    if window:
        return WindowSink()
    if not target:
        raise LiveError("no display for a live window: give --result_video (a file or a stream URL such as "
                        "tcp://127.0.0.1:9000?listen=1)")
    return StreamSink(target, fps, size)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_live(source: LiveSource, animate: Callable[[np.ndarray], np.ndarray], sink, max_frames: int | None = None,
             max_seconds: float | None = None, on_frame: Callable[[int], None] | None = None) -> dict:
    """Animate the newest source frame, write it, repeat, until the source ends, a limit, the sink closes or Ctrl-C.

    animate: frame (H, W, 3) uint8 at the source's size -> the output frame (h, w, 3) uint8 (crop and model).
    Returns {'frames', 'source_frames', 'dropped', 'seconds', 'frames_per_second', 'latency_ms_mean',
    'latency_ms_p95', 'interrupted'}; latency is from decoding a frame to writing its animation.
    """
    done, latencies, interrupted = 0, [], False
    start = time.monotonic()
    try:
        while not getattr(sink, "closed", False):
            if max_frames is not None and done >= max_frames:
                break
            if max_seconds is not None and time.monotonic() - start >= max_seconds:
                break
            item = source.queue.get(timeout=0.5)
            if item is None:
                if source.ended:
                    break
                continue
            captured, frame = item
            sink.write(animate(frame))
            latencies.append((time.monotonic() - captured) * 1000.0)
            done += 1
            if on_frame is not None:
                on_frame(done)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.monotonic() - start
    if source.error is not None and done == 0:
        raise LiveError(f"the live source {source.path} broke off: {str(source.error).strip()[:200]}")
    return {"frames": done, "source_frames": source.frames_read, "dropped": source.queue.dropped, "seconds": seconds,
            "frames_per_second": done / seconds if seconds > 0 else 0.0,
            "latency_ms_mean": float(np.mean(latencies)) if latencies else float("nan"),
            "latency_ms_p95": _percentile(latencies, 95), "interrupted": interrupted}



def every_frame(source: LiveSource, max_frames: int | None = None, max_seconds: float | None = None,
                counts: dict | None = None) -> Iterator[np.ndarray]:
    """Every frame of a lossless `source`, in order, until it ends (writing a file: nothing is dropped).

    max_frames: at most this many; max_seconds: the frames captured within this many seconds of the
    first one (all of them are yielded, however long animating them takes). counts['read'] is the
    number yielded so far, counts['error'] the one-line reason when the source broke off after some
    frames (the frames before it are kept); a source that breaks off before its first frame raises LiveError.
    """
    counts = {} if counts is None else counts
    counts.update(read=0, error=None)
    first = None
    while max_frames is None or counts["read"] < max_frames:
        item = source.queue.get(timeout=0.5)
        if item is None:
            if source.ended:
                break
            continue
        captured, frame = item
        first = captured if first is None else first
        if max_seconds is not None and captured - first > max_seconds:
            break
        counts["read"] += 1
        yield frame
    if source.error is not None and not source._stop.is_set():
        why = str(source.error).strip().splitlines()[-1][:200] if str(source.error).strip() else type(source.error).__name__
        if counts["read"] == 0:
            raise LiveError(f"the driving source {source.path} broke off before its first frame: {why}")
        counts["error"] = why
