"""Opening a dataset split's videos fast: a saved index, and strips expanded into frames once.

Opening a video costs a scan: a demux pass over an mp4 (every frame's time and the
keyframes), a folder listing and one decoded frame, or a whole decoded strip. For
thousands of clips, on every rank, that is minutes at each start. The index keeps
each reader's `state()` in `<split folder>/.video_index.json`, keyed by file name
and checked against the file's size and modification time, so a changed or new
video is scanned again and a removed one forgotten. A read-only dataset folder
simply goes without the index (scanned at each start, as before).

A png/jpg strip must be decoded whole to read any of its frames (hundreds of ms for
200 frames of 256 px). With a `frame_cache` folder, each strip is written once, on
its first use, as a folder of lossless PNG frames (about the strip's own size on
disk) and read from there: two frames cost two small decodes.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

from utils.video import IMAGE_EXTENSIONS, MediaError, VideoReader, open_video

log = logging.getLogger(__name__)

INDEX_NAME = ".video_index.json"
INDEX_VERSION = 1


def signature(path: str) -> list[int]:
    """What must not change for a saved state to stay valid: [size (0 for folders), mtime in ns]."""
    st = os.stat(path)
    return [0 if os.path.isdir(path) else int(st.st_size), int(st.st_mtime_ns)]


def _load(index_file: str) -> dict:
    try:
        with open(index_file, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("version") != INDEX_VERSION:
        return {}
    return saved.get("videos", {})


def _save(index_file: str, entries: dict) -> None:
    tmp = f"{index_file}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"version": INDEX_VERSION, "videos": entries}, handle, separators=(",", ":"))
        os.replace(tmp, index_file)  # atomic: ranks writing at once leave one whole file
    except OSError as err:
        log.info("not saving the video index %s: %s", index_file, err)
        if os.path.exists(tmp):
            os.remove(tmp)


def open_videos(paths: list[str], index_file: str | None) -> tuple[dict[str, VideoReader], dict[str, str]]:
    """Readers for `paths` (from the saved index where still valid) and {path: error} for unreadable ones.

    `index_file` None: no index, every video is scanned.
    """
    saved = _load(index_file) if index_file else {}
    entries: dict = {}
    readers: dict[str, VideoReader] = {}
    errors: dict[str, str] = {}
    changed = False
    for path in paths:
        name = os.path.basename(path)
        try:
            sig = signature(path)
        except OSError as err:
            errors[path] = str(err)
            continue
        entry = saved.get(name)
        reader = None
        if entry is not None and entry.get("signature") == sig:
            try:
                reader = open_video(path, state=entry["state"])
            except (MediaError, KeyError, TypeError, ValueError):
                reader = None  # a stale or foreign entry: scan again
        if reader is None:
            try:
                reader = open_video(path)
            except MediaError as err:
                errors[path] = str(err)
                continue
            changed = True
        readers[path] = reader
        entries[name] = {"signature": sig, "state": reader.state()}
    if index_file and (changed or set(entries) != set(saved)):
        _save(index_file, entries)
    return readers, errors


def is_strip(path: str) -> bool:
    """A png/jpg strip of frames (not a gif, not a folder)."""
    return os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)


def expanded_strip(path: str, reader: VideoReader, cache_dir: str) -> VideoReader:
    """A folder reader over `cache_dir/<strip name>.<size>.<mtime>/`, written from the strip on first use.

    The folder is built under a temporary name and renamed when complete, so two
    loader workers expanding the same strip at once both end with a whole folder.
    """
    from PIL import Image

    size, mtime = signature(path)
    target = os.path.join(cache_dir, f"{os.path.basename(path)}.{size}.{mtime}")
    if not os.path.isdir(target):
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{target}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for i, frame in enumerate(reader):
            Image.fromarray(frame).save(os.path.join(tmp, f"{i:06d}.png"), compress_level=1)
        try:
            os.replace(tmp, target)
        except OSError:  # another worker published it first
            shutil.rmtree(tmp, ignore_errors=True)
    folder = open_video(target)
    if folder.num_frames != reader.num_frames:
        raise MediaError(f"frame cache {target} has {folder.num_frames} frames, the strip {reader.num_frames}")
    return folder
