"""The papers' VoxCeleb and TaiChi-HD clips, cut from local source videos by their published metadata.

The metadata is the cropping table of the video-preprocessing recipe that FOMM and
TPSMM used (github.com/AliaksandrSiarohin/video-preprocessing: `vox-metadata.csv`,
`taichi-metadata.csv`). One row per clip:

    video_id,start,end,bbox,fps,width,height,partition,person_id
    WMh3ye5tBsE,3657,3994,624-48-1018-553,25,1280,720,train,id10005

- `start`, `end`: the clip's frames, numbered at `fps`, `end` excluded. A local video
  at another frame rate F keeps its frames i with start * F <= i * fps < end * F.
- `bbox`: left-top-right-bottom in pixels of a `width` x `height` frame, scaled to
  the local video's size (each coordinate truncated to an integer, as the recipe does),
  clipped to the frame, then resized to the output size.
- `partition`: train or test (TaiChi's table may lack it: `default_partition` then);
  `person_id`, where present, starts the clip's name.

A clip is written as `<out>/<partition>/[<person_id>#]<video_id>#<start>#<end>.mp4`
(numbers zero-padded to 6 digits; a PNG frame folder with `fmt="png"`), the names
the recipe gives, so id sampling groups VoxCeleb clips by person. Nothing is
downloaded: the source videos `<video_id>.mp4` (or .mkv/.webm...) must already be in
`source_dir`.

Metadata files come from other people, so every field is data, never a path: `video_id` (each
'#' part) and `person_id` must be ids (`NAME_FIELD`: letters, digits, '_', '-', '.', not
starting with '.'), start/end/fps/size numbers and the partition train or test, and every file name
built from them is checked to stay inside `source_dir` / `output`. A row that fails (also a
row with too few or too many fields, or a file that is not UTF-8) is a one-line error naming
the file and line, before anything is written.
"""
from __future__ import annotations

import csv
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from utils.errors import UserError
from utils.io import atomic_write, check_writable
from utils.resources import check_fits
from utils.video import VIDEO_EXTENSIONS, MediaError

REQUIRED_COLUMNS = ("video_id", "start", "end", "bbox", "fps", "width", "height")
PARTITIONS = ("train", "test")
# A field that becomes part of a file name (video_id, each of its '#' parts, person_id): letters, digits,
# '_', '-' and '.', not starting with '.' (so never '..', a hidden file or a folder separator). YouTube
# ids (with a leading '-'), VoxCeleb person ids (id10005) and TaiChi ids all match.
NAME_FIELD = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


class MetadataError(UserError):
    """A metadata file or source folder that cannot be used (one-line message)."""


@dataclass
class MetaClip:
    """One row of the published metadata."""

    video_id: str
    start: int
    end: int  # excluded
    bbox: tuple[int, int, int, int]  # left, top, right, bottom in pixels of a (width x height) frame
    fps: float
    width: int
    height: int
    partition: str
    person_id: str | None

    @property
    def name(self) -> str:
        """The recipe's clip name (without extension): [person_id#]video_id#start#end."""
        head = f"{self.person_id}#" if self.person_id else ""
        return f"{head}{'#'.join(self.video_id.split('#')[::-1])}#{self.start:06d}#{self.end:06d}"

    @property
    def source_id(self) -> str:
        """The source video's id (the part of `video_id` before any '#')."""
        return self.video_id.split("#")[0]

    def box_in(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The crop box in a local frame of (height, width), as the recipe scales it, clipped to the frame."""
        left, top, right, bottom = self.bbox
        sx, sy = self.width / width, self.height / height
        left, right = int(left / sx), int(right / sx)
        top, bottom = int(top / sy), int(bottom / sy)
        left, right = min(max(left, 0), width), min(max(right, 0), width)
        top, bottom = min(max(top, 0), height), min(max(bottom, 0), height)
        return left, top, right, bottom

    def contains(self, index: int, local_fps: float) -> bool:
        """Whether local frame `index` (of a video at `local_fps`) belongs to the clip."""
        return self.start * local_fps <= index * self.fps < self.end * local_fps

    def local_frames(self, local_fps: float) -> list[int]:
        """The local frame indices of the clip in a video at `local_fps`."""
        lo = max(0, int(self.start * local_fps / self.fps) - 1)
        hi = int(np.ceil(self.end * local_fps / self.fps)) + 1
        return [i for i in range(lo, hi) if self.contains(i, local_fps)]


def _check_name_field(column: str, value: str, line: int, source: str) -> None:
    """Metadata comes from other people: a field that goes into a file name must be an id, not a path."""
    parts = value.split("#") if column == "video_id" else [value]
    if not all(NAME_FIELD.fullmatch(part) for part in parts):
        raise MetadataError(f"{source}:{line}: {column} {value[:80]!r} is not an id (letters, digits, '_', '-' "
                            f"and '.', not starting with '.'; no '/' or '..'), refused")


def _row_clip(row: dict, line: int, source: str, default_partition: str | None) -> MetaClip:
    if None in row or None in row.values():  # csv.DictReader: extra fields go under None, missing ones are None
        columns = [k for k in row if k is not None]
        fields = sum(row[k] is not None for k in columns) + len(row.get(None) or [])
        raise MetadataError(f"{source}:{line}: the row has {fields} field(s), the header {len(columns)}")
    try:
        bbox = tuple(int(v) for v in row["bbox"].split("-"))
        if len(bbox) != 4:
            raise ValueError
        clip = MetaClip(video_id=row["video_id"].strip(), start=int(row["start"]), end=int(row["end"]),
                        bbox=bbox, fps=float(row["fps"]), width=int(row["width"]), height=int(row["height"]),
                        partition=(row.get("partition") or default_partition or "").strip(),
                        person_id=(row.get("person_id") or "").strip() or None)
    except (TypeError, ValueError):
        raise MetadataError(f"{source}:{line}: unreadable row {row}") from None
    _check_name_field("video_id", clip.video_id, line, source)
    if clip.person_id is not None:
        _check_name_field("person_id", clip.person_id, line, source)
    if clip.partition not in PARTITIONS:
        raise MetadataError(f"{source}:{line}: partition must be train or test, got {clip.partition!r}"
                            + ("" if row.get("partition") else " (no partition column: pass --default_partition)"))
    if clip.end <= clip.start or clip.fps <= 0 or clip.bbox[2] <= clip.bbox[0] or clip.bbox[3] <= clip.bbox[1]:
        raise MetadataError(f"{source}:{line}: empty frame range or box in row {row}")
    return clip


def read_metadata(path: str, default_partition: str | None = None) -> list[MetaClip]:
    """Every clip of a published metadata csv (see the module docstring for the columns)."""
    if not os.path.isfile(path):
        raise MetadataError(f"metadata file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            table = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (table.fieldnames or [])]
            if missing:
                raise MetadataError(f"{path}: not a video-preprocessing metadata file (missing columns "
                                    f"{', '.join(missing)}; expected {','.join(REQUIRED_COLUMNS)}[,partition][,person_id])")
            clips = [_row_clip(row, table.line_num, path, default_partition) for row in table]
    except UnicodeDecodeError:
        raise MetadataError(f"{path}:{_first_undecodable_line(path)}: not UTF-8 text; save the table as UTF-8 "
                            f"(the published tables are)") from None
    except csv.Error as err:
        raise MetadataError(f"{path}: not a csv file ({err})") from None
    except OSError as err:
        raise MetadataError(f"cannot read the metadata file {path}: {err.strerror or err}") from None
    if not clips:
        raise MetadataError(f"{path}: no clips")
    return clips


def inside(folder: str, path: str, what: str) -> str:
    """`path`, after checking that it names something inside `folder` (lexically: `..` resolved, links not
    followed, so a source folder of symbolic links to the videos still works); MetadataError otherwise."""
    root = os.path.abspath(folder)
    full = os.path.abspath(path)
    if os.path.commonpath([root, full]) != root or full == root:
        raise MetadataError(f"{what} {path} would lie outside {folder}, refused")
    return path


def _first_undecodable_line(path: str) -> int:
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data[:err.start].count(b"\n") + 1
    return 1


def find_source(source_dir: str, video_id: str) -> str | None:
    """`source_dir/<video_id>.mp4`, or the same name with another video extension; None when absent."""
    for ext in (".mp4",) + tuple(e for e in VIDEO_EXTENSIONS if e != ".mp4"):
        path = inside(source_dir, os.path.join(source_dir, video_id + ext), f"the source video of {video_id!r}")
        if os.path.isfile(path):
            return path
    return None


def locate_sources(clips: list[MetaClip], source_dir: str, skip_missing: bool) -> dict[str, str]:
    """{video id: local path} for every source video; a one-line error naming the missing ones."""
    if not os.path.isdir(source_dir):
        raise MetadataError(f"source folder not found: {source_dir}")
    ids = sorted({c.source_id for c in clips})
    found = {i: find_source(source_dir, i) for i in ids}
    missing = [i for i in ids if found[i] is None]
    if missing:
        examples = ", ".join(os.path.join(source_dir, i + ".mp4") for i in missing[:3])
        message = (f"{len(missing)} of {len(ids)} source videos missing from {source_dir} "
                   f"(expected <video_id>.mp4 there, e.g. {examples}{', ...' if len(missing) > 3 else ''})")
        if not skip_missing:
            raise MetadataError(message + "; download them first, or pass --skip_missing")
        print(f"warning: {message}; their clips are skipped", file=sys.stderr)
    return {i: p for i, p in found.items() if p is not None}


def cut_video(path: str, clips: list[MetaClip], output: str, image_shape: tuple[int, int], fmt: str) -> list[dict]:
    """Write every clip of one source video in one decode pass; one row per written clip."""
    from utils.crop import crop_resize
    from utils.media import WriterGroup, open_upright_video, open_writer

    reader = open_upright_video(path)
    fps = reader.fps
    boxes = [c.box_in(reader.height, reader.width) for c in clips]
    for clip, box in zip(clips, boxes):
        if box[2] <= box[0] or box[3] <= box[1]:
            raise MediaError(f"the box of {clip.name} lies outside the {reader.width}x{reader.height} video {path}")
    targets = [inside(output, os.path.join(output, c.partition, c.name + (".mp4" if fmt == "mp4" else "")),
                      f"the clip of {c.video_id!r}") for c in clips]
    last = max(int(np.ceil(c.end * fps / c.fps)) for c in clips)  # local frames past this belong to no clip
    writers = [open_writer(t, fps=fps) for t in targets]  # .mp4, or a PNG folder (no extension)
    counts = [0] * len(clips)
    try:
        for index, frame in enumerate(reader):
            if index > last:
                break
            for k, (clip, box) in enumerate(zip(clips, boxes)):
                if clip.contains(index, fps):
                    writers[k].write(crop_resize(frame, box, image_shape))
                    counts[k] += 1
        kept = [w for w, n in zip(writers, counts) if n > 0]
        WriterGroup([w for w, n in zip(writers, counts) if n == 0]).abort()
        WriterGroup(kept).finish_and_publish()
    except BaseException:
        WriterGroup(writers).abort()
        raise
    return [{"clip": os.path.relpath(t, output), "video_id": c.video_id, "partition": c.partition,
             "start": c.start, "end": c.end, "frames": n, "expected_frames": len(c.local_frames(fps)),
             "box": "-".join(str(v) for v in b)}
            for c, t, n, b in zip(clips, targets, counts, boxes) if n > 0]


def _cut_one(job: tuple) -> tuple[str, list[dict], str | None]:
    video_id, path, clips, output, image_shape, fmt = job
    try:
        return video_id, cut_video(path, clips, output, image_shape, fmt), None
    except MediaError as err:
        return video_id, [], str(err)


def check_output(output: str, image_shape: tuple[int, int]) -> None:
    """Refuse, before anything is written, a dataset folder that cannot be created and a clip size whose
    frames cannot fit in memory (one cropped frame at `image_shape` in float32 and uint8: a lower bound)."""
    check_writable(output, "dataset folder")
    if os.path.lexists(output) and not os.path.isdir(output):
        raise UserError(f"cannot create the dataset folder {os.path.abspath(output)}: it is a file")
    height, width = (int(v) for v in image_shape[:2])
    check_fits(height * width * 3 * (4 + 1), f"cutting clips at {height}x{width}")


def prepare_from_metadata(metadata: str, source_dir: str, output: str, image_shape=(256, 256), fmt: str = "mp4",
                          default_partition: str | None = None, skip_missing: bool = False, workers: int = 1,
                          show_progress: bool = False) -> dict:
    """Cut every clip of `metadata` from `source_dir/<video_id>.mp4` into `output/{train,test}`; return a summary."""
    if fmt not in ("mp4", "png"):
        raise MetadataError(f"format must be mp4 or png, got {fmt!r}")
    check_output(output, image_shape)
    clips = read_metadata(metadata, default_partition)
    for clip in clips:  # every file name from the table stays inside --output (read_metadata checked the ids)
        inside(output, os.path.join(output, clip.partition, clip.name), f"the clip of {clip.video_id!r}")
    sources = locate_sources(clips, source_dir, skip_missing)
    by_video: dict[str, list[MetaClip]] = {}
    for clip in clips:
        if clip.source_id in sources:
            by_video.setdefault(clip.source_id, []).append(clip)
    jobs = [(v, sources[v], cs, output, tuple(image_shape), fmt) for v, cs in sorted(by_video.items())]
    for partition in PARTITIONS:
        os.makedirs(os.path.join(output, partition), exist_ok=True)
    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(j[2]) for j in jobs), unit="clip", desc="cutting clips", file=sys.stderr)
    rows, failed = [], []
    if workers > 1:
        from multiprocessing import Pool
        pool = Pool(workers)
        results = pool.imap_unordered(_cut_one, jobs)
    else:
        pool, results = None, map(_cut_one, jobs)
    try:
        for video_id, written, error in results:
            if error is not None:
                print(f"warning: skipping {video_id}: {error}", file=sys.stderr)
                failed.append(video_id)
            rows += written
            if bar is not None:
                bar.update(len(by_video[video_id]))
    finally:
        if pool is not None:
            pool.terminate()
        if bar is not None:
            bar.close()
    if not rows:
        raise MetadataError(f"no clips written from {metadata} ({len(failed)} unreadable source video(s))")
    rows.sort(key=lambda r: r["clip"])
    _write_table(os.path.join(output, "clips.csv"), rows)
    short = [r for r in rows if r["frames"] < r["expected_frames"]]
    return {"clips": rows, "output": output, "failed": failed, "short": short,
            "missing": sorted({c.source_id for c in clips} - set(sources)),
            "train": sum(r["partition"] == "train" for r in rows), "test": sum(r["partition"] == "test" for r in rows)}


def _write_table(path: str, rows: list[dict]) -> None:
    with atomic_write(path) as handle:
        table = csv.DictWriter(handle, fieldnames=list(rows[0]))
        table.writeheader()
        table.writerows(rows)
