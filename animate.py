"""Animate a photo with a driving video: `python animate.py --config C --checkpoint P --source_image I
--driving_video V --result_video R` (README, "Animate your own photo").

Any photo (jpg/png, RGBA, grayscale, any size) and any video (mp4/mov/avi/webm/gif, frame
folder; any size, length and frame rate). The video is decoded, animated in batches and
encoded as a stream, so memory does not grow with its length. The result has the driving
video's frame count and frame rate, and its audio track (mp4/mov/mkv/webm). It is written
under a temporary name and renamed when complete.

The command line and the web app share one code path: `run_animation(...)`.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from typing import Callable, Iterator

import numpy as np
import torch

from modules.animation import MODES, Animator, make_animation  # noqa: F401  (public API: animate.make_animation)
from utils.errors import UserError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Networks a checkpoint may lack for animation (loaded only when the mode needs them).
OPTIONAL_MODELS = ("avd_network", "bg_predictor", "discriminator")


class AnimateError(UserError):
    """Bad arguments or inputs for an animation (one-line, user-facing message)."""


# ----------------------------------------------------------------------------- set-up

def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps' or 'auto' (CUDA when available) -> torch.device, checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise AnimateError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AnimateError(f"device {device!r} asked for but CUDA is not available; use --cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AnimateError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise AnimateError("device 'mps' asked for but it is not available; use --cpu")
    return dev


def load_models(config: dict, checkpoint: str, mode: str, device: torch.device) -> dict[str, torch.nn.Module]:
    """Build the config's networks, load the checkpoint (strict for the networks used), eval mode, on `device`.

    Mode 'avd' also needs the checkpoint's avd_network (trained with run.py --mode train_avd).
    """
    from modules import CheckpointError, build_models, load_checkpoint

    models = build_models(config)
    needed = {name: m for name, m in models.items() if name not in OPTIONAL_MODELS}
    rest = load_checkpoint(checkpoint, needed, strict=True)
    if mode == "avd":
        if "avd_network" not in models:
            raise AnimateError("mode 'avd' is not available for this model family")
        if "avd_network" not in rest:
            raise AnimateError(f"mode 'avd' needs a checkpoint with an avd_network (train one with "
                               f"run.py --mode train_avd); {checkpoint} has none: use --mode relative")
        try:
            models["avd_network"].load_state_dict(rest["avd_network"], strict=True)
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[1 if len(str(err).strip().splitlines()) > 1 else 0].strip()
            raise CheckpointError(f"checkpoint {checkpoint}: avd_network does not match the config ({first[:200]})") from None
        needed["avd_network"] = models["avd_network"]
    for model in needed.values():
        model.eval().to(device)
    return needed


_MODEL_CACHE: dict[tuple, dict[str, torch.nn.Module]] = {}
_MODEL_CACHE_LOCK = threading.Lock()


def cached_models(config: dict, checkpoint: str, mode: str, device: torch.device) -> dict[str, torch.nn.Module]:
    """`load_models`, remembering the last result (keyed by config, checkpoint file and its mtime, mode, device).

    Repeated animations in one process (the web app, tests) skip rebuilding and reloading.
    The networks are only read during animation, never modified.
    """
    try:
        stat = os.stat(checkpoint)
    except OSError:
        return load_models(config, checkpoint, mode, device)  # raises the one-line "not found"
    key = (json.dumps(config, sort_keys=True, default=str), os.path.abspath(checkpoint), stat.st_mtime_ns,
           stat.st_size, mode == "avd", str(device))
    with _MODEL_CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()
            _MODEL_CACHE[key] = load_models(config, checkpoint, mode, device)
        return _MODEL_CACHE[key]


def size_multiple(config: dict) -> int:
    """Frame sides the TPSMM networks accept are multiples of this (hourglass pooling after the
    dense-motion downscale, and the inpainting encoder's down blocks); 1 for other families."""
    mp = config.get("model_params", {})
    dense, gen = mp.get("dense_motion_params", {}), mp.get("generator_params", {})
    if config.get("model_family") != "tpsmm" or "num_blocks" not in dense:
        return 1
    from fractions import Fraction
    from math import lcm

    per_dense = Fraction(2 ** int(dense["num_blocks"])) / Fraction(str(dense.get("scale_factor", 1)))
    return lcm(per_dense.numerator, 2 ** int(gen.get("num_down_blocks", 0)))  # smallest integer multiple of both


def _to_tensor(frames: list[np.ndarray] | np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float (T, 3, H, W) in [0, 1] on `device`."""
    array = np.ascontiguousarray(np.stack(frames) if isinstance(frames, list) else frames)
    return torch.from_numpy(array).to(device).permute(0, 3, 1, 2).float().div_(255.0)  # T x 3 x H x W


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (T, 3, H, W) in [0, 1] -> uint8 (T, H, W, 3) on the CPU."""
    return frames.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class _Engine:
    """Driving batches -> predictions, with `anchor` (T=1) as the relative-mode reference frame.

    TPSMM: one `Animator` (the source is encoded once); the anchor is prepended to the first
    batch, since the Animator takes the first frame it sees as the anchor. Other families
    (FOMM): `make_animation` per batch with the anchor prepended to every batch.
    """

    def __init__(self, models: dict, source: torch.Tensor, anchor: torch.Tensor, mode: str, precision: str,
                 device: torch.device):
        self.models, self.source, self.anchor, self.mode = models, source, anchor, mode
        dtype = PRECISIONS[precision]
        self.autocast = nullcontext()
        self.animator = None
        self.first = True
        if "generator" not in models:
            kwargs = {}
            if "precision" in inspect.signature(Animator).parameters:
                kwargs["precision"] = precision
            elif dtype is not None:
                self.autocast = torch.autocast(device_type=device.type, dtype=dtype)
            with self.autocast:
                self.animator = Animator(models, source, mode=mode, **kwargs)
        elif dtype is not None:
            self.autocast = torch.autocast(device_type=device.type, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            if self.animator is not None:
                if self.first:
                    self.first = False
                    return self.animator(torch.cat([self.anchor, driving], dim=0))[1:]
                return self.animator(driving)
            out = make_animation(self.source, torch.cat([self.anchor, driving], dim=0), self.models,
                                 mode=self.mode, batch_size=driving.shape[0] + 1)
            return out[1:]


def _side_by_side(source: np.ndarray, driving: np.ndarray, result: np.ndarray) -> np.ndarray:
    """source | driving | result, all (H, W, 3) uint8."""
    return np.concatenate([source, driving, result], axis=1)


# ----------------------------------------------------------------------------- the one code path

def run_animation(config, checkpoint, source_image, driving_video, result_video, mode: str = "relative",
                  crop: str = "centre", find_best_frame: bool = False, audio: bool = True,
                  side_by_side: str | bool | None = None, device: str = "cpu", precision: str = "fp32",
                  batch_size: int = 8, progress: Callable[[int, int], None] | None = None,
                  img_shape: tuple[int, int] | None = None, best_frame: int | None = None,
                  show_progress: bool = False) -> dict:
    """Animate `source_image` with `driving_video` and write `result_video`; return a summary dict.

    config: YAML path or dict; checkpoint: a checkpoint matching it.
    mode: 'relative' (motion relative to the anchor frame, TPSMM demo default), 'standard'
      (absolute driving keypoints) or 'avd' (MRAA-style AVD network; needs it in the checkpoint).
    crop: 'centre' (largest centred square), 'none' (whole frame, aspect not kept), 'face' or
      'person' (offline detector; the video's box is tracked and smoothed), for source and driving.
    result_video: .mp4/.mov/.mkv/.avi (H.264), .webm (VP9), .gif, or a folder (no extension) of PNGs.
    find_best_frame: the anchor is the driving frame whose face pose best matches the source
      (animating forwards and backwards from it, as the reference demo); best_frame: give it.
    audio: keep the driving video's audio track (video outputs only).
    side_by_side: a path writes source | driving | result there too; True makes result_video side by side.
    precision: 'fp32', 'bf16' or 'fp16'; progress: callable(done_frames, total_frames).
    img_shape: (H, W) to animate at; default the config's frame_shape.

    Returns {'result_video', 'side_by_side', 'num_frames', 'fps', 'audio', 'anchor_frame',
    'size', 'mode', 'crop', 'device', 'seconds', 'frames_per_second'}.
    Raises AnimateError / MediaError / CheckpointError / ConfigError / CropError (one-line messages)
    before anything is written; a failure while writing leaves no output file.
    """
    from modules import CheckpointError  # noqa: F401  (documented error type)
    from modules.family import load_config
    from utils.crop import CROPS, best_frame as find_best, centre_box, crop_resize, full_box, image_box, track_boxes
    from utils.media import WriterGroup, has_audio, open_upright_video, open_writer, output_kind, read_photo

    start = time.time()
    if mode not in MODES:
        raise AnimateError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    crop = "centre" if crop == "center" else crop
    if crop not in CROPS:
        raise AnimateError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if precision not in PRECISIONS:
        raise AnimateError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if int(batch_size) < 1:
        raise AnimateError(f"batch_size must be at least 1, got {batch_size}")
    batch_size = int(batch_size)
    result_video = os.fspath(result_video)
    kind = output_kind(result_video)
    sbs_path = None
    if isinstance(side_by_side, (str, os.PathLike)) and os.fspath(side_by_side):
        sbs_path = os.fspath(side_by_side)
        output_kind(sbs_path)
    for path in (source_image, driving_video):
        for out in filter(None, (result_video, sbs_path)):
            if os.path.abspath(os.fspath(path)) == os.path.abspath(out.rstrip("/" + os.sep)):
                raise AnimateError(f"the output {out} would overwrite the input {path}")
    dev = resolve_device(device)

    # Inputs and model, checked before anything is written.
    source_full = read_photo(os.fspath(source_image))  # upright by its EXIF orientation
    reader = open_upright_video(os.fspath(driving_video))  # upright by its display rotation
    total = reader.num_frames
    fps = float(reader.fps) if reader.fps and reader.fps > 0 else 25.0
    cfg = load_config(config)
    height, width = (int(img_shape[0]), int(img_shape[1])) if img_shape else tuple(cfg["dataset_params"]["frame_shape"][:2])
    multiple = size_multiple(cfg)
    if height < 1 or width < 1 or height % multiple or width % multiple:
        raise AnimateError(f"image size {height}x{width} does not fit this model: sides must be multiples of "
                           f"{multiple} (the config's size is {cfg['dataset_params']['frame_shape'][0]}x"
                           f"{cfg['dataset_params']['frame_shape'][1]})")
    models = cached_models(cfg, os.fspath(checkpoint), mode, dev)

    def frames_with_bar(frames: Iterator[np.ndarray], desc: str) -> Iterator[np.ndarray]:
        if not show_progress:
            return frames
        from tqdm import tqdm
        return iter(tqdm(frames, total=total, unit="frame", desc=desc, dynamic_ncols=True, file=sys.stderr))

    source = crop_resize(source_full, image_box(source_full, crop), (height, width))  # H x W x 3
    if crop in ("face", "person"):
        boxes = track_boxes(frames_with_bar(iter(reader), f"tracking the {crop}"), total, reader.height,
                            reader.width, crop, fps=fps)
        if boxes is None:
            raise AnimateError(f"no {crop} found in the driving video; use --crop centre")
    else:
        one = (centre_box if crop == "centre" else full_box)(reader.height, reader.width)
        boxes = np.repeat(one[None], total, axis=0)  # T x 4

    def driving_frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(reader):
            yield crop_resize(frame, boxes[min(index, total - 1)], (height, width))

    anchor_index = 0
    if best_frame is not None:
        anchor_index = int(best_frame)
        if not 0 <= anchor_index < total:
            raise AnimateError(f"best_frame {anchor_index} is outside the driving video (0..{total - 1})")
    elif find_best_frame:
        anchor_index, _ = find_best(source, frames_with_bar(driving_frames(), "finding the best frame"))
    anchor = crop_resize(reader.get_frames([anchor_index])[0], boxes[anchor_index], (height, width))

    with torch.inference_mode():
        engine = _Engine(models, _to_tensor([source], dev), _to_tensor([anchor], dev), mode, precision, dev)

    # Writers (temporary names until everything succeeded).
    audio_from = os.fspath(driving_video) if audio and has_audio(os.fspath(driving_video)) else None
    sbs_in_result = side_by_side is True
    writers = []
    try:
        result_writer = open_writer(result_video, fps=fps, audio_from=audio_from if kind == "video" else None,
                                    num_frames=total)
        writers.append(result_writer)
        sbs_writer = None
        if sbs_path is not None:
            sbs_writer = open_writer(sbs_path, fps=fps, audio_from=audio_from if output_kind(sbs_path) == "video" else None,
                                     num_frames=total)
            writers.append(sbs_writer)
    except BaseException:
        WriterGroup(writers).abort()
        raise
    group = WriterGroup(writers)

    done = 0
    animate_start = time.time()
    bar = None
    try:
        if show_progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="frame", desc="animating", dynamic_ncols=True, file=sys.stderr)
        if progress is not None:
            progress(0, total)

        def flush(batch: list[np.ndarray]) -> None:
            nonlocal done
            predictions = _to_uint8(engine(_to_tensor(batch, dev)))  # T x H x W x 3
            for drv, pred in zip(batch, predictions):
                both = _side_by_side(source, drv, pred)
                result_writer.write(both if sbs_in_result else pred)
                if sbs_writer is not None:
                    sbs_writer.write(both)
            done += len(batch)
            if bar is not None:
                bar.update(len(batch))
            if progress is not None:
                progress(done, total)

        batch: list[np.ndarray] = []
        for frame in driving_frames():
            batch.append(frame)
            if len(batch) == batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        if done == 0:
            raise AnimateError(f"no frames could be decoded from {driving_video}")
        group.finish_and_publish()
    except BaseException:
        group.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.time() - animate_start
    return {
        "result_video": os.path.abspath(result_writer.path),
        "side_by_side": os.path.abspath(sbs_writer.path) if sbs_writer is not None else None,
        "num_frames": done, "fps": fps, "audio": bool(audio_from) and kind == "video",
        "anchor_frame": anchor_index, "size": [height, width], "mode": mode, "crop": crop,
        "device": str(dev), "seconds": time.time() - start,
        "frames_per_second": done / elapsed if elapsed > 0 else float("inf"),
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
        description="Animate a photo with a driving video (TPSMM). Output: .mp4 with the driving audio, "
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
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (same as --device cpu)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: CUDA if available)")
    parser.add_argument("--precision", default=None, choices=tuple(PRECISIONS),
                        help="compute precision (default fp32; with --live: bf16 on capable CPUs, fp16 on CUDA)")
    parser.add_argument("--batch_size", type=int, default=8, help="driving frames per batch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    live = parser.add_argument_group("live animation (README, \"Live animation\")")
    live.add_argument("--live", action="store_true",
                      help="real time: --driving_video is a camera (/dev/video0), a stream URL or a file played "
                           "at its rate; newest frame first, stale frames dropped; a window when there is a display")
    live.add_argument("--live_frames", type=int, default=None, help="stop after this many animated frames")
    live.add_argument("--live_seconds", type=float, default=None, help="stop after this many seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    from modules import CheckpointError
    from utils.config import ConfigError
    from utils.crop import CropError
    from utils.video import MediaError

    args = build_parser().parse_args(argv)

    def terminated(signum, frame):  # `kill` / a scheduler's SIGTERM: clean up like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated) if threading.current_thread() is threading.main_thread() else None
    from utils.live import LiveError, is_live_source

    if args.live or is_live_source(args.driving_video):
        try:
            return _main_live(args)
        except (AnimateError, MediaError, CheckpointError, ConfigError, CropError, LiveError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    try:
        info = run_animation(
            config=args.config, checkpoint=args.checkpoint, source_image=args.source_image,
            driving_video=args.driving_video, result_video=args.result_video or "result.mp4", mode=args.mode, crop=args.crop,
            find_best_frame=args.find_best_frame, audio=args.audio, side_by_side=args.side_by_side,
            device="cpu" if args.cpu else args.device, precision=args.precision or "fp32", batch_size=args.batch_size,
            img_shape=args.img_shape, best_frame=args.best_frame, show_progress=not args.quiet)
    except (AnimateError, MediaError, CheckpointError, ConfigError, CropError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError:
        print("error: out of GPU memory; try a smaller --batch_size or --cpu", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no output written", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    extra = [f"{info['num_frames']} frames", f"{info['fps']:.2f} fps",
             f"{info['frames_per_second']:.1f} frames/s on {info['device']}"]
    if info["anchor_frame"]:
        extra.append(f"anchor frame {info['anchor_frame']}")
    if info["audio"]:
        extra.append("with audio")
    print(f"wrote {info['result_video']} ({', '.join(extra)})")
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
