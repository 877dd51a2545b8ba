"""Turn raw videos into the training layout `<out>/{train,test}/<video_id>#<clip>.mp4` (or PNG folders).

    python -m datasets.prepare --input raw_videos/ --output data/my-faces --kind face
    python -m datasets.prepare --input dance.mp4 --output data/my-bodies --kind person --image_shape 256,256
    python -m datasets.prepare --metadata vox-metadata.csv --source_dir youtube/ --output data/vox   # the papers' clips

With `--metadata`, the clips are the published ones (`datasets.metadata`): no detection,
each row's frame range and box cut from the user's local copy of its source video.

The VoxCeleb recipe of the FOMM/TPSMM preprocessing (video-preprocessing, `crop-video.py`),
run offline and writing the clips itself:
1. detect faces (MediaPipe, dlib as a second chance) or the person (BlazePose) every
   `detect_every` frames and track them: a detection continues the track whose box it
   overlaps most (IoU with the track's first box above `iou_with_initial`); a track
   ends where no detection overlaps its first box that much for more than `max_missed`
   detection rounds: the object is lost or has moved too far (a new clip starts there);
2. tracks shorter than `min_frames` are dropped;
3. each clip is cropped with one fixed box: the union of the track's boxes, enlarged by
   `increase` of its size on each side and made square (aspect kept), then resized to
   `image_shape`.
A video's clips all go to the same split (by its id, the file name up to '#'), so no
person is in both train and test. `clips.csv` lists every clip with its source and box.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from datasets.metadata import check_output  # shared by both ways of cutting clips
from utils.errors import UserError
from utils.io import atomic_write
from utils.media import open_upright_video
from utils.video import VIDEO_EXTENSIONS, MediaError

KINDS = ("face", "person")
# What a crop box that would reach outside the video becomes (`--fill`):
#   inside   - moved inside the frame, and shrunk to the frame's shorter side if it is longer (no invented pixels;
#              the reference's crop-video.py also clips its box to the frame, there at the cost of the aspect ratio)
#   constant - kept (centred on the face), the part outside the video black
#   edge     - kept, the part outside filled by repeating the video's edge rows and columns (before this option)
FILLS = ("inside", "constant", "edge")
DEFAULT_INCREASE = {"face": 0.4, "person": 0.1}


class PrepareError(UserError):
    """Bad arguments or no usable input (one-line message)."""


@dataclass
class Track:
    """One tracked face/person: its first box, the union of its boxes, first and last frame."""

    initial: np.ndarray
    union: np.ndarray
    start: int
    end: int


@dataclass
class Clip:
    video: str
    index: int
    start: int  # first frame (inclusive)
    end: int    # last frame (inclusive)
    box: np.ndarray  # crop box (x0, y0, x1, y1) in source pixels

    @property
    def num_frames(self) -> int:
        return self.end - self.start + 1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop_box(tube: np.ndarray, increase: float, height: int, width: int, fill: str = "inside") -> np.ndarray:
    """The reference's `compute_bbox`: the tube box grown by `increase` per side, aspect made square.

    The square is moved inside the frame where it fits. Where it does not, `fill='inside'`
    shrinks it to the frame's shorter side; the other fills keep its size and the missing
    border is filled when cropping (see `utils.crop.crop_resize`).
    """
    from utils.crop import square_at

    if fill not in FILLS:
        raise PrepareError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    left, top, right, bottom = [float(v) for v in tube]
    w, h = right - left, bottom - top
    side = max((1 + 2 * increase) * w, (1 + 2 * increase) * h)
    return square_at((left + right) / 2.0, (top + bottom) / 2.0, side, height, width, shrink=fill == "inside")


def find_clips(path: str, kind: str = "face", detect_every: int = 1, iou_with_initial: float = 0.25,
               min_frames: int = 64, max_missed: int = 1, increase: float | None = None,
               max_side: int = 640, fill: str = "inside", show_progress: bool = False) -> list[Clip]:
    """Track faces/persons through the video at `path` and return its clips (one decode pass)."""
    from utils.crop import detect_scaled, detector

    if kind not in KINDS:
        raise PrepareError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    increase = DEFAULT_INCREASE[kind] if increase is None else increase
    reader = open_upright_video(path)
    detect = detector(kind)
    active: list[Track] = []
    finished: list[Track] = []
    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=reader.num_frames, unit="frame", desc=f"tracking {os.path.basename(path)}", file=sys.stderr)
    for index, frame in enumerate(reader):
        if bar is not None:
            bar.update(1)
        if index % detect_every:
            continue
        boxes = detect_scaled(frame, detect, max_side)  # largest first
        # a track goes on while some detection overlaps its first box by more than iou_with_initial;
        # it ends after `max_missed` detection rounds without one
        still = []
        for track in active:
            best = max((iou(track.initial, b) for b in boxes), default=0.0)
            missed = (index - track.end) // detect_every - 1
            (still if best > iou_with_initial or missed < max_missed else finished).append(track)
        active = still
        for b in boxes:
            candidates = [(iou(t.initial, b), k) for k, t in enumerate(active) if t.end != index]
            candidates = [(o, k) for o, k in candidates if o > iou_with_initial]
            if candidates:
                track = active[max(candidates)[1]]
                track.union = np.array([min(track.union[0], b[0]), min(track.union[1], b[1]),
                                        max(track.union[2], b[2]), max(track.union[3], b[3])])
                track.end = index
            else:
                active.append(Track(initial=b, union=b.copy(), start=index, end=index))
    if bar is not None:
        bar.close()
    finished.extend(active)
    clips = []
    for track in sorted(finished, key=lambda t: (t.start, t.initial[0])):
        if track.end - track.start + 1 < min_frames:  # from the first to the last frame it was seen in
            continue
        box = crop_box(track.union, increase, reader.height, reader.width, fill)
        clips.append(Clip(video=path, index=len(clips), start=track.start, end=track.end, box=box))
    return clips


def write_clips(path: str, clips: list[Clip], out_dir: str, name: str, image_shape: tuple[int, int],
                fmt: str = "mp4", fill: str = "inside", show_progress: bool = False) -> list[str]:
    """Crop and write every clip of one video in one decode pass; returns the written paths.

    A box reaching outside the video (only with `fill` 'constant' or 'edge') gets black or repeated edge pixels there.
    """
    from utils.crop import crop_resize
    from utils.media import WriterGroup, open_writer

    if not clips:
        return []
    reader = open_upright_video(path)
    os.makedirs(out_dir, exist_ok=True)
    targets = [os.path.join(out_dir, f"{name}#{c.index:03d}" + (".mp4" if fmt == "mp4" else "")) for c in clips]
    writers = {}
    done: list = []
    last_end = max(c.end for c in clips)
    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=last_end + 1, unit="frame", desc=f"writing {os.path.basename(path)}", file=sys.stderr)
    try:
        for index, frame in enumerate(reader):
            if bar is not None:
                bar.update(1)
            for clip, target in zip(clips, targets):
                if clip.start <= index <= clip.end:
                    if clip.index not in writers:
                        writers[clip.index] = open_writer(target, fps=reader.fps)
                    writers[clip.index].write(crop_resize(frame, clip.box, image_shape,
                                                          fill="constant" if fill == "constant" else "edge"))
                if index == clip.end and clip.index in writers:
                    writer = writers.pop(clip.index)
                    writer.finish()
                    done.append(writer)
            if index >= last_end:
                break
    except BaseException:
        WriterGroup(list(writers.values()) + done).abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    for writer in writers.values():  # the video ended before a clip's last frame
        writer.finish()
        done.append(writer)
    for writer in done:
        writer.publish()
    return [w.path for w in done]


def split_of(video_id: str, test_ratio: float) -> str:
    """A stable train/test assignment by id (crc32), the same on every machine."""
    return "test" if (zlib.crc32(video_id.encode("utf-8")) % 10_000) / 10_000.0 < test_ratio else "train"


def list_inputs(inputs: list[str]) -> list[str]:
    """Video files given directly or found (recursively) in the given folders, sorted."""
    videos: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for folder, _, files in sorted(os.walk(item)):
                videos += [os.path.join(folder, f) for f in sorted(files)
                           if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith(".")]
        elif os.path.isfile(item):
            videos.append(item)
        else:
            raise PrepareError(f"input not found: {item}")
    if not videos:
        raise PrepareError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {', '.join(inputs)}")
    return videos


def prepare_dataset(inputs: list[str] | str, output: str, kind: str = "face", image_shape=(256, 256),
                    fmt: str = "mp4", detect_every: int = 1, iou_with_initial: float = 0.25, min_frames: int = 64,
                    max_missed: int = 1, increase: float | None = None, test_ratio: float = 0.2,
                    test_videos: list[str] | None = None, fill: str = "inside", show_progress: bool = False) -> dict:
    """Find, crop and write the clips of every input video into `output/{train,test}`; return a summary.

    Unreadable videos are skipped with a warning; it is an error when no clip at all was found.
    """
    if fmt not in ("mp4", "png"):
        raise PrepareError(f"format must be mp4 or png, got {fmt!r}")
    if kind not in KINDS:
        raise PrepareError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if detect_every < 1 or min_frames < 1:
        raise PrepareError("detect_every and min_frames must be at least 1")
    if fill not in FILLS:
        raise PrepareError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    check_output(output, image_shape)
    videos = list_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    names = [os.path.splitext(os.path.basename(v))[0] for v in videos]
    ids = [n.split("#")[0] for n in names]
    if test_videos:
        wanted = set(test_videos)
        splits = {i: ("test" if i in wanted else "train") for i in ids}
        for n, i in zip(names, ids):
            if n in wanted:
                splits[i] = "test"
    else:
        splits = {i: split_of(i, test_ratio) for i in ids}
        distinct = sorted(set(ids))
        if test_ratio > 0 and len(distinct) >= 2 and "test" not in splits.values():
            splits[distinct[-1]] = "test"
        if len(distinct) >= 2 and "train" not in splits.values():
            splits[distinct[0]] = "train"
    rows, written, skipped = [], [], []
    for video, name, vid in zip(videos, names, ids):
        try:
            clips = find_clips(video, kind=kind, detect_every=detect_every, iou_with_initial=iou_with_initial,
                               min_frames=min_frames, max_missed=max_missed, increase=increase, fill=fill,
                               show_progress=show_progress)
            paths = write_clips(video, clips, os.path.join(output, splits[vid]), name, tuple(image_shape), fmt,
                                fill=fill, show_progress=show_progress)
        except MediaError as err:
            print(f"warning: skipping {video}: {err}", file=sys.stderr)
            skipped.append(video)
            continue
        for clip, path in zip(clips, paths):
            rows.append({"clip": os.path.relpath(path, output), "video": video, "split": splits[vid],
                         "start": clip.start, "end": clip.end, "frames": clip.num_frames,
                         "box": " ".join(f"{v:.1f}" for v in clip.box)})
        written += paths
    if not written:
        raise PrepareError(f"no clips found: no {kind} tracked for {min_frames}+ frames in {len(videos)} video(s)"
                           + (f" ({len(skipped)} unreadable)" if skipped else ""))
    os.makedirs(output, exist_ok=True)
    with atomic_write(os.path.join(output, "clips.csv")) as handle:
        table = csv.DictWriter(handle, fieldnames=list(rows[0]))
        table.writeheader()
        table.writerows(rows)
    return {"clips": rows, "skipped": skipped, "output": output,
            "train": sum(r["split"] == "train" for r in rows), "test": sum(r["split"] == "test" for r in rows)}


def _shape(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (e.g. 256,256), got {text!r}") from None
    if len(parts) < 2 or min(parts[:2]) < 8:
        raise argparse.ArgumentTypeError(f"expected H,W (e.g. 256,256), got {text!r}")
    return parts[0], parts[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cut raw videos into face- or person-centred training clips "
                                                 "(<output>/{train,test}/<id>#<clip>.mp4).")
    parser.add_argument("--input", nargs="+", default=None, help="video files and/or folders of videos")
    parser.add_argument("--metadata", default=None,
                        help="a published cropping table (vox-metadata.csv, taichi-metadata.csv): cut those clips")
    parser.add_argument("--source_dir", default=None, help="with --metadata: the folder holding <video_id>.mp4")
    parser.add_argument("--default_partition", default=None, choices=("train", "test"),
                        help="with --metadata: the split of rows without a partition column")
    parser.add_argument("--skip_missing", action="store_true", help="with --metadata: cut what is there")
    parser.add_argument("--workers", type=int, default=1, help="with --metadata: source videos cut in parallel")
    parser.add_argument("--output", required=True, help="dataset folder to create (gets train/, test/, clips.csv)")
    parser.add_argument("--kind", default="face", choices=KINDS, help="talking heads (face) or full body (person)")
    parser.add_argument("--image_shape", type=_shape, default=(256, 256), metavar="H,W", help="clip size (default 256,256)")
    parser.add_argument("--format", dest="fmt", default="mp4", choices=("mp4", "png"), help="mp4 files or PNG folders")
    parser.add_argument("--increase", type=float, default=None,
                        help="grow the tracked box by this fraction per side (default 0.4 face, 0.1 person)")
    parser.add_argument("--fill", default="inside", choices=FILLS,
                        help="a crop box larger than the video: shrink it to fit (inside, default), keep it and "
                             "fill the outside black (constant) or with repeated edge pixels (edge)")
    parser.add_argument("--iou_with_initial", type=float, default=0.25,
                        help="end a clip when the box overlaps its first box less than this")
    parser.add_argument("--min_frames", type=int, default=64, help="drop clips shorter than this")
    parser.add_argument("--max_missed", type=int, default=1,
                        help="detection rounds a face may go unseen before its clip ends (0: the reference)")
    parser.add_argument("--detect_every", type=int, default=1, help="run the detector every N frames")
    parser.add_argument("--test_ratio", type=float, default=0.2, help="fraction of ids sent to test/")
    parser.add_argument("--test_videos", nargs="*", default=None, help="ids (or file names without extension) for test/")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if (args.input is None) == (args.metadata is None):
        parser.error("give either --input (find clips in raw videos) or --metadata with --source_dir")
    if args.metadata is not None:
        return _main_metadata(args)
    try:
        summary = prepare_dataset(args.input, args.output, kind=args.kind, image_shape=args.image_shape, fmt=args.fmt,
                                  detect_every=args.detect_every, iou_with_initial=args.iou_with_initial,
                                  min_frames=args.min_frames, max_missed=args.max_missed, increase=args.increase,
                                  test_ratio=args.test_ratio, test_videos=args.test_videos,
                                  fill=args.fill, show_progress=not args.quiet)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {len(summary['clips'])} clips ({summary['train']} train, {summary['test']} test) "
          f"to {summary['output']}; list in {os.path.join(summary['output'], 'clips.csv')}")
    return 0


def _main_metadata(args: argparse.Namespace) -> int:
    from datasets.metadata import prepare_from_metadata

    if args.source_dir is None:
        print("error: --metadata needs --source_dir, the folder with the source videos <video_id>.mp4", file=sys.stderr)
        return 2
    try:
        summary = prepare_from_metadata(args.metadata, args.source_dir, args.output, image_shape=args.image_shape,
                                        fmt=args.fmt, default_partition=args.default_partition,
                                        skip_missing=args.skip_missing, workers=args.workers,
                                        show_progress=not args.quiet)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if summary["short"]:
        print(f"warning: {len(summary['short'])} clip(s) shorter than the metadata says (source video ends early), "
              f"see frames/expected_frames in clips.csv", file=sys.stderr)
    print(f"wrote {len(summary['clips'])} clips ({summary['train']} train, {summary['test']} test) "
          f"to {summary['output']}; list in {os.path.join(summary['output'], 'clips.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
