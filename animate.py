"""Animate a photo with a driving video: `python animate.py --config C --checkpoint P --source_image I
--driving_video V --result_video R` (docs/animation.md).

Any photo (jpg/png, RGBA, grayscale, any size) and any video (mp4/mov/avi/webm/gif, frame
folder; any size, length and frame rate). The video is decoded, animated in batches and
encoded as a stream, so memory does not grow with its length. The result has the driving
video's frame count and frame rate, and its audio track (mp4/mov/mkv/webm). It is written
under a temporary name and renamed when complete.

The command line and the web app share one code path: `run_animation(...)`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator

import numpy as np
import torch

from modules.animation import MODES, PRECISIONS, Animator, make_animation  # noqa: F401  (public API: animate.make_animation)
from modules.family import family_of
from modules.fomm.animation import normalize_kp  # noqa: F401  (FOMM clients import it from here)
# the model loading the command line, the web page and live sessions share (re-exported: public names here)
from modules.loading import OPTIONAL_MODELS, AnimateError, cached_models, load_models, resolve_device  # noqa: F401
from utils.frames import to_tensor, to_uint8
from utils.io import check_writable
from utils.precision import CHOICES as PRECISION_CHOICES


def animator_class(config: dict) -> type:
    """The animation engine of the config's model family (the registry's `Family.animator`):
    built as cls(models, source, mode=, precision=, anchor=)."""
    return family_of(config).animator_class()


def _side_by_side(source: np.ndarray, driving: np.ndarray, result: np.ndarray) -> np.ndarray:
    """source | driving | result, all (H, W, 3) uint8."""
    return np.concatenate([source, driving, result], axis=1)


# ----------------------------------------------------------------------------- the steps of run_animation

def _precision(precision: str, device: torch.device, cfg: dict):
    """`utils.precision.resolve_precision` for the family's engine on `device` ('auto' decided there); an
    explicit precision the device only emulates runs, after a one-line warning on stderr."""
    from utils.precision import resolve_precision

    try:
        choice = resolve_precision(precision, device, family_of(cfg).precisions)
    except ValueError as err:
        raise AnimateError(str(err)) from None
    if choice.warning:
        print(f"warning: {choice.warning}", file=sys.stderr)
    return choice


def _check_arguments(mode: str, crop: str, precision: str, batch_size: int, result_video, side_by_side,
                     source_image, driving_video) -> tuple[str, int, str, str | None]:
    """One-line AnimateErrors for bad options; returns (crop, batch_size, result_video, side_by_side path)."""
    from utils.crop import CROPS
    from utils.media import output_kind

    if mode not in MODES:
        raise AnimateError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    crop = "centre" if crop == "center" else crop
    if crop not in CROPS:
        raise AnimateError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if precision not in PRECISION_CHOICES:
        raise AnimateError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    if int(batch_size) < 1:
        raise AnimateError(f"batch_size must be at least 1, got {batch_size}")
    result_video = os.fspath(result_video)
    output_kind(result_video)
    sbs_path = None
    if isinstance(side_by_side, (str, os.PathLike)) and os.fspath(side_by_side):
        sbs_path = os.fspath(side_by_side)
        output_kind(sbs_path)
    for path in (source_image, driving_video):
        for out in filter(None, (result_video, sbs_path)):
            if os.path.abspath(os.fspath(path)) == os.path.abspath(out.rstrip("/" + os.sep)):
                raise AnimateError(f"the output {out} would overwrite the input {path}")
    for out in filter(None, (result_video, sbs_path)):
        check_writable(out.rstrip("/" + os.sep) or out, "output")
    return crop, int(batch_size), result_video, sbs_path


def _frame_size(cfg: dict, img_shape: tuple[int, int] | None, config, device: torch.device,
                batch_size: int) -> tuple[int, int]:
    """(H, W) to animate at: `img_shape` or the config's size (`frame_shape: null` = as its data is stored,
    `utils.frame_size`), checked against the family's size multiple and the memory it needs."""
    from utils.frame_size import frame_size
    from utils.resources import animation_bytes, check_fits

    default = frame_size(config if isinstance(config, (str, os.PathLike)) else cfg)
    height, width = (int(img_shape[0]), int(img_shape[1])) if img_shape else default
    multiple = family_of(cfg).size_multiple(cfg)
    if height < 1 or width < 1 or height % multiple or width % multiple:
        raise AnimateError(f"image size {height}x{width} does not fit this model: sides must be multiples of "
                           f"{multiple} (the config's size is {default[0]}x{default[1]})")
    channels = int(cfg["model_params"].get("generator_params", {}).get("block_expansion", 64))
    check_fits(animation_bytes(height, width, channels, batch_size), f"animating at {height}x{width}", str(device))
    return height, width


def _source(source_image, crop: str, size: tuple[int, int], paste_back: bool, max_size: int | None,
            colour_match: bool):
    """The source crop (H, W, 3) at the model's size and, with paste-back, the compositor of predictions
    into the full photo (upright by its EXIF orientation, at most `max_size` on its long side)."""
    from utils.crop import crop_resize, image_box
    from utils.media import photo_size, read_photo
    from utils.resources import check_fits

    height, width = photo_size(os.fspath(source_image))  # from the header: refuse before decoding
    check_fits(height * width * 3, f"reading the {width}x{height} photo")
    photo = read_photo(os.fspath(source_image))
    if paste_back:
        from utils.paste import fit_max_size
        photo = fit_max_size(photo, max_size)
    box = image_box(photo, crop, report=lambda line: print(f"note: {line}", file=sys.stderr))
    if paste_back:
        from utils.paste import paste_back_bytes
        check_fits(paste_back_bytes(photo.shape[:2], box),
                   f"pasting back into the {photo.shape[1]}x{photo.shape[0]} photo (--max_size to shrink it)")
    if paste_back and crop == "none" and abs(photo.shape[1] / photo.shape[0] * size[0] / size[1] - 1.0) > 0.01:
        # the whole photo is the crop: the model sees it squeezed to its own shape, and the result is stretched back
        print(f"warning: --paste_back with --crop none squeezes the whole {photo.shape[1]}x{photo.shape[0]} photo "
              f"into the model's {size[1]}x{size[0]} input and stretches the result back over it (faces move "
              f"distorted); --crop face or centre keeps the aspect", file=sys.stderr)
    paste = None
    if paste_back:  # compose(prediction) -> full photo frame
        from utils.paste import FEATHER, PasteBack
        paste = PasteBack(photo, box, size, feather=FEATHER[crop], colour_match=colour_match)
    return crop_resize(photo, box, size), paste  # H x W x 3


def _with_bar(frames: Iterator[np.ndarray], total: int, desc: str, show: bool) -> Iterator[np.ndarray]:
    if not show:
        return frames
    from tqdm import tqdm
    return iter(tqdm(frames, total=total, unit="frame", desc=desc, dynamic_ncols=True, file=sys.stderr))


def _driving_boxes(reader, crop: str, fps: float, show_progress: bool) -> np.ndarray:
    """Crop box (T, 4) of every driving frame: tracked for 'face'/'person', else one fixed box."""
    from utils.crop import centre_box, full_box, track_boxes

    total = reader.num_frames
    if crop in ("face", "person"):
        boxes = track_boxes(_with_bar(iter(reader), total, f"tracking the {crop}", show_progress), total,
                            reader.height, reader.width, crop, fps=fps)
        if boxes is None:
            raise AnimateError(f"no {crop} found in the driving video; use --crop centre")
        return boxes
    one = (centre_box if crop == "centre" else full_box)(reader.height, reader.width)
    return np.repeat(one[None], total, axis=0)  # T x 4


def _anchor_index(source: np.ndarray, frames: Callable[[], Iterator[np.ndarray]], total: int,
                  best_frame: int | None, find_best_frame: bool, show_progress: bool) -> int:
    """The relative-mode anchor: `best_frame`, the best pose match (`find_best_frame`) or frame 0."""
    from utils.crop import best_frame as find_best

    if best_frame is not None:
        if not 0 <= int(best_frame) < total:
            raise AnimateError(f"best_frame {int(best_frame)} is outside the driving video (0..{total - 1})")
        return int(best_frame)
    if find_best_frame:
        return find_best(source, _with_bar(frames(), total, "finding the best frame", show_progress))[0]
    return 0


def _open_writers(result_video: str, sbs_path: str | None, fps: float, audio_from: str | None, total: int):
    """(result writer, side-by-side writer or None, their WriterGroup); temporary names until published."""
    from utils.media import WriterGroup, open_writer, output_kind

    writers = []
    try:
        kind = output_kind(result_video)
        writers.append(open_writer(result_video, fps=fps, audio_from=audio_from if kind == "video" else None,
                                   num_frames=total))
        if sbs_path is not None:
            kind = output_kind(sbs_path)
            writers.append(open_writer(sbs_path, fps=fps, audio_from=audio_from if kind == "video" else None,
                                       num_frames=total))
    except BaseException:
        WriterGroup(writers).abort()
        raise
    return writers[0], (writers[1] if sbs_path is not None else None), WriterGroup(writers)


def _animate_frames(animator, frames: Iterator[np.ndarray], device: torch.device, batch_size: int,
                    write: Callable[[np.ndarray, np.ndarray], None],
                    progress: Callable[[int], None]) -> int:
    """Driving frames in batches through `animator`; `write(driving, prediction)` per frame; returns the count."""
    done = 0

    def flush(batch: list[np.ndarray]) -> None:
        nonlocal done
        with torch.inference_mode():
            predictions = to_uint8(animator(to_tensor(batch, device)))  # T x H x W x 3
        for drv, pred in zip(batch, predictions):
            write(drv, pred)
        done += len(batch)
        progress(done)

    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return done


def _write_all(animator, frames: Iterator[np.ndarray], source: np.ndarray, dev: torch.device, batch_size: int,
               writers: tuple, sbs_in_result: bool, total: int, progress: Callable[[int, int], None] | None,
               show_progress: bool, driving_name: str, paste: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
    """Animate every frame into the writers, publish them; abort (no output left) on any failure.

    paste: the full-photo compositor (`utils.paste.PasteBack`) for the result, or None for the crop itself.
    """
    result_writer, sbs_writer, group = writers
    bar = None

    def write(drv: np.ndarray, pred: np.ndarray) -> None:
        both = _side_by_side(source, drv, pred)
        result_writer.write(both if sbs_in_result else (pred if paste is None else paste(pred)))
        if sbs_writer is not None:
            sbs_writer.write(both)

    def report(done: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)
        if progress is not None:
            progress(done, total)

    try:
        if show_progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="frame", desc="animating", dynamic_ncols=True, file=sys.stderr)
        if progress is not None:
            progress(0, total)
        done = _animate_frames(animator, frames, dev, batch_size, write, report)
        if done == 0:
            raise AnimateError(f"no frames could be decoded from {driving_name}")
        group.finish_and_publish()
    except BaseException:
        group.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return done


# ----------------------------------------------------------------------------- the one code path

def run_animation(config, checkpoint, source_image, driving_video, result_video, mode: str = "relative",
                  crop: str = "centre", find_best_frame: bool = False, audio: bool = True,
                  side_by_side: str | bool | None = None, device: str = "cpu", precision: str = "fp32",
                  batch_size: int = 8, progress: Callable[[int, int], None] | None = None,
                  img_shape: tuple[int, int] | None = None, best_frame: int | None = None,
                  show_progress: bool = False, paste_back: bool = False, max_size: int | None = 1920,
                  colour_match: bool = False, max_frames: int | None = None,
                  max_seconds: float | None = None) -> dict:
    """Animate `source_image` with `driving_video` and write `result_video`; return a summary dict.

    driving_video: a video file or frame folder, or a URL, stream or camera (`utils.live.is_live_source`):
      read once, in order, every frame animated (real-time dropping is `--live`'s, never a file's);
      `max_frames` / `max_seconds` stop reading it (a camera needs one of them); the anchor is its
      first frame, the crop box of 'face' / 'person' is tracked online; no audio.

    config: YAML path or dict; checkpoint: a checkpoint matching it.
    mode: 'relative' (motion relative to the anchor frame, TPSMM demo default), 'standard'
      (absolute driving keypoints) or 'avd' (the AVD network; needs it in the checkpoint). MRAA models:
      the same modes on region parameters (`modules.mraa.animation`); FOMM: relative and standard.
    crop: 'centre' (largest centred square), 'none' (whole frame, aspect not kept), 'face' or
      'person' (offline detector; the video's box is tracked and smoothed), for source and driving.
    result_video: .mp4/.mov/.mkv/.avi (H.264), .webm (VP9), .gif, or a folder (no extension) of PNGs.
    find_best_frame: the anchor is the driving frame whose face pose best matches the source
      (animating forwards and backwards from it, as the reference demo); best_frame: give it.
    audio: keep the driving video's audio track (video outputs only).
    side_by_side: a path writes source | driving | result there too; True makes result_video side by side.
    precision: 'fp32' (exact: the reference demo's output within 1/255), 'bf16', 'fp16' or 'auto' (bf16
      where the device runs it natively, fp16 on older CUDA devices, else fp32: `utils.precision`);
      an explicit one the device only emulates warns on stderr. progress: callable(done_frames, total_frames).
    img_shape: (H, W) to animate at; default the config's frame_shape.
    paste_back: every result frame is the whole photo (long side at most `max_size`; None or 0 for
      no limit) with the animated crop blended back in (`utils.paste.PasteBack`); colour_match fits
      the crop's colours to the photo around it. The side-by-side output stays at the model's size.

    Returns {'result_video', 'side_by_side', 'num_frames', 'fps', 'audio', 'anchor_frame',
    'size', 'mode', 'crop', 'device', 'seconds', 'frames_per_second', 'paste_back', 'result_size',
    'frames_read' (driving frames read: num_frames for a complete write), 'source_error' (a stream that
    broke off after some frames: why; its frames up to there are written)}.
    Raises AnimateError / MediaError / CheckpointError / ConfigError / CropError (one-line messages)
    before anything is written; a failure while writing leaves no output file.
    """
    from modules.family import load_config
    from utils.crop import crop_resize
    from utils.media import has_audio, open_upright_video, output_kind

    start = time.time()
    crop, batch_size, result_video, sbs_path = _check_arguments(
        mode, crop, precision, batch_size, result_video, side_by_side, source_image, driving_video)
    if paste_back and side_by_side is True:
        raise AnimateError("--paste_back writes the full photo: give --side_by_side a PATH for the side-by-side video")
    dev = resolve_device(device)

    stream = _check_stream(os.fspath(driving_video), find_best_frame, best_frame, max_frames, max_seconds)
    if stream:
        return _run_stream(config, checkpoint, source_image, os.fspath(driving_video), result_video, sbs_path,
                           mode, crop, side_by_side is True, dev, precision, batch_size, progress, img_shape,
                           show_progress, paste_back, max_size, colour_match, max_frames, max_seconds, start)

    # Inputs and model, checked before anything is written.
    reader = open_upright_video(os.fspath(driving_video))  # upright by its display rotation
    total = reader.num_frames
    fps = float(reader.fps) if reader.fps and reader.fps > 0 else 25.0
    cfg = load_config(config)
    size = _frame_size(cfg, img_shape, config, dev, batch_size)
    source, paste = _source(source_image, crop, size, paste_back, max_size, colour_match)
    models = cached_models(cfg, os.fspath(checkpoint), mode, dev)
    boxes = _driving_boxes(reader, crop, fps, show_progress)

    def driving_frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(reader):
            yield crop_resize(frame, boxes[min(index, total - 1)], size)

    anchor_index = _anchor_index(source, driving_frames, total, best_frame, find_best_frame, show_progress)
    anchor = crop_resize(reader.get_frames([anchor_index])[0], boxes[anchor_index], size)
    chosen = _precision(precision, dev, cfg)
    animator = animator_class(cfg)(models, to_tensor([source], dev), mode=mode, precision=chosen.name,
                                   anchor=to_tensor([anchor], dev))

    audio_from = os.fspath(driving_video) if audio and has_audio(os.fspath(driving_video)) else None
    writers = _open_writers(result_video, sbs_path, fps, audio_from, total)
    animate_start = time.time()
    done = _write_all(animator, driving_frames(), source, dev, batch_size, writers, side_by_side is True, total,
                      progress, show_progress, os.fspath(driving_video), paste)
    elapsed = time.time() - animate_start
    result_writer, sbs_writer, _ = writers
    return {
        "result_video": os.path.abspath(result_writer.path),
        "side_by_side": os.path.abspath(sbs_writer.path) if sbs_writer is not None else None,
        "num_frames": done, "fps": fps, "audio": bool(audio_from) and output_kind(result_video) == "video",
        "anchor_frame": anchor_index, "size": list(size), "mode": mode, "crop": crop,
        "device": str(dev), "seconds": time.time() - start,
        "frames_per_second": done / elapsed if elapsed > 0 else float("inf"),
        "paste_back": paste is not None, "result_size": list(paste.shape) if paste is not None else list(size),
        "frames_read": done, "source_error": None, "precision": chosen.name, "precision_why": chosen.why,
    }


def _check_stream(driving: str, find_best_frame: bool, best_frame: int | None, max_frames: int | None,
                  max_seconds: float | None) -> bool:
    """True for a URL, stream or camera (read once, in order); one-line AnimateErrors for options it cannot take."""
    from utils.live import is_camera, is_live_source

    limits = max_frames is not None or max_seconds is not None
    if (max_frames is not None and max_frames < 1) or (max_seconds is not None and max_seconds <= 0):
        raise AnimateError(f"--live_frames and --live_seconds must be positive, got {max_frames} and {max_seconds}")
    if not is_live_source(driving):
        if limits:
            raise AnimateError("--live_frames / --live_seconds stop a URL, stream or camera (or --live); "
                               f"{driving} is a file: every frame of it is animated")
        return False
    if find_best_frame or best_frame is not None:
        raise AnimateError(f"--find_best_frame / --best_frame need a video file: {driving} is read once, in order "
                           f"(its first frame is the anchor)")
    if is_camera(driving) and not limits:
        raise AnimateError(f"{driving} is a camera: give --live_frames or --live_seconds to say when the recording "
                           f"ends (or --live to watch it in real time)")
    return True


def _run_stream(config, checkpoint, source_image, driving: str, result_video: str, sbs_path: str | None, mode: str,
                crop: str, sbs_in_result: bool, dev: torch.device, precision: str, batch_size: int,
                progress: Callable[[int, int], None] | None, img_shape: tuple[int, int] | None, show_progress: bool,
                paste_back: bool, max_size: int | None, colour_match: bool, max_frames: int | None,
                max_seconds: float | None, start: float) -> dict:
    """`run_animation` for a URL, stream or camera: every frame read is animated, in order, and written
    (`utils.live.LiveSource(lossless=True)`, `every_frame`); checks everything before it connects."""
    from modules.family import load_config
    from utils.crop import FACE_SCALE, PERSON_SCALE, centre_box, crop_resize, detector, full_box
    from utils.live import LiveSource, OnlineBoxTracker, every_frame

    cfg = load_config(config)
    size = _frame_size(cfg, img_shape, config, dev, batch_size)
    source, paste = _source(source_image, crop, size, paste_back, max_size, colour_match)
    models = cached_models(cfg, os.fspath(checkpoint), mode, dev)
    tracker = None
    if crop in ("face", "person"):
        tracker = OnlineBoxTracker(detector(crop), FACE_SCALE if crop == "face" else PERSON_SCALE)
    reader = LiveSource(driving, lossless=True)
    counts: dict = {}

    def driving_frames() -> Iterator[np.ndarray]:
        for frame in every_frame(reader, max_frames, max_seconds, counts):
            height, width = frame.shape[:2]
            box = tracker.update(frame) if tracker is not None else \
                (centre_box if crop == "centre" else full_box)(height, width)
            yield crop_resize(frame, box, size)  # H x W x 3 at the model's size

    try:
        chosen = _precision(precision, dev, cfg)
        animator = animator_class(cfg)(models, to_tensor([source], dev), mode=mode, precision=chosen.name)
        writers = _open_writers(result_video, sbs_path, reader.fps, None, None)
        animate_start = time.time()
        done = _write_all(animator, driving_frames(), source, dev, batch_size, writers, sbs_in_result, None,
                          progress, show_progress, driving, paste)
    finally:
        reader.close()
    elapsed = time.time() - animate_start
    result_writer, sbs_writer, _ = writers
    return {
        "result_video": os.path.abspath(result_writer.path),
        "side_by_side": os.path.abspath(sbs_writer.path) if sbs_writer is not None else None,
        "num_frames": done, "fps": reader.fps, "audio": False, "anchor_frame": 0, "size": list(size), "mode": mode,
        "crop": crop, "device": str(dev), "seconds": time.time() - start,
        "frames_per_second": done / elapsed if elapsed > 0 else float("inf"),
        "paste_back": paste is not None, "result_size": list(paste.shape) if paste is not None else list(size),
        "frames_read": counts.get("read", done), "source_error": counts.get("error"),
        "precision": chosen.name, "precision_why": chosen.why,
    }


# ----------------------------------------------------------------------------- command line

def _shape(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (e.g. 256,256), got {text!r}") from None
    if len(parts) < 2 or min(parts[:2]) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W (e.g. 256,256), got {text!r}")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Animate a photo with a driving video (TPSMM, FOMM or MRAA: the config's family). "
                    "Output: .mp4 with the driving audio, "
                    ".gif, or a folder of PNG frames.")
    parser.add_argument("--config", required=True, help="model config (YAML), e.g. config/vox-256.yaml")
    parser.add_argument("--checkpoint", required=True, help="checkpoint matching the config")
    parser.add_argument("--source_image", required=True, help="photo to animate (jpg/png/..., any size)")
    parser.add_argument("--driving_video", required=True, help="video giving the motion (mp4/mov/avi/webm/gif/frame folder)")
    parser.add_argument("--result_video", default=None,
                        help="output: .mp4/.mov/.mkv/.avi/.webm, .gif, or a folder name for PNG frames (default result.mp4); "
                             "with --live also a stream URL (tcp://HOST:PORT?listen=1, udp://...), default a window")
    parser.add_argument("--mode", default="relative", choices=MODES, help="animation mode (default relative)")
    parser.add_argument("--crop", default="centre", choices=("centre", "center", "none", "face", "person"),
                        help="fit inputs to the model: centre square, none (resize whole frame), "
                             "or auto-crop around the face / person (tracked over the video)")
    parser.add_argument("--find_best_frame", action="store_true",
                        help="start from the driving frame whose face pose best matches the source")
    parser.add_argument("--best_frame", type=int, default=None, help="start from this driving frame (index)")
    parser.add_argument("--no-audio", "--no_audio", dest="audio", action="store_false",
                        help="do not copy the driving video's audio track")
    parser.add_argument("--side_by_side", nargs="?", const=True, default=None, metavar="PATH",
                        help="source | driving | result: alone, the result itself; with PATH, an extra output")
    parser.add_argument("--img_shape", type=_shape, default=None, metavar="H,W",
                        help="animate at this size (default: the config's frame_shape)")
    parser.add_argument("--paste_back", action="store_true",
                        help="full-frame result: the whole photo with the animated face/person pasted back")
    parser.add_argument("--max_size", type=int, default=1920,
                        help="with --paste_back: long side of the result at most this (default 1920; 0 = the photo's)")
    parser.add_argument("--colour_match", "--color_match", dest="colour_match", action="store_true",
                        help="with --paste_back: match the animated crop's colours to the photo around it")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (same as --device cpu)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: CUDA if available)")
    parser.add_argument("--precision", default=None, choices=PRECISION_CHOICES,
                        help="compute precision: auto = bf16 where the device runs it natively (CPUs with AVX-512 "
                             "BF16 or AMX, CUDA 8.0+), fp16 on older CUDA, else fp32 (default fp32, exact; with "
                             "--live: auto); an emulated bf16/fp16 runs with a warning")
    parser.add_argument("--batch_size", type=int, default=8, help="driving frames per batch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    live = parser.add_argument_group("live animation (docs/web.md, \"Live animation\")")
    live.add_argument("--live", action="store_true",
                      help="real time: --driving_video is a camera (/dev/video0), a stream URL or a file played "
                           "at its rate; newest frame first, stale frames dropped; a window when there is a display")
    live.add_argument("--live_frames", type=int, default=None,
                      help="stop after this many frames (without --live: read this many from a URL, stream or "
                           "camera, every one animated)")
    live.add_argument("--live_seconds", type=float, default=None,
                      help="stop after this many seconds (without --live: the frames a URL, stream or camera "
                           "gives in that time, every one animated)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so the same clean-up as Ctrl-C runs (the exit code differs)."""


def main(argv: list[str] | None = None) -> int:
    from utils.errors import UserError

    args = build_parser().parse_args(argv)

    def terminated(signum, frame):  # `kill` / a scheduler's SIGTERM: clean up like Ctrl-C, exit 143
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated) if threading.current_thread() is threading.main_thread() else None
    from utils.live import is_live_source

    if args.live:  # real time: stale frames dropped; without --live every frame of any source is written
        try:
            return _main_live(args)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:  # before the session runs (once it runs, Ctrl-C / SIGTERM end it normally)
            stopped = isinstance(err, Terminated)
            print(f"error: {'terminated (SIGTERM)' if stopped else 'interrupted'}", file=sys.stderr)
            return 143 if stopped else 130
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    try:
        info = run_animation(
            config=args.config, checkpoint=args.checkpoint, source_image=args.source_image,
            driving_video=args.driving_video, result_video=args.result_video or "result.mp4", mode=args.mode, crop=args.crop,
            find_best_frame=args.find_best_frame, audio=args.audio, side_by_side=args.side_by_side,
            device="cpu" if args.cpu else args.device, precision=args.precision or "fp32", batch_size=args.batch_size,
            img_shape=args.img_shape, best_frame=args.best_frame, show_progress=not args.quiet,
            paste_back=args.paste_back, max_size=args.max_size, colour_match=args.colour_match,
            max_frames=args.live_frames, max_seconds=args.live_seconds)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError:
        print("error: out of GPU memory; try a smaller --batch_size or --cpu", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:  # past the size checks' lower bounds (numpy / torch's CPU allocator)
        if isinstance(err, RuntimeError) and "can't allocate memory" not in str(err):
            raise
        print("error: out of memory; try a smaller --batch_size, --img_shape or --max_size", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # 130 = 128 + SIGINT, 143 = 128 + SIGTERM (ARCHITECTURE.md, "Errors and exit codes")
        stopped = isinstance(err, Terminated)
        print(f"error: {'terminated (SIGTERM)' if stopped else 'interrupted'}; no output written", file=sys.stderr)
        return 143 if stopped else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    extra = [f"{info['num_frames']} frames", f"{info['fps']:.2f} fps",
             f"{info['frames_per_second']:.1f} frames/s on {info['device']}",
             f"{info['precision']} ({info['precision_why']})"]
    if info["anchor_frame"]:
        extra.append(f"anchor frame {info['anchor_frame']}")
    if info["audio"]:
        extra.append("with audio")
    if info["paste_back"]:
        extra.append(f"pasted back into the photo, {info['result_size'][1]}x{info['result_size'][0]} px")
    if is_live_source(args.driving_video):
        extra.insert(1, "every frame read from the stream, none dropped")
    print(f"wrote {info['result_video']} ({', '.join(extra)})")
    if info["source_error"]:
        print(f"warning: {args.driving_video} broke off after {info['frames_read']} frames ({info['source_error']}); "
              f"the result holds those frames", file=sys.stderr)
    if info["side_by_side"]:
        print(f"wrote {info['side_by_side']}")
    return 0


def _main_live(args: argparse.Namespace) -> int:
    """`--live` (web/live.py, `animate_live`): prints a one-line summary with frames/s and latency."""
    from web.live import animate_live

    info = animate_live(args.config, args.checkpoint, args.source_image, args.driving_video, args.result_video,
                        mode=args.mode, crop=args.crop, device="cpu" if args.cpu else args.device,
                        precision=args.precision, max_frames=args.live_frames, max_seconds=args.live_seconds,
                        img_shape=args.img_shape)
    print(f"live: {info['frames']} frames in {info['seconds']:.1f} s ({info['frames_per_second']:.1f} frames/s, "
          f"latency {info['latency_ms_mean']:.0f} ms mean / {info['latency_ms_p95']:.0f} ms p95, "
          f"{info['dropped']} stale frames dropped, {info['precision']} on {info['device']})"
          + (f"; wrote {info['result_video']}" if info["result_video"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
