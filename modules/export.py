"""ONNX export of the TPSMM keypoint detector and generator (dense motion + inpainting, TPSMM Sec. 3.2-3.3),
and of the MRAA region predictor and generator (`modules/mraa/export.py`).

    python -m modules.export --config config/vox-256.yaml --checkpoint checkpoints/vox.pth.tar \\
        --format onnx --out exported/ [--size 256] [--check]

writes `kp_detector.onnx` (image (B, 3, H, W) -> fg_kp (B, K*5, 2)) and
`generator.onnx` (source (B, 3, H, W), kp_driving, kp_source (B, K*5, 2) ->
prediction (B, 3, H, W)), batch dimension dynamic. The 8x8 TPS systems are solved by
unrolled Gauss-Jordan elimination (`geometry.export_friendly_solve`), so the graph has
no `Inverse`/linalg op. Relative-mode keypoint normalisation (a convex hull) stays in
the caller. `--check` runs both files with onnxruntime beside PyTorch on real frames (the
repository's clips, keypoints from the keypoint detector; `--check-inputs random` for uniform
noise and random keypoints), prints the largest difference, PyTorch's own response to 1e-6
noise on the source (the rounding scale the difference is measured against) and the time per
frame of each.

An MRAA config (`config/mraa/vox256.yaml`) writes `region_predictor.onnx` (image -> shift, affine,
covar) and `generator.onnx` (source, driving and source region params -> prediction) instead; see
`modules/mraa/export.py`. FOMM has no export.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch
from torch import nn

from modules.geometry import export_friendly_solve
from utils.errors import UserError
from utils.io import temporary_path

FORMATS = ("onnx",)
OPSET = 17  # GridSample needs >= 16
CHECK_INPUTS = ("real", "random")
_CLIPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
SOURCE_CLIP = os.path.join(_CLIPS, "single_face.mp4")
DRIVING_CLIP = os.path.join(_CLIPS, "carphone.mp4")


class ExportError(UserError):
    """A user-facing, one-line export problem."""


class KPDetectorExport(nn.Module):
    """image (B, 3, H, W) -> fg_kp (B, K*5, 2)."""

    def __init__(self, kp_detector: nn.Module):
        super().__init__()
        self.kp_detector = kp_detector

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.kp_detector(image)["fg_kp"]


class GeneratorExport(nn.Module):
    """(source, kp_driving, kp_source) -> prediction: dense motion then inpainting, eval semantics."""

    def __init__(self, dense_motion_network: nn.Module, inpainting_network: nn.Module):
        super().__init__()
        self.dense_motion_network = dense_motion_network
        self.inpainting_network = inpainting_network

    def forward(self, source: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        motion = self.dense_motion_network(source, kp_driving={"fg_kp": kp_driving}, kp_source={"fg_kp": kp_source})
        return self.inpainting_network(source, motion, with_warped_maps=False)["prediction"]


def _onnx_export(module: nn.Module, args: tuple, path: str, input_names: list[str], output_names: list[str]) -> None:
    tmp = temporary_path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, tmp, input_names=input_names, output_names=output_names,
                          dynamic_axes={name: {0: "batch"} for name in input_names + output_names},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    os.replace(tmp, path)


def export_onnx(models: dict[str, nn.Module], out_dir: str, size: int = 256, batch: int = 2) -> dict[str, str]:
    """Export kp_detector.onnx and generator.onnx into `out_dir`; returns {name: path}.

    `size` is the frame size traced (the graphs take that size; batch is dynamic).
    """
    from modules.family import family_of_models

    family = family_of_models(models).name
    if family == "mraa":
        return _export_mraa(models, out_dir, size, batch)
    if family != "tpsmm":
        raise ExportError("ONNX export covers the TPSMM family (kp_detector + dense motion + inpainting) and "
                          "MRAA (region predictor + generator)")
    os.makedirs(out_dir, exist_ok=True)
    kp = KPDetectorExport(models["kp_detector"]).eval()
    gen = GeneratorExport(models["dense_motion_network"], models["inpainting_network"]).eval()
    num_kp = models["dense_motion_network"].num_tps * 5
    image = torch.rand(batch, 3, size, size)
    kp_d = torch.rand(batch, num_kp, 2) * 2 - 1
    kp_s = torch.rand(batch, num_kp, 2) * 2 - 1
    paths = {"kp_detector": os.path.join(out_dir, "kp_detector.onnx"),
             "generator": os.path.join(out_dir, "generator.onnx")}
    with torch.no_grad(), export_friendly_solve():
        _onnx_export(kp, (image,), paths["kp_detector"], ["image"], ["fg_kp"])
        _onnx_export(gen, (image, kp_d, kp_s), paths["generator"], ["source", "kp_driving", "kp_source"],
                     ["prediction"])
    return paths


def _export_mraa(models: dict[str, nn.Module], out_dir: str, size: int, batch: int) -> dict[str, str]:
    """region_predictor.onnx and generator.onnx of an MRAA model (`modules/mraa/export.py`)."""
    from modules.mraa.export import INPUT_NAMES, OUTPUT_NAMES, export_inputs, export_modules, export_symbolics

    os.makedirs(out_dir, exist_ok=True)
    modules = export_modules(models)
    inputs = export_inputs(models, size, batch)
    paths = {name: os.path.join(out_dir, f"{name}.onnx") for name in modules}
    with torch.no_grad(), export_symbolics():
        for name, module in modules.items():
            _onnx_export(module, inputs[name], paths[name], INPUT_NAMES[name], OUTPUT_NAMES[name])
    return paths


def onnx_session(path: str, threads: int | None = None):
    """An onnxruntime CPU session for an exported file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # no busy-waiting threads between runs: they would steal the cores from whatever runs next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def real_check_frames(size: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Source (batch, 3, S, S): first frame of single_face.mp4; driving (batch, 3, S, S): carphone.mp4 frames.

    Centre-cropped and resized with antialiasing, floats in [0, 1].
    """
    from utils.video import open_video, square_frames

    source = square_frames(open_video(SOURCE_CLIP).get_frames([0]), size).expand(batch, -1, -1, -1).contiguous()
    reader = open_video(DRIVING_CLIP)
    driving = square_frames(reader.get_frames([(10 + 7 * i) % reader.num_frames for i in range(batch)]), size)
    return source, driving


def check_onnx(models: dict[str, nn.Module], paths: dict[str, str], size: int, batch: int = 1,
               repeats: int = 3, seed: int = 0, inputs: str = "real") -> dict[str, dict[str, float]]:
    """Run the exported graphs with onnxruntime beside PyTorch on the same inputs.

    inputs: 'real' (the repository's clips, keypoints from the PyTorch keypoint detector) or
    'random' (uniform-noise images, random nearby keypoints; the noise images make the seeded
    full-size generator amplify rounding several times more than real frames do).
    Returns {name: {'max_abs_diff', 'torch_spread', 'torch_s', 'onnx_s'}}: seconds per call of
    `batch` frames; torch_spread is PyTorch's own largest output change when its image input
    gets N(0, 1e-6) noise.
    """
    if inputs not in CHECK_INPUTS:
        raise ExportError(f"check inputs must be one of {', '.join(CHECK_INPUTS)}, got {inputs!r}")
    g = torch.Generator().manual_seed(seed)
    from modules.family import family_of_models

    if family_of_models(models).name == "mraa":
        return _compare(_mraa_check_modules(models, size, batch, inputs, g), paths, repeats, g)
    kp_module = KPDetectorExport(models["kp_detector"]).eval()
    if inputs == "real":
        source, image = real_check_frames(size, batch)
        with torch.no_grad():
            kp_s, kp_d = kp_module(source), kp_module(image)
    else:
        num_kp = models["dense_motion_network"].num_tps * 5
        image = torch.rand(batch, 3, size, size, generator=g)
        source = torch.rand(batch, 3, size, size, generator=g)
        kp_d = torch.rand(batch, num_kp, 2, generator=g) * 1.6 - 0.8
        kp_s = (kp_d + 0.05 * torch.randn(batch, num_kp, 2, generator=g)).clamp(-1, 1)
    modules = {"kp_detector": (kp_module, {"image": image}),
               "generator": (GeneratorExport(models["dense_motion_network"], models["inpainting_network"]).eval(),
                             {"source": source, "kp_driving": kp_d, "kp_source": kp_s})}
    return _compare(modules, paths, repeats, g)


def _mraa_check_modules(models: dict[str, nn.Module], size: int, batch: int, inputs: str,
                        g: torch.Generator) -> dict[str, tuple[nn.Module, dict]]:
    """The MRAA graphs' PyTorch modules and inputs: real frames (or uniform noise) and the region
    predictor's params of the driving and source frames."""
    from modules.mraa.export import PARAM_KEYS, export_modules

    if inputs == "real":
        source, image = real_check_frames(size, batch)
    else:
        image = torch.rand(batch, 3, size, size, generator=g)
        source = torch.rand(batch, 3, size, size, generator=g)
    modules = export_modules(models)
    with torch.no_grad():
        driving_params, source_params = models["region_predictor"](image), models["region_predictor"](source)
    feeds = {"source": source, **{f"driving_{k}": driving_params[k] for k in PARAM_KEYS},
             **{f"source_{k}": source_params[k] for k in PARAM_KEYS}}
    return {"region_predictor": (modules["region_predictor"], {"image": image}),
            "generator": (modules["generator"], feeds)}


def _compare(modules: dict[str, tuple[nn.Module, dict]], paths: dict[str, str], repeats: int,
             g: torch.Generator) -> dict[str, dict[str, float]]:
    """Each graph under onnxruntime beside its PyTorch module on the same feeds (the first feed is the image
    that gets the 1e-6 noise); the largest difference over every output."""
    threads = torch.get_num_threads()
    results = {}
    for name, (module, feeds) in modules.items():
        session = onnx_session(paths[name], threads=threads)
        np_feeds = {k: v.numpy() for k, v in feeds.items()}
        noisy = dict(feeds)
        first = next(iter(feeds))  # the image input: 'image' or 'source'
        noisy[first] = feeds[first] + 1e-6 * torch.randn(feeds[first].shape, generator=g)
        with torch.no_grad():
            ref = _outputs(module(*feeds.values()))
            spread = _outputs(module(*noisy.values()))
            got = [torch.from_numpy(x) for x in session.run(None, np_feeds)]
            torch_s = _median_time(lambda: module(*feeds.values()), repeats)
        onnx_s = _median_time(lambda: session.run(None, np_feeds), repeats)
        results[name] = {"max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(got, ref, strict=True)),
                         "torch_spread": max(float((a - b).abs().max()) for a, b in zip(spread, ref)),
                         "torch_s": torch_s, "onnx_s": onnx_s}
    return results


def _outputs(output) -> tuple[torch.Tensor, ...]:
    """A module's outputs as a tuple (the region predictor has three)."""
    return output if isinstance(output, tuple) else (output,)


def _fill_seeded(models: dict[str, nn.Module]) -> str:
    """The family's seeded weights; returns the recipe's file."""
    from modules.family import family_of_models

    if family_of_models(models).name == "mraa":
        from modules.mraa.weight_recipe import fill_mraa_models
        fill_mraa_models(models)
        return "modules/mraa/weight_recipe.py"
    from utils.weight_recipe import fill_models
    fill_models(models)
    return "utils/weight_recipe.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modules.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="model config (YAML)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint; seeded weights when left out")
    parser.add_argument("--format", default="onnx", help="export format (onnx)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=int, default=None, help="frame size (default: the config's frame_shape or 256)")
    parser.add_argument("--check", action="store_true", help="compare with PyTorch under onnxruntime and time both")
    parser.add_argument("--check-inputs", default="real", choices=CHECK_INPUTS,
                        help="--check on real frames (default) or uniform noise and random keypoints")
    args = parser.parse_args(argv)
    try:
        if args.format not in FORMATS:
            raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
        from modules import build_models, load_checkpoint, load_config

        config = load_config(args.config)
        models = build_models(config)
        if args.checkpoint:
            load_checkpoint(args.checkpoint, models)
        else:
            recipe = _fill_seeded(models)
            print(f"no --checkpoint: exporting seeded weights ({recipe})", file=sys.stderr)
        for m in models.values():
            m.eval()
        frame_shape = config.get("dataset_params", {}).get("frame_shape")
        size = args.size or (int(frame_shape[0]) if frame_shape else 256)
        paths = export_onnx(models, args.out, size=size)
        for name, path in paths.items():
            print(f"{name}: {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
        if args.check:
            print(f"check on {args.check_inputs} inputs, {size} px, batch 1, {torch.get_num_threads()} threads")
            for name, r in check_onnx(models, paths, size, inputs=args.check_inputs).items():
                print(f"{name}: max |onnx - torch| = {r['max_abs_diff']:.2e} (torch under 1e-6 input noise: "
                      f"{r['torch_spread']:.2e}), torch {r['torch_s'] * 1e3:.1f} ms, "
                      f"onnxruntime {r['onnx_s'] * 1e3:.1f} ms per frame")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
