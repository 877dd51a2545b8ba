"""Writing results: H.264 mp4 (with the driving video's audio), gif, or a folder of PNG frames.

Frames are streamed to the encoder (an ffmpeg process fed raw RGB on stdin), so memory
does not grow with the video's length. Every output is written under a temporary name
next to its destination and renamed only when complete: a failed or interrupted run
leaves no broken file behind. Reading lives in `utils.video`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from typing import Sequence

import numpy as np

from utils.video import MediaError

# extension -> (video codec args, audio codec args or None when the format has no audio)
_VIDEO_FORMATS: dict[str, tuple[list[str], list[str] | None]] = {
    ".mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-preset", "fast"], ["-c:a", "aac", "-b:a", "160k"]),
    ".m4v": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-preset", "fast"], ["-c:a", "aac", "-b:a", "160k"]),
    ".mov": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-preset", "fast"], ["-c:a", "aac", "-b:a", "160k"]),
    ".mkv": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-preset", "fast"], ["-c:a", "aac", "-b:a", "160k"]),
    ".avi": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-preset", "fast"], ["-c:a", "aac", "-b:a", "160k"]),
    ".webm": (["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "32", "-b:v", "0", "-row-mt", "1"], ["-c:a", "libopus", "-b:a", "128k"]),
    ".gif": (["-vf", "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1", "-loop", "0"], None),
}
OUTPUT_EXTENSIONS = tuple(_VIDEO_FORMATS)


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped with imageio-ffmpeg (has libx264), or the one on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # no bundled binary for this platform
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise MediaError("ffmpeg not found: install imageio-ffmpeg (pip install imageio-ffmpeg)") from None
        return exe


def output_kind(path: str) -> str:
    """'video' (mp4/mov/mkv/avi/webm), 'gif', or 'frames' (a folder of PNGs: no extension or a trailing slash)."""
    path = os.fspath(path)
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        return "frames"
    ext = os.path.splitext(path)[1].lower()
    if ext == "":
        return "frames"
    if ext == ".gif":
        return "gif"
    if ext in _VIDEO_FORMATS:
        return "video"
    raise MediaError(f"unsupported output {path!r}: use one of {', '.join(OUTPUT_EXTENSIONS)}, "
                     f"or a folder name (no extension) for PNG frames")


def has_audio(path: str) -> bool:
    """True when `path` is a media file with at least one audio stream."""
    if not os.path.isfile(path) or path.lower().endswith(".gif"):
        return False
    try:
        import av

        with av.open(path) as container:
            return len(container.streams.audio) > 0
    except Exception:
        return False


def probe(path: str) -> dict:
    """Frame count (decoded), frame rate, size and audio presence/duration of a media file (for checks and tests)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        frames = sum(1 for _ in container.decode(stream))
        info = {"num_frames": frames, "fps": float(rate) if rate else None,
                "width": stream.codec_context.width, "height": stream.codec_context.height,
                "video_codec": stream.codec_context.name, "has_audio": False, "audio_seconds": 0.0}
    with av.open(path) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            info["has_audio"] = True
            info["audio_codec"] = audio.codec_context.name
            seconds = 0.0
            for packet in container.demux(audio):
                if packet.pts is not None and packet.duration:
                    seconds = max(seconds, float((packet.pts + packet.duration) * audio.time_base))
            info["audio_seconds"] = seconds
    return info


# ----------------------------------------------------------------------------- upright photos and videos

# EXIF orientation -> the PIL transpose that makes the photo upright (as ImageOps.exif_transpose)
_EXIF_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                   6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def exif_orientation(path: str) -> int:
    """The EXIF orientation tag of a photo (1 = upright, also when absent or unreadable)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


def photo_size(path: str) -> tuple[int, int]:
    """(height, width) of a photo from its header, without decoding it; (0, 0) when the header cannot be read
    (`read_photo` then says why)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return int(image.height), int(image.width)
    except Exception:  # not an image PIL knows, or not a file: read_photo gives the one-line error
        return 0, 0


def read_photo(path: str) -> np.ndarray:
    """`utils.video.read_image` (H, W, 3) uint8, turned upright by the EXIF orientation (phone photos)."""
    from PIL import Image

    from utils.video import read_image

    image = read_image(path)
    method = _EXIF_TRANSPOSE.get(exif_orientation(path))
    if method is None:
        return image
    return np.asarray(Image.fromarray(image).transpose(getattr(Image.Transpose, method)))


def video_rotation(path: str) -> int:
    """Degrees (0/90/180/270, counter-clockwise) a video's frames must be turned for display.

    Phone videos are stored sideways with a display-rotation matrix; players (and
    ffmpeg) apply it, decoders do not.
    """
    if not os.path.isfile(path) or path.lower().endswith(".gif"):
        return 0
    try:
        import av

        with av.open(path) as container:
            for frame in container.decode(video=0):
                return int(round(float(frame.rotation or 0) / 90.0)) % 4 * 90
    except Exception:
        return 0
    return 0


class UprightVideo:
    """A `utils.video.VideoReader` whose frames come out turned by the video's display rotation."""

    def __init__(self, reader, rotation: int):
        self.reader = reader
        self.k = (int(rotation) // 90) % 4  # np.rot90 turns counter-clockwise, as the display matrix
        self.path, self.fps, self.num_frames = reader.path, reader.fps, reader.num_frames
        self.height, self.width = (reader.width, reader.height) if self.k % 2 else (reader.height, reader.width)

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self):
        for frame in self.reader:
            yield np.ascontiguousarray(np.rot90(frame, self.k))

    def get_frames(self, indices) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(self.reader.get_frames(indices), self.k, axes=(1, 2)))  # T x H x W x 3


def open_upright_video(path: str):
    """`utils.video.open_video`, with phone videos' display rotation applied to every frame."""
    from utils.video import open_video

    reader = open_video(path)
    if getattr(reader, "applies_rotation", False):  # the reader already turns frames upright
        return reader
    rotation = video_rotation(os.fspath(path))
    return UprightVideo(reader, rotation) if rotation else reader


def _fps_arg(fps: float) -> str:
    """A frame rate as an exact rational for ffmpeg (29.97002997 -> 30000/1001)."""
    frac = Fraction(float(fps)).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


def _partial_path(path: str, is_dir: bool = False) -> str:
    """`.<stem>.partial-<pid><ext>` beside the output; stale ones in its folder (their process gone: any
    output's, not only this one's) are removed first."""
    folder, name = os.path.split(os.path.abspath(path.rstrip("/" + os.sep)))
    stem, ext = os.path.splitext(name)
    remove_stale_partials(folder)
    return os.path.join(folder, f".{stem}.partial-{os.getpid()}" + ("" if is_dir else ext))


def remove_stale_partials(folder: str, stem: str | None = None) -> list[str]:
    """Remove the partial outputs `.<stem>.partial-<pid>[.ext]` (every stem when None) of processes that no
    longer run, e.g. an animate.py killed with kill -9 while writing another output (say so once)."""
    import re
    import sys

    from utils.io import pid_alive

    pattern = re.compile(rf"\.{re.escape(stem) if stem is not None else '.+'}\.partial-(\d+)(\.[A-Za-z0-9]+)?")
    removed = []
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for partial in (os.path.join(folder, n) for n in sorted(names)):
        found = pattern.fullmatch(os.path.basename(partial))
        if not found or int(found.group(1)) == os.getpid() or pid_alive(int(found.group(1))):
            continue
        if os.path.isdir(partial):
            shutil.rmtree(partial, ignore_errors=True)
        else:
            try:
                os.remove(partial)
            except FileNotFoundError:  # another run swept it first
                continue
        removed.append(partial)
    if removed:
        print(f"removed {len(removed)} unfinished output(s) of interrupted runs: {', '.join(removed)}", file=sys.stderr)
    return removed


class FrameWriter:
    """Base class: `write(frame)` (H, W, 3) uint8 frames, then `close()` to publish or `abort()` to discard.

    As a context manager it publishes on success and discards on any exception.
    """

    path: str

    def write(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def write_batch(self, frames: Sequence[np.ndarray] | np.ndarray) -> None:
        for frame in frames:
            self.write(frame)

    def finish(self) -> None:
        """Flush everything to the temporary output (not yet visible under `path`)."""

    def publish(self) -> None:
        """Rename the finished temporary output to `path`."""
        raise NotImplementedError

    def close(self) -> str:
        self.finish()
        self.publish()
        return self.path

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class FFmpegWriter(FrameWriter):
    """mp4/mov/mkv/avi (H.264), webm (VP9) or gif, encoded by an ffmpeg process as frames arrive.

    audio_from: a media file whose first audio track is muxed in (cut to the video's length);
    num_frames: the expected frame count, used only to cut the audio.
    """

    def __init__(self, path: str, fps: float, audio_from: str | None = None, num_frames: int | None = None):
        self.path = os.fspath(path)
        self.fps = float(fps)
        self.ext = os.path.splitext(self.path)[1].lower()
        if self.ext not in _VIDEO_FORMATS:
            raise MediaError(f"unsupported output {self.path!r}")
        video_args, audio_args = _VIDEO_FORMATS[self.ext]
        self.audio = bool(audio_from) and audio_args is not None
        self.audio_from = audio_from
        self.num_frames = num_frames
        self.tmp = _partial_path(self.path)
        self.proc: subprocess.Popen | None = None
        self.size: tuple[int, int] | None = None
        self.frames_written = 0
        self._video_args, self._audio_args = video_args, audio_args

    def _start(self, height: int, width: int) -> None:
        cmd = [ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error", "-nostdin",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", _fps_arg(self.fps), "-i", "-"]
        if self.audio:
            if self.num_frames:
                cmd += ["-t", f"{self.num_frames / self.fps:.6f}"]
            cmd += ["-i", self.audio_from, "-map", "0:v:0", "-map", "1:a:0"]
        cmd += list(self._video_args)
        if self.ext != ".gif" and (height % 2 or width % 2):  # yuv420p needs even sizes
            cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        if self.audio:
            cmd += list(self._audio_args)
        if self.ext in (".mp4", ".mov", ".m4v"):
            cmd += ["-movflags", "+faststart"]
        cmd += [self.tmp]
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape}")
        if self.proc is None:
            self._start(*frame.shape[:2])
        elif frame.shape[:2] != self.size:
            raise ValueError(f"frame size changed from {self.size} to {frame.shape[:2]}")
        try:
            self.proc.stdin.write(frame.tobytes())
        except (BrokenPipeError, OSError):
            raise MediaError(f"ffmpeg stopped while writing {self.path}: {self._error_text()}") from None
        self.frames_written += 1

    def _error_text(self) -> str:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return text[-1] if text else "no message"

    def finish(self) -> None:
        if self.proc is None:
            raise MediaError(f"no frames to write to {self.path}")
        self.proc.stdin.close()
        code = self.proc.wait()
        if code != 0:
            message = self._error_text()
            self.abort()
            raise MediaError(f"ffmpeg failed writing {self.path}: {message}")
        self._stderr.close()

    def publish(self) -> None:
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class PngFolderWriter(FrameWriter):
    """A folder of numbered PNG frames (000000.png, ...), built under a temporary name and renamed."""

    def __init__(self, path: str):
        self.path = os.fspath(path).rstrip("/" + os.sep) or os.fspath(path)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise MediaError(f"output folder {self.path} exists and is a file")
        self.tmp = _partial_path(self.path, is_dir=True)
        os.makedirs(self.tmp, exist_ok=True)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(
            os.path.join(self.tmp, f"{self.frames_written:06d}.png"), compress_level=3)
        self.frames_written += 1

    def publish(self) -> None:
        old = None
        if os.path.isdir(self.path):
            old = _partial_path(self.path, is_dir=True) + ".old"
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_writer(path: str, fps: float, audio_from: str | None = None, num_frames: int | None = None) -> FrameWriter:
    """A writer for `path` chosen by its extension (see `output_kind`)."""
    kind = output_kind(path)
    if kind == "frames":
        return PngFolderWriter(path)
    return FFmpegWriter(path, fps=fps, audio_from=audio_from, num_frames=num_frames)


class WriterGroup:
    """Several writers published together: all of them, or (on any failure) none."""

    def __init__(self, writers: Sequence[FrameWriter]):
        self.writers = list(writers)

    def finish_and_publish(self) -> None:
        try:
            for writer in self.writers:
                writer.finish()
        except BaseException:
            self.abort()
            raise
        for writer in self.writers:
            writer.publish()

    def abort(self) -> None:
        for writer in self.writers:
            try:
                writer.abort()
            except OSError:
                pass
