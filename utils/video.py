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
    except MemoryError:  # a photo too large for this process, not a corrupt one (animate.py says so in one line)
        raise
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

    def state(self) -> dict:
        """What `open_video(path, state=...)` needs to reopen this video without scanning it again (JSON-able)."""
        return {"num_frames": self.num_frames, "height": self.height, "width": self.width, "fps": self.fps}

    def _set_state(self, state: dict) -> None:
        self.num_frames = int(state["num_frames"])
        self.height, self.width = int(state["height"]), int(state["width"])
        self.fps = float(state["fps"])

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_frames):
            yield self.get_frames([i])[0]


class FolderReader(VideoReader):
    """A folder of frame images, in sorted name order.

    Opened from a saved `state`, it lists the folder again at each read (microseconds)
    instead of holding every file name: a dataset may have thousands of such folders.
    """

    def __init__(self, path: str, state: dict | None = None):
        super().__init__(path)
        self._files: list[str] | None = None
        if state is not None:
            self._set_state(state)
            return
        self._files = self._list()
        if not self._files:
            raise MediaError(f"no frames (image files) in folder: {path}")
        self.num_frames = len(self._files)
        first = read_image(os.path.join(path, self._files[0]))
        self.height, self.width = first.shape[:2]

    def _list(self) -> list[str]:
        return sorted(f for f in os.listdir(self.path) if f.lower().endswith(IMAGE_EXTENSIONS))

    @property
    def files(self) -> list[str]:
        files = self._files if self._files is not None else self._list()
        if len(files) != self.num_frames:
            raise MediaError(f"folder changed since it was indexed ({len(files)} frames, "
                             f"was {self.num_frames}): {self.path}")
        return files

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        files = self.files
        return np.stack([read_image(os.path.join(self.path, files[i])) for i in indices])


class StripReader(VideoReader):
    """One image holding frames side by side horizontally (frame width = image height)."""

    def __init__(self, path: str, state: dict | None = None):
        super().__init__(path)
        self._image: np.ndarray | None = None
        if state is not None:
            self._set_state(state)
            return
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


def pack_ints(values: np.ndarray) -> list[int] | dict:
    """A sorted int sequence for JSON: {"start", "step", "count"} when evenly spaced (most videos), else a list."""
    values = np.asarray(values, dtype=np.int64)
    steps = np.diff(values)
    if len(values) >= 2 and np.all(steps == steps[0]):
        return {"start": int(values[0]), "step": int(steps[0]), "count": len(values)}
    return values.tolist()


def unpack_ints(packed: list[int] | dict) -> np.ndarray:
    """The inverse of `pack_ints`."""
    if isinstance(packed, dict):
        return packed["start"] + packed["step"] * np.arange(packed["count"], dtype=np.int64)
    return np.asarray(packed, dtype=np.int64)


class FileVideoReader(VideoReader):
    """A video file decoded with PyAV, with a frame index for fast random access.

    The index (every frame's presentation time and which frames are keyframes) comes
    from one demux pass (no decoding) or from `state`, a saved index. `get_frames`
    seeks to the keyframe before the first frame asked for and decodes forward,
    skipping the frames no other frame refers to (non-reference B-frames) unless
    they are asked for; it seeks again only when a later keyframe is closer to the
    next frame asked for. The frames are exactly those of a decode from the start.
    """

    def __init__(self, path: str, state: dict | None = None):
        super().__init__(path)
        if state is None:
            state = self._scan(path)
        self._set_state(state)
        self._pts = unpack_ints(state["pts"])  # presentation times, sorted
        self._keyframes = np.asarray(state["keyframes"], dtype=np.int64)  # frame indices of keyframes, sorted
        if self.num_frames == 0 or len(self._pts) != self.num_frames:
            raise MediaError(f"video has no frames: {path}")

    @staticmethod
    def _scan(path: str) -> dict:
        """One demux pass: size, frame rate, every frame's pts and the keyframes (frame indices)."""
        import av

        try:
            with av.open(path) as container:
                streams = container.streams.video
                if not streams:
                    raise MediaError(f"no video stream in {path}")
                stream = streams[0]
                rate = stream.average_rate or stream.guessed_rate
                packets = [(int(p.pts), bool(p.is_keyframe)) for p in container.demux(stream)
                           if p.size > 0 and p.pts is not None]
                width, height = stream.codec_context.width, stream.codec_context.height
        except MediaError:
            raise
        except Exception as err:
            raise MediaError(f"not a readable video: {path} ({type(err).__name__})") from None
        packets.sort()
        keyframes = [i for i, (_, key) in enumerate(packets) if key] or [0]
        return {"num_frames": len(packets), "height": height, "width": width, "fps": float(rate) if rate else 25.0,
                "pts": [p for p, _ in packets], "keyframes": keyframes}

    def state(self) -> dict:
        return {**super().state(), "pts": pack_ints(self._pts), "keyframes": self._keyframes.tolist()}

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

    def _frame_at(self, pts: int | None) -> int:
        """The frame index of a presentation time (-1 when it is not a frame of the index)."""
        if pts is None:
            return -1
        i = int(np.searchsorted(self._pts, pts))
        return i if i < len(self._pts) and self._pts[i] == pts else -1

    def keyframe_before(self, index: int) -> int:
        """The index of the last keyframe at or before frame `index`."""
        k = int(np.searchsorted(self._keyframes, index, side="right")) - 1
        return int(self._keyframes[max(k, 0)])

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decode only what the frames asked for need (see the class docstring); (n, H, W, 3) uint8."""
        import av

        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < self.num_frames:
                raise IndexError(f"frame {i} out of range for {self.path} ({self.num_frames} frames)")
        wanted = sorted(set(indices))
        found: dict[int, np.ndarray] = {}
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                packets, sent = None, -1  # the demuxer since the last seek; latest frame index sent to the decoder
                for target in wanted:
                    if target in found:
                        continue
                    if packets is None or self.keyframe_before(target) > sent:
                        container.seek(int(self._pts[target]), stream=stream, backward=True, any_frame=False)
                        packets, sent = container.demux(stream), -1
                    sent = self._decode_to(packets, stream, target, set(wanted), found, sent)
        except av.error.FFmpegError as err:
            raise MediaError(f"video decoding failed: {self.path} ({err})") from None
        if len(found) != len(wanted):
            raise MediaError(f"could not decode frames {sorted(set(wanted) - set(found))} of {self.path}")
        return np.stack([found[i] for i in indices])

    def _decode_to(self, packets, stream, target: int, wanted: set[int], found: dict, sent: int) -> int:
        """Feed packets until frame `target` is out, keeping every wanted frame; returns the latest frame sent."""
        context = stream.codec_context
        wanted_pts = {int(self._pts[i]) for i in wanted}
        for packet in packets:
            needed = packet.pts is None or int(packet.pts) in wanted_pts
            context.skip_frame = "DEFAULT" if needed else "NONREF"  # nothing refers to a non-reference frame
            if packet.pts is not None:
                sent = max(sent, self._frame_at(packet.pts))
            for frame in packet.decode():
                index = self._frame_at(frame.pts)
                if index in wanted and index not in found:
                    found[index] = frame.to_ndarray(format="rgb24")
            if target in found:
                break
        context.skip_frame = "DEFAULT"
        return sent


class GifReader(VideoReader):
    """An animated gif (PyAV handles gifs too, but imageio keeps palette/alpha handling right)."""

    def __init__(self, path: str, state: dict | None = None):
        super().__init__(path)
        import imageio.v3 as iio

        if state is not None:
            self._set_state(state)
            return
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


def open_video(path: str, state: dict | None = None) -> VideoReader:
    """Open any supported video (file, frame folder or image strip); one-line MediaError otherwise.

    `state` is a reader's saved `state()` for this very file (see `datasets.video_index`):
    it skips the scan (demux pass, folder listing, strip decode) that opening costs.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(f"file not found: {path}")
    if os.path.isdir(path):
        return FolderReader(path, state=state)
    lower = path.lower()
    if lower.endswith(".gif"):
        return GifReader(path, state=state)
    if lower.endswith(IMAGE_EXTENSIONS):
        return StripReader(path, state=state)
    if os.path.getsize(path) == 0:
        raise MediaError(f"empty file: {path}")
    return FileVideoReader(path, state=state)
