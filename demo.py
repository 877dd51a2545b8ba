"""The reference demo module, for the three families: its functions, their signatures and its command line.

Code written for the published TPSMM, FOMM or MRAA demo runs unchanged:

    from demo import load_checkpoints, make_animation
    # TPSMM (config/vox-256.yaml, ...):
    inpainting, kp_detector, dense_motion, avd = load_checkpoints(config_path, checkpoint_path, device="cpu")
    frames = make_animation(source_image, driving_video, inpainting, kp_detector, dense_motion, avd,
                            device="cpu", mode="relative")
    # FOMM (config/fomm/vox-256.yaml, ...):
    generator, kp_detector = load_checkpoints(config_path, checkpoint_path, cpu=True)
    frames = make_animation(source_image, driving_video, generator, kp_detector, relative=True,
                            adapt_movement_scale=True, cpu=True)
    # MRAA (config/mraa/vox256.yaml, ...):
    generator, region_predictor, avd_network = load_checkpoints(config_path, checkpoint_path, cpu=True)
    frames = make_animation(source_image, driving_video, generator, region_predictor, avd_network,
                            animation_mode="relative", cpu=True)

The family comes from the config and the checkpoint (a FOMM checkpoint given `config/vox-256.yaml`,
the FOMM reference's path, uses `config/fomm/vox-256.yaml`), never from the name imported.
`source_image` is an H x W x 3 float array in [0, 1], `driving_video` a list (or array) of
such frames; the result is a list of H x W x 3 float32 frames. The frames are computed by
the framework's engines (`modules.animation.Animator`, `modules.fomm.animation.FOMMAnimator`,
`modules.mraa.animation.MRAAAnimator`: source terms once per video, driving frames in batches),
not by the reference's loop.

    python demo.py --config config/vox-256.yaml --checkpoint checkpoints/vox.pth.tar \\
        --source_image s.jpg --driving_video d.mp4 [--result_video result.mp4] [--img_shape 256,256] \\
        [--mode relative|standard|avd] [--find_best_frame] [--cpu]
    python demo.py --config config/fomm/vox-256.yaml --checkpoint vox-cpk.pth.tar \\
        --source_image s.jpg --driving_video d.mp4 [--relative] [--adapt_scale] [--audio] [--best_frame N]
    python demo.py --config config/mraa/vox256.yaml --checkpoint vox256.pth \\
        --source_image s.jpg --driving_video d.mp4 [--mode avd|relative|standard] [--img_shape 256,256] [--cpu]

The reference's defaults hold here (whole frames resized, no crop; no audio unless `--audio`;
FOMM absolute motion unless `--relative`; MRAA mode avd, refused with a one-line error when the
checkpoint has no avd_network instead of animating with an untrained one); `animate.py` is the
framework's own command with its own defaults. `make demo` runs `demo_train.py`.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings
import zipfile
from typing import Sequence

import numpy as np
import torch
from torch import nn

from modules.animation import relative_kp  # noqa: F401  (the reference's demo.relative_kp)
from modules.fomm.animation import normalize_kp  # noqa: F401  (the reference's FOMM demo.normalize_kp)
from utils.frame_size import frame_size

__all__ = ["load_checkpoints", "make_animation", "relative_kp", "normalize_kp", "find_best_frame", "frame_size",
           "resolve_config", "main"]

BATCH = 8  # driving frames per engine call

# ----------------------------------------------------------------------------- the reference API


def _resolve_device(device: str | torch.device | None, cpu: bool) -> torch.device:
    """TPSMM's `device` or FOMM's `cpu` flag -> a device (CUDA when asked for and available, else the CPU)."""
    if cpu:
        return torch.device("cpu")
    if device is None:
        if not torch.cuda.is_available():
            warnings.warn("CUDA is not available: running on the CPU", stacklevel=3)
            return torch.device("cpu")
        return torch.device("cuda")
    return torch.device(device)


def _checkpoint_entries(checkpoint_path: str) -> set | None:
    """The top-level keys of a checkpoint (memory-mapped where possible), or None when unreadable."""
    try:
        try:
            data = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, ValueError):  # legacy (non-zip) files cannot be memory-mapped
            data = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, zipfile.BadZipFile):
        # unreadable: load_checkpoint reports it with its own one-line message
        return None
    return set(data) if isinstance(data, dict) else None


def _has_network(checkpoint_path: str, name: str) -> bool:
    """Whether the checkpoint has an entry `name` (an unreadable file answers True: the loader reports it)."""
    data = _checkpoint_entries(checkpoint_path) if os.path.isfile(checkpoint_path) else None
    return data is None or name in data


def _checkpoint_family(checkpoint_path: str) -> str | None:
    """'mraa' (a `region_predictor` entry), 'fomm' (a `generator`), 'tpsmm' (an `inpainting_network`),
    or None when unreadable."""
    data = _checkpoint_entries(checkpoint_path)
    if data is None:
        return None
    if "region_predictor" in data:
        return "mraa"
    return "fomm" if "generator" in data else "tpsmm" if "inpainting_network" in data else None


def resolve_config(config_path: str, checkpoint_path: str) -> str:
    """The config of the checkpoint's family: a FOMM checkpoint given the TPSMM `config/<name>.yaml`
    (the FOMM reference's path) uses `config/fomm/<name>.yaml`, and the other way round."""
    from modules.family import load_config

    family = load_config(config_path)["model_family"]
    found = _checkpoint_family(checkpoint_path) if os.path.isfile(checkpoint_path) else None
    if found is None or found == family:
        return config_path
    folder, name = os.path.split(os.path.abspath(config_path))
    top = os.path.dirname(folder) if family != "tpsmm" else folder  # config/ (TPSMM) or config/<family>/
    other = os.path.join(top, name) if found == "tpsmm" else os.path.join(top, found, name)
    if os.path.isfile(other) and load_config(other)["model_family"] == found:
        print(f"note: {checkpoint_path} is a {found.upper()} checkpoint: using {other}", file=sys.stderr)
        return other
    return config_path


def load_checkpoints(config_path: str, checkpoint_path: str, device: str | torch.device | None = None,
                     cpu: bool = False) -> tuple[nn.Module, ...]:
    """Networks of the config's family, weights loaded (keys and shapes checked), eval mode, on the device.

    TPSMM: `load_checkpoints(config_path, checkpoint_path, device)` -> (inpainting_network,
    kp_detector, dense_motion_network, avd_network); the AVD network keeps its initial
    weights when the checkpoint has none (as in the reference).
    FOMM: `load_checkpoints(config_path, checkpoint_path, cpu=False)` -> (generator, kp_detector);
    `cpu=False` means CUDA (the CPU, with a warning, when there is none).
    MRAA: `load_checkpoints(config_path, checkpoint_path, cpu=False)` -> (generator, region_predictor,
    avd_network), the generator built from the config (its `revert_axis_swap` honoured: the published
    loader ignored it); the AVD network keeps its initial weights, with a warning, when the checkpoint
    has none (the published loader did so silently). `bg_predictor` is not loaded (animation never uses it).
    A bool third argument is FOMM's and MRAA's positional `cpu`.
    """
    from modules import build_models, load_checkpoint
    from modules.family import load_config

    if isinstance(device, bool):  # FOMM's load_checkpoints(config, checkpoint, True)
        device, cpu = None, device
    config = load_config(resolve_config(config_path, checkpoint_path))
    dev = _resolve_device(device, cpu)
    models = build_models(config)
    if config["model_family"] == "fomm":
        names = ("generator", "kp_detector")
    elif config["model_family"] == "mraa":
        names = ("generator", "region_predictor", "avd_network")
    else:
        names = ("inpainting_network", "kp_detector", "dense_motion_network", "avd_network")
    chosen = {name: models[name] for name in names}
    load_checkpoint(checkpoint_path, chosen, map_location="cpu", strict=False)  # strict except avd_network
    if config["model_family"] == "mraa" and not _has_network(checkpoint_path, "avd_network"):
        warnings.warn(f"{checkpoint_path} has no avd_network: mode 'avd' would use an untrained one "
                      f"(use 'standard' or 'relative')", stacklevel=2)
    return tuple(chosen[name].eval().to(dev) for name in names)


def _frames_tensor(frames: Sequence[np.ndarray] | np.ndarray, device: torch.device) -> torch.Tensor:
    """H x W x 3 float frames in [0, 1] -> T x 3 x H x W float32 on `device`."""
    array = np.asarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames, dtype=np.float32)
    if array.ndim != 4 or array.shape[-1] < 3:
        raise ValueError(f"frames must be H x W x 3 arrays, got shape {array.shape[1:]}")
    return torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(0, 3, 1, 2).to(device)  # T x 3 x H x W


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _run(animator, driving_video: Sequence[np.ndarray] | np.ndarray, device: torch.device) -> list[np.ndarray]:
    """Feed the driving frames to an engine in batches; H x W x 3 float32 numpy frames back."""
    out: list[np.ndarray] = []
    for start in range(0, len(driving_video), BATCH):
        batch = _frames_tensor(driving_video[start:start + BATCH], device)
        prediction = animator(batch)  # B x 3 x H x W
        out.extend(prediction.permute(0, 2, 3, 1).float().cpu().numpy())
    return out


def _is_fomm_generator(module) -> bool:
    from modules.checkpoint import unwrap
    from modules.fomm.generator import FOMMGenerator

    return isinstance(unwrap(module), FOMMGenerator) if isinstance(module, nn.Module) else False


def make_animation(source_image: np.ndarray, driving_video: Sequence[np.ndarray] | np.ndarray,
                   inpainting_network: nn.Module | None = None, kp_detector: nn.Module | None = None,
                   dense_motion_network: nn.Module | bool | None = None, avd_network: nn.Module | bool | None = None,
                   device: str | torch.device | bool | None = None, mode: str = "relative", *,
                   generator: nn.Module | None = None, relative: bool = True, adapt_movement_scale: bool = True,
                   cpu: bool = False, region_predictor: nn.Module | None = None,
                   animation_mode: str | None = None, precision: str = "fp32") -> list[np.ndarray]:
    """Animate `source_image` (H x W x 3, [0, 1]) with `driving_video` (frames like it) -> list of float32 frames.

    precision (keyword, every family; not in the reference): 'fp32' (default: the reference's output),
    'auto' (bf16 where the networks' device runs it natively, fp16 on older CUDA, else fp32:
    `utils.precision`), 'bf16' or 'fp16'.

    TPSMM: `make_animation(source_image, driving_video, inpainting_network, kp_detector,
    dense_motion_network, avd_network, device, mode='relative')`; mode 'relative'
    (`relative_kp` from the first driving frame), 'standard' (absolute) or 'avd'.
    FOMM: `make_animation(source_image, driving_video, generator, kp_detector, relative=True,
    adapt_movement_scale=True, cpu=False)` (the generator in the third place, or as `generator=`):
    relative movement and Jacobians, scaled by the hull-area ratio when `adapt_movement_scale`;
    absolute keypoints when `relative=False`. It runs where the networks are.
    MRAA: `make_animation(source_image, driving_video, generator, region_predictor, avd_network,
    animation_mode='standard', cpu=False)`: mode 'standard' (the driving regions), 'relative' (shift and
    affine relative to the first driving frame, scaled by the hull-area ratio) or 'avd'. It runs where
    the networks are.
    """
    from modules.checkpoint import unwrap

    if region_predictor is not None or _is_region_predictor(kp_detector):
        return _make_mraa(source_image, driving_video, generator if generator is not None else inpainting_network,
                          region_predictor if region_predictor is not None else kp_detector,
                          dense_motion_network, avd_network, animation_mode, device, precision)
    if generator is not None or _is_fomm_generator(inpainting_network):
        if generator is None:
            generator = inpainting_network
            # FOMM's positional (relative, adapt_movement_scale, cpu) land in the TPSMM slots
            if isinstance(dense_motion_network, bool):
                relative = dense_motion_network
            if isinstance(avd_network, bool):
                adapt_movement_scale = avd_network
        return _make_fomm(source_image, driving_video, unwrap(generator), unwrap(kp_detector), relative,
                          adapt_movement_scale, precision)
    if inpainting_network is None or kp_detector is None or dense_motion_network is None:
        raise TypeError("make_animation needs inpainting_network, kp_detector and dense_motion_network (TPSMM) "
                        "or generator and kp_detector (FOMM)")
    from modules.animation import Animator

    dev = _device_of(kp_detector) if device is None or isinstance(device, bool) else torch.device(device)
    models = {"inpainting_network": unwrap(inpainting_network), "kp_detector": unwrap(kp_detector),
              "dense_motion_network": unwrap(dense_motion_network)}
    if isinstance(avd_network, nn.Module):
        models["avd_network"] = unwrap(avd_network)
    source = _frames_tensor([source_image], dev)  # 1 x 3 x H x W
    animator = Animator(models, source, mode=mode, precision=precision)  # the first driving frame: relative anchor
    return _run(animator, driving_video, dev)


def _is_region_predictor(module) -> bool:
    from modules.checkpoint import unwrap
    from modules.mraa.region_predictor import RegionPredictor

    return isinstance(unwrap(module), RegionPredictor) if isinstance(module, nn.Module) else False


def _make_mraa(source_image, driving_video, generator: nn.Module | None, region_predictor: nn.Module,
               avd_network, mode_slot, animation_mode: str | None, cpu_slot,
               precision: str = "fp32") -> list[np.ndarray]:
    """MRAA's make_animation. The published positional order (generator, region_predictor, avd_network,
    animation_mode, cpu) lands in the TPSMM slots: the mode may come in `mode_slot` (a str), `cpu` in
    `cpu_slot` (a bool, unused: the networks' device decides)."""
    from modules.checkpoint import unwrap
    from modules.mraa.animation import MRAAAnimator

    if isinstance(mode_slot, str):
        if animation_mode is not None and animation_mode != mode_slot:
            raise TypeError(f"make_animation got two animation modes: {mode_slot!r} and {animation_mode!r}")
        animation_mode = mode_slot
    animation_mode = animation_mode or "standard"  # the published default
    if generator is None:
        raise TypeError("MRAA make_animation needs the generator")
    models = {"generator": unwrap(generator), "region_predictor": unwrap(region_predictor)}
    avd = avd_network if isinstance(avd_network, nn.Module) else mode_slot  # positional, or avd_network=
    if isinstance(avd, nn.Module):
        models["avd_network"] = unwrap(avd)
    dev = _device_of(region_predictor)
    source = _frames_tensor([source_image], dev)  # 1 x 3 x H x W
    from modules.animation import engine_precision

    precision = engine_precision(precision, "MRAA", dev)[0]  # 'auto' decided on the networks' device
    animator = MRAAAnimator(models, source, mode=animation_mode, precision=precision)  # relative anchor: frame 0
    return _run(animator, driving_video, dev)


def _make_fomm(source_image, driving_video, generator: nn.Module, kp_detector: nn.Module, relative: bool,
               adapt_movement_scale: bool, precision: str = "fp32") -> list[np.ndarray]:
    from modules.fomm.animation import FOMMAnimator

    if kp_detector is None:
        raise TypeError("FOMM make_animation needs kp_detector")
    dev = _device_of(kp_detector)
    source = _frames_tensor([source_image], dev)
    animator = FOMMAnimator({"kp_detector": kp_detector, "generator": generator}, source,
                            use_relative_movement=bool(relative), use_relative_jacobian=bool(relative),
                            adapt_movement_scale=bool(adapt_movement_scale), precision=precision)
    return _run(animator, driving_video, dev)


def find_best_frame(source: np.ndarray, driving: Sequence[np.ndarray], cpu: bool = False) -> int:
    """Index of the driving frame whose face landmarks (normalised by position and hull area) best match the source's.

    Landmarks from face-alignment when its weights are in torch hub's cache, else dlib
    (offline); both run on the CPU here, so `cpu` is accepted for the reference's calls. A
    source or video without a face stops with a one-line error (the reference returned 0).
    """
    from skimage import img_as_ubyte

    from utils.crop import best_frame

    index, _ = best_frame(img_as_ubyte(np.clip(source, 0, 1)), (img_as_ubyte(np.clip(f, 0, 1)) for f in driving))
    return int(index)


# ----------------------------------------------------------------------------- the command line

def _reference_defaults(family: str) -> dict[str, str]:
    """Each reference demo's file defaults."""
    if family == "fomm":
        return {"checkpoint": "vox-cpk.pth.tar", "source_image": "sup-mat/source.png",
                "driving_video": "driving.mp4", "result_video": "result.mp4"}
    if family == "mraa":
        return {"checkpoint": "ted384.pth", "source_image": "sup-mat/source.png",
                "driving_video": "sup-mat/driving.mp4", "result_video": "result.mp4"}
    return {"checkpoint": "checkpoints/vox.pth.tar", "source_image": "./assets/source.png",
            "driving_video": "./assets/driving.mp4", "result_video": "./result.mp4"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path to config")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint (default: checkpoints/vox.pth.tar; FOMM: vox-cpk.pth.tar)")
    parser.add_argument("--source_image", default=None, help="source image (default ./assets/source.png)")
    parser.add_argument("--driving_video", default=None, help="driving video (default ./assets/driving.mp4)")
    parser.add_argument("--result_video", default=None,
                        help="result (default ./result.mp4; .gif, or a name without extension for PNG frames)")
    parser.add_argument("--img_shape", default=None, type=lambda x: list(map(int, x.split(","))),
                        help="H,W to animate at (default: the config's frame size: 256,256; ted-384: 384,384)")
    parser.add_argument("--mode", default=None, choices=["standard", "relative", "avd"],
                        help="TPSMM and MRAA animation mode (default: TPSMM relative, MRAA avd)")
    parser.add_argument("--find_best_frame", dest="find_best_frame", action="store_true",
                        help="start from the frame that is the most aligned with the source (face-alignment/dlib)")
    parser.add_argument("--best_frame", dest="best_frame", type=int, default=None, help="(FOMM) set the start frame")
    parser.add_argument("--cpu", dest="cpu", action="store_true", help="cpu mode")
    parser.add_argument("--relative", dest="relative", action="store_true",
                        help="(FOMM) relative keypoint displacement (inherit object proportions from the video)")
    parser.add_argument("--adapt_scale", dest="adapt_scale", action="store_true",
                        help="(FOMM) adapt movement scale based on convex hull of keypoints")
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"),
                        help="fp32 (default: the reference's output), auto (bf16 where the device runs it natively, "
                             "fp16 on older CUDA, else fp32), bf16 or fp16")
    parser.add_argument("--audio", dest="audio", action="store_true",
                        help="copy the driving video's audio track to the result")
    return parser


def _to_float(image: np.ndarray) -> np.ndarray:
    """uint8/uint16/float image -> float64 in [0, 1], RGB (grey repeated, alpha dropped)."""
    from skimage import img_as_float

    image = img_as_float(np.asarray(image))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def read_inputs(source_path: str, driving_path: str, img_shape: Sequence[int]) -> tuple[np.ndarray, list, float]:
    """The reference's reading: imageio, then skimage `resize` of the whole frame to `img_shape` (no crop).

    A folder of frames (sorted, read by imageio at full depth: 16-bit PNG, float TIFF) is a video too.
    """
    import imageio.v2 as imageio
    from skimage.transform import resize

    from utils.video import open_video

    shape = tuple(int(s) for s in img_shape[:2])
    source = resize(_to_float(imageio.imread(source_path)), shape)[..., :3]
    fps = 25.0
    if os.path.isdir(driving_path):
        names = sorted(n for n in os.listdir(driving_path) if not n.startswith("."))
        raw = [imageio.imread(os.path.join(driving_path, n)) for n in names]
    else:
        reader = open_video(driving_path)
        fps = float(reader.fps) if getattr(reader, "fps", None) else fps
        raw = list(reader)
    driving = [resize(_to_float(frame), shape)[..., :3] for frame in raw]
    return source, driving, fps


def write_result(path: str, frames: list[np.ndarray], fps: float, audio_from: str | None) -> None:
    """`img_as_ubyte` frames to a video (H.264 mp4, gif, ...) or a PNG folder, renamed into place when complete."""
    from skimage import img_as_ubyte

    from utils.media import open_writer

    with open_writer(path, fps=fps, audio_from=audio_from, num_frames=len(frames)) as writer:
        for frame in frames:
            writer.write(img_as_ubyte(np.clip(frame, 0, 1)))


def animate_from_args(args: argparse.Namespace) -> str:
    """The reference demo's main(): read, (best frame), make_animation, write."""
    from modules.family import load_config
    from utils.errors import UserError
    from utils.media import has_audio

    family = load_config(args.config)["model_family"]
    for key, value in _reference_defaults(family).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.config = resolve_config(args.config, args.checkpoint)
    config = load_config(args.config)
    family = config["model_family"]
    if args.mode is None:  # each reference demo's default
        args.mode = "avd" if family == "mraa" else "relative"
    img_shape = args.img_shape or frame_size(config, args.config)
    source, driving, fps = read_inputs(args.source_image, args.driving_video, img_shape)
    device = torch.device("cpu") if args.cpu or not torch.cuda.is_available() else torch.device("cuda")
    if family == "fomm":
        networks = load_checkpoints(args.config, args.checkpoint, cpu=device.type == "cpu")
        options = dict(relative=args.relative, adapt_movement_scale=args.adapt_scale, cpu=device.type == "cpu")
    elif family == "mraa":
        if args.mode == "avd" and not _has_network(args.checkpoint, "avd_network"):
            raise UserError(f"--mode avd needs a checkpoint with an avd_network; {args.checkpoint} has none: "
                            f"use --mode relative or --mode standard")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the missing-AVD warning: answered above
            networks = load_checkpoints(args.config, args.checkpoint, cpu=device.type == "cpu")
        options = dict(animation_mode=args.mode)
    else:
        networks = load_checkpoints(args.config, args.checkpoint, device=device)
        options = dict(device=device, mode=args.mode)
    if args.precision != "fp32":
        from utils.precision import resolve_precision

        chosen = resolve_precision(args.precision, device)
        print(f"warning: {chosen.warning}" if chosen.warning else chosen.line(), file=sys.stderr)
        options["precision"] = chosen.name
    start = None
    if args.find_best_frame or args.best_frame is not None:
        start = args.best_frame if args.best_frame is not None else find_best_frame(source, driving, cpu=args.cpu)
        print(f"best frame: {start}")
    if start is None:
        predictions = make_animation(source, driving, *networks, **options)
    else:  # animate forwards and backwards from the best frame, as the reference does
        forward = make_animation(source, driving[start:], *networks, **options)
        backward = make_animation(source, driving[:start + 1][::-1], *networks, **options)
        predictions = backward[::-1] + forward[1:]
    audio = args.driving_video if args.audio and not os.path.isdir(args.driving_video) \
        and has_audio(args.driving_video) else None
    write_result(args.result_video, predictions, fps, audio)
    return args.result_video


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from utils.errors import UserError

    try:
        path = animate_from_args(args)
    except (UserError, OSError) as err:  # bad input; an OSError is an unreadable input file
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
