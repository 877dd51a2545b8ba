"""MRAA animation: standard, relative and AVD motion transfer of region parameters (MRAA Sec. 3.3-3.4).

`animation_region_params` is the published demo's choice of the parameters the generator animates
with; `MRAAAnimator` is the engine. Per video it computes once what depends only on the source: its
region parameters, the flow predictor's downsampled source and the source regions' Gaussians, and the
generator's encoder maps (every skip level); driving frames then go through in batches under
`torch.inference_mode`, each through the networks' own forwards on prepared copies (folded UpBlocks;
with bf16/fp16 the flow predictor's hourglass and the generator's bottleneck and decoder in that dtype,
channels-last), with the caches passed as arguments. Region parameters, the eigen-decomposition,
Gaussians, sparse motions, softmax, sigmoids and `grid_sample` stay fp32. `animate_mraa_plain` is the
published demo's loop (batch 1, one frame at a time, nothing cached): the benches' baseline.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modules.animation import _check_frames, engine_precision, hull_area, prepared
from modules.mraa import size_multiple

MRAA_MODES = ("standard", "relative", "avd")


def movement_scale(source_params: dict, initial_params: dict) -> float:
    """sqrt(hull area of the source shifts) / sqrt(hull area of the first driving frame's), batch element 0,
    float64 (the published relative mode always applies it).

    Where either hull is degenerate (fewer than 3 regions, or centres on one line: area 0) the scale is 1
    (the published code's scipy ConvexHull raises there; a zero area would make every shift inf or NaN).
    """
    source_area, initial_area = hull_area(source_params["shift"][0]), hull_area(initial_params["shift"][0])
    if source_area <= 0 or initial_area <= 0:
        return 1.0
    return float(np.sqrt(source_area) / np.sqrt(initial_area))


def relative_region_params(source_params: dict, driving_params: dict, initial_params: dict,
                           scale: float | None = None) -> dict:
    """Relative transfer (MRAA demo): shift = (shift_d - shift_d0) s + shift_s, affine = (A_d inv(A_d0)) A_s.

    Every other key (covar, heatmap, u, d) stays the driving frame's, as published: with covariance
    heatmaps the driving Gaussian keeps the driving frame's own covariance. s: `movement_scale`
    (computed here when None).
    """
    if scale is None:
        scale = movement_scale(source_params, initial_params)
    out = dict(driving_params)
    out["shift"] = (driving_params["shift"] - initial_params["shift"]) * scale + source_params["shift"]  # B x K x 2
    if "affine" in driving_params:
        affine_diff = torch.matmul(driving_params["affine"], torch.inverse(initial_params["affine"]))  # B x K x 2 x 2
        out["affine"] = torch.matmul(affine_diff, source_params["affine"])
    return out


def animation_region_params(source_params: dict, driving_params: dict, initial_params: dict, mode: str,
                            avd_network: nn.Module | None = None, scale: float | None = None) -> dict:
    """The region parameters the generator animates with (the published `get_animation_region_params`).

    standard: the driving frame's; relative: `relative_region_params`; avd: avd_network(x_id=source,
    x_pose=driving) -> {'shift', 'affine', 'covar'}. Source and initial params broadcast over the batch.
    """
    if mode == "standard":
        return driving_params
    if mode == "relative":
        return relative_region_params(source_params, driving_params, initial_params, scale)
    if mode == "avd":
        if avd_network is None:
            raise ValueError("mode 'avd' needs an avd_network")
        return avd_network(source_params, driving_params)
    raise ValueError(f"MRAA mode must be one of {', '.join(MRAA_MODES)}, got {mode!r}")


def _expand(params: dict, t: int) -> dict:
    """Batch-1 region params broadcast to a batch of t (u and d, shaped (B*K, 2, 2), are dropped: unused)."""
    return {k: v.expand(t, *v.shape[1:]) for k, v in params.items() if k not in ("u", "d")}


class MRAAAnimator:
    """Animate one source image (1, 3, H, W) with a stream of driving frames (MRAA family).

    models: {'region_predictor', 'generator', ['avd_network'], ['bg_predictor']} from
    `modules.build_models` (weights loaded, eval mode), on the device of `source`.
    mode: 'standard' (the driving regions as they are), 'relative' (shift and affine relative to the
    anchor, scaled by the hull-area ratio) or 'avd' (the AVD network's regions).
    anchor (1, 3, H, W): the relative-mode reference frame; default: the first driving frame seen.
    background: use `models['bg_predictor']` for the background motion (reconstruction: source = the
    video's first frame, mode 'standard'); animation never does, as published.
    precision: 'fp32' (exact), 'bf16' or 'fp16' for the flow predictor's hourglass and the generator's
    bottleneck and decoder; the region predictor, the background predictor, the AVD network and the
    source encoder stay fp32.
    """

    size_multiple = staticmethod(size_multiple)  # frame sides must be multiples of size_multiple(config)

    def __init__(self, models: dict[str, nn.Module], source: torch.Tensor, mode: str = "relative",
                 precision: str = "fp32", anchor: torch.Tensor | None = None, background: bool = False,
                 channels_last: bool | None = None, fold_upsampling: bool = True):
        if mode not in MRAA_MODES:
            raise ValueError(f"MRAA mode must be one of {', '.join(MRAA_MODES)}, got {mode!r}")
        for name in ("region_predictor", "generator"):
            if name not in models:
                raise ValueError(f"MRAA animation needs '{name}' in the models (got {', '.join(models)})")
        if mode == "avd" and models.get("avd_network") is None:
            raise ValueError("mode 'avd' needs an avd_network in the models")
        if background and models.get("bg_predictor") is None:
            raise ValueError("background=True needs a bg_predictor in the models")
        _check_frames("source", source, batch_one=True)
        self.mode = mode
        self.precision, self.dtype = engine_precision(precision, "MRAA", source.device)  # 'auto' -> fp32/bf16/fp16
        if channels_last is None:
            channels_last = self.dtype != torch.float32
        opts = dict(dtype=self.dtype, channels_last=channels_last, fold_upsampling=fold_upsampling)
        exact = dict(opts, dtype=torch.float32)
        # Region parameters feed an eigen-decomposition, inverses and every sampling grid: fp32 at every precision.
        self.region_net = prepared(models["region_predictor"], **exact)
        self.avd = models.get("avd_network") if mode == "avd" else None
        self.bg_net = prepared(models["bg_predictor"], **exact) if background else None
        self.generator = prepared(models["generator"], **opts, keep_fp32=("first", "down_blocks"))
        self.source = source.float()
        with torch.inference_mode():
            self.source_params = self.region_net(self.source)
            flow = self.generator.pixelwise_flow_predictor
            self.source_down = flow.downsample(self.source)  # 1 x 3 x h x w
            self.source_heatmap = flow.region_heatmaps(self.source_down.shape[2:], self.source_params)  # 1 x K x h x w
            # fp32 NCHW: warped every frame; [first, down_1, ..., down_n]
            self.encoder_maps = [m.float().contiguous() for m in self.generator.encode(self.source)]
            self.initial_params: dict | None = None
            if anchor is not None:
                _check_frames("anchor", anchor, batch_one=True)
                self.initial_params = self.region_net(anchor.float())
        self._scale: float | None = None

    @torch.inference_mode()
    def region_predictor(self, image: torch.Tensor) -> dict:
        """RegionPredictor.forward of the prepared fp32 copy: {'shift', 'covar', 'affine', 'heatmap', ...}."""
        return self.region_net(image)

    @torch.inference_mode()
    def region_params(self, driving: torch.Tensor) -> dict:
        """The region parameters to animate with, for a batch of driving frames (T, 3, H, W)."""
        driving_params = self.region_net(driving)
        if self.initial_params is None:
            self.initial_params = {k: v[:1] for k, v in driving_params.items() if k not in ("u", "d")}
        if self.mode == "standard":
            return driving_params
        t = driving.shape[0]
        source = _expand(self.source_params, t)
        if self.mode == "relative":
            if self._scale is None:
                self._scale = movement_scale(self.source_params, self.initial_params)
            return relative_region_params(source, driving_params, _expand(self.initial_params, t), self._scale)
        return self.avd(source, driving_params)

    @torch.inference_mode()
    def generate(self, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every generator output (prediction, deformed, occlusion_map, optical_flow, ...) for a batch of
        driving frames, with the region params used under 'region_params'."""
        _check_frames("driving", driving, batch_one=False)
        driving = driving.float()
        t = driving.shape[0]
        params = self.region_params(driving)
        bg_params = None
        if self.bg_net is not None:
            bg_params = self.bg_net(self.source.expand(t, -1, -1, -1), driving)  # T x 3 x 3
        out = self.generator(self.source, driving_region_params=params,
                             source_region_params=_expand(self.source_params, t), bg_params=bg_params,
                             encoded=self.encoder_maps, source_down=self.source_down,
                             source_heatmap=self.source_heatmap)
        out["prediction"] = out["prediction"].contiguous()
        out["region_params"] = params
        if bg_params is not None:
            out["bg_params"] = bg_params
        return out

    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        """Predictions (T, 3, H, W), fp32, for a batch of driving frames."""
        return self.generate(driving)["prediction"]


def make_mraa_animation(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                        mode: str = "relative", batch_size: int = 8, precision: str = "fp32",
                        anchor: torch.Tensor | None = None) -> torch.Tensor:
    """Animate `source` (1, 3, H, W) with `driving` (T, 3, H, W), floats in [0, 1] -> (T, 3, H, W), through
    `MRAAAnimator` in batches of `batch_size`."""
    _check_frames("driving", driving, batch_one=False)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    animator = MRAAAnimator(models, source, mode=mode, precision=precision, anchor=anchor)
    return torch.cat([animator(driving[i:i + batch_size]) for i in range(0, driving.shape[0], batch_size)], dim=0)


@torch.no_grad()
def animate_mraa_plain(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                       mode: str = "relative") -> torch.Tensor:
    """The published MRAA demo's loop (demo.make_animation), the baseline of the benches and of parity.

    Batch 1, one frame at a time, no caching: the source's and the first driving frame's region params
    are computed once (as published); the generator re-encodes the source, re-blurs it and rebuilds its
    Gaussians for every frame; the movement scale is recomputed every frame.
    """
    if mode not in MRAA_MODES:
        raise ValueError(f"MRAA mode must be one of {', '.join(MRAA_MODES)}, got {mode!r}")
    region_predictor, generator = models["region_predictor"], models["generator"]
    source_params = region_predictor(source)
    initial_params = region_predictor(driving[:1])
    out = []
    for t in range(driving.shape[0]):
        driving_params = region_predictor(driving[t:t + 1])
        params = animation_region_params(source_params, driving_params, initial_params, mode,
                                         avd_network=models.get("avd_network"))
        out.append(generator(source, driving_region_params=params, source_region_params=source_params)["prediction"])
    return torch.cat(out, dim=0)  # T x 3 x H x W
