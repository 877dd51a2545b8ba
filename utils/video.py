"""Reading videos and images of any common kind, streamed: never the whole video in memory.

A "video" is a file (mp4/mov/avi/webm/mkv/gif), a folder of frame images, or a
horizontal strip of square frames in one png/jpg (the published datasets' formats).
Every failure a user can cause is a one-line `MediaError`.
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np

from utils.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class MediaError(UserError):
    """A missing, unreadable or empty image/video (one-line, user-facing)."""


def is_video_path(path: str) -> bool:
    """True for a video file, a folder of frames, or an image strip (any image file may be a strip)."""
    if os.path.isdir(path):
        return True
    return path.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)


def square_frames(frames: np.ndarray, size: int):
    """(n, H, W, 3) uint8 -> centre-cropped square, resized with antialiasing: (n, 3, size, size) floats in [0, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    h, w = x.shape[2:]
    s = min(h, w)
    x = x[:, :, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """Any decoded image -> (H, W, 3) uint8: grayscale to RGB, alpha composited on white."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.floating):
            frame = np.clip(frame * (255.0 if frame.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            frame = (frame.astype(np.float64) / max(1, np.iinfo(frame.dtype).max) * 255).round().astype(np.uint8)
    if frame.ndim == 2:
        frame = np.stack([frame] * 3, axis=-1)
    if frame.ndim != 3:
        raise MediaError(f"unsupported image shape {frame.shape}")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] == 2:  # gray + alpha
        frame = np.concatenate([np.repeat(frame[..., :1], 3, axis=2), frame[..., 1:]], axis=2)
    if frame.shape[2] == 4:
        alpha = frame[..., 3:].astype(np.float32) / 255.0
        frame = (frame[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(frame[..., :3])


def read_image(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (first frame for animated images)."""
    import imageio.v3 as iio

    if not os.path.exists(path):
        raise MediaError(f"file not found: {path}")
    if os.path.isdir(path):
        raise MediaError(f"expected an image file, got a folder: {path}")
    try:
        frame = iio.imread(path, index=0)
    except Exception:  # imageio raises many types for bad files
        raise MediaError(f"not a readable image (unknown or corrupt image format): {path}") from None
    return to_rgb(frame)


class VideoReader:
    """Random access and streaming over the frames of one video; frames are (H, W, 3) uint8."""

    def __init__(self, path: str):
        self.path = path
        self.fps: float = 25.0
        self.num_frames = 0
        self.height = self.width = 0

    def __len__(self) -> int:
        return self.num_frames

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_frames):
            yield self.get_frames([i])[0]


class FolderReader(VideoReader):
    """A folder of frame images, in sorted name order."""

    def __init__(self, path: str):
        super().__init__(path)
        self.files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise MediaError(f"no frames (image files) in folder: {path}")
        self.num_frames = len(self.files)
        first = read_image(os.path.join(path, self.files[0]))
        self.height, self.width = first.shape[:2]

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([read_image(os.path.join(self.path, self.files[i])) for i in indices])


class StripReader(VideoReader):
    """One image holding frames side by side horizontally (frame width = image height)."""

    def __init__(self, path: str):
        super().__init__(path)
        self._image: np.ndarray | None = None
        image = self._load()
        h, w = image.shape[:2]
        if w % h != 0:
            raise MediaError(f"image strip width {w} is not a multiple of its height {h}: {path}")
        self.num_frames = w // h
        self.height = self.width = h
        self._image = None  # decode again on demand; strips are small

    def _load(self) -> np.ndarray:
        return self._image if self._image is not None else read_image(self.path)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        image = self._load()
        h = self.height
        return np.stack([image[:, i * h:(i + 1) * h] for i in indices])

    def __iter__(self) -> Iterator[np.ndarray]:
        image = self._load()
        for i in range(self.num_frames):
            yield image[:, i * self.height:(i + 1) * self.height].copy()


class FileVideoReader(VideoReader):
    """A video file decoded with PyAV: exact frame count by one demux pass, seeking for random access."""

    def __init__(self, path: str):
        super().__init__(path)
        import av

        try:
            with av.open(path) as container:
                streams = container.streams.video
                if not streams:
                    raise MediaError(f"no video stream in {path}")
                stream = streams[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 25.0
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                self._time_base = stream.time_base
                self._pts = [p.pts for p in container.demux(stream) if p.size > 0 and p.pts is not None]
        except MediaError:
            raise
        except Exception as err:
            raise MediaError(f"not a readable video: {path} ({type(err).__name__})") from None
        self._pts.sort()
        self._pts_index = {p: i for i, p in enumerate(self._pts)}
        self.num_frames = len(self._pts)
        if self.num_frames == 0:
            raise MediaError(f"video has no frames: {path}")

    def _decode(self) -> Iterator[np.ndarray]:
        import av

        try:
            with av.open(self.path) as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise MediaError(f"video decoding failed: {self.path} ({err})") from None

    def __iter__(self) -> Iterator[np.ndarray]:
        count = 0
        for frame in self._decode():
            if count >= self.num_frames:
                break
            count += 1
            yield frame

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decode only the frames asked for: seek to the keyframe before each, decode forward to it."""
        import av

        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < self.num_frames:
                raise IndexError(f"frame {i} out of range for {self.path} ({self.num_frames} frames)")
        found: dict[int, np.ndarray] = {}
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                for target in sorted(set(indices)):
                    if target in found:
                        continue
                    pts = self._pts[target]
                    container.seek(pts, stream=stream, backward=True, any_frame=False)
                    for frame in container.decode(stream):
                        if frame.pts is None:
                            continue
                        if frame.pts in self._pts_index and self._pts_index[frame.pts] in indices:
                            found.setdefault(self._pts_index[frame.pts], frame.to_ndarray(format="rgb24"))
                        if frame.pts >= pts:
                            break
        except av.error.FFmpegError as err:
            raise MediaError(f"video decoding failed: {self.path} ({err})") from None
        if len(found) != len(set(indices)):
            raise MediaError(f"could not decode frames {sorted(set(indices) - set(found))} of {self.path}")
        return np.stack([found[i] for i in indices])


class GifReader(VideoReader):
    """An animated gif (PyAV handles gifs too, but imageio keeps palette/alpha handling right)."""

    def __init__(self, path: str):
        super().__init__(path)
        import imageio.v3 as iio

        try:
            props = iio.improps(path, index=None)
            meta = iio.immeta(path, index=0)
        except Exception as err:
            raise MediaError(f"not a readable gif: {path} ({type(err).__name__})") from None
        self.num_frames = int(props.shape[0]) if len(props.shape) == 4 else 1
        self.height, self.width = int(props.shape[-3]), int(props.shape[-2])
        duration = meta.get("duration") or 40  # ms per frame
        self.fps = 1000.0 / float(duration) if duration else 25.0

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        import imageio.v3 as iio

        return np.stack([to_rgb(iio.imread(self.path, index=int(i))) for i in indices])

    def __iter__(self) -> Iterator[np.ndarray]:
        import imageio.v3 as iio

        for frame in iio.imiter(self.path):
            yield to_rgb(frame)


def open_video(path: str) -> VideoReader:
    """Open any supported video (file, frame folder or image strip); one-line MediaError otherwise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(f"file not found: {path}")
    if os.path.isdir(path):
        return FolderReader(path)
    lower = path.lower()
    if lower.endswith(".gif"):
        return GifReader(path)
    if lower.endswith(IMAGE_EXTENSIONS):
        return StripReader(path)
    if os.path.getsize(path) == 0:
        raise MediaError(f"empty file: {path}")
    return FileVideoReader(path)
