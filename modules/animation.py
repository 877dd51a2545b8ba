"""Animating a source image from driving frames: standard, relative and AVD modes (TPSMM demo semantics).

`Animator` is the fast engine. Per video it computes once what depends only on the
source: its keypoints, its downsampled copy, its Gaussian heatmaps (the source term of
the dense-motion input, TPSMM Sec. 3.2) and its inpainting-encoder features (Sec. 3.3).
Driving frames then go through in batches under `torch.inference_mode`, with the
coordinate grids allocated once; on a CPU the inpainting decoder takes them one at a
time (its large maps then stay in cache). The convolutional parts (keypoint ResNet,
dense-motion hourglass, inpainting encoder/decoder) run on prepared, cached copies of
the networks:

- every UpBlock's "nearest x2 upsampling + 3x3 conv" is one 2x2 conv with four output
  phases on the low-resolution input (the same sums, 2.25x fewer multiply-adds; maps
  under 16x16 keep the plain form, where reading the weights dominates);
- with `precision='bf16'|'fp16'`, the per-frame conv networks (dense-motion hourglass
  and heads, inpainting decoder) use that dtype for weights and activations, in the
  channels-last layout (the AMX / tensor-core layout), with InstanceNorm2d(affine)
  computed as GroupNorm with one group per channel (same statistics, a kernel that keeps
  the layout). The keypoint detector, the once-per-video source encoder, the TPS solve,
  grids, heatmaps, softmax, sigmoids, `grid_sample` and the final blend stay fp32
  (plain autocast would run the TPS maths in bf16; a bf16 keypoint ResNet moves the
  keypoints by ~1 px);
- `precision='fp32'` keeps the NCHW layout and InstanceNorm itself: GroupNorm's
  one-pass fp32 variance moves 512 px outputs by ~2e-3, and InstanceNorm on
  channels-last maps converts the layout twice per block (slower than NCHW convs).

`precision='fp32'` matches the plain per-frame path (`animate_plain`) within 1e-4.
`make_animation` wraps the engine for whole tensors.
"""
from __future__ import annotations

import copy
import weakref
from fractions import Fraction
from math import lcm
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import ConvCompute, EngineHooks, UpBlock2d

MODES = ("standard", "relative", "avd")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def hull_area(points: torch.Tensor) -> float:
    """Area of the convex hull of 2-D points (N, 2) (monotone chain, float64)."""
    pts = sorted(set(map(tuple, points.detach().double().cpu().numpy().tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    x, y = hull[:, 0], hull[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def relative_kp(kp_source: dict, kp_driving: dict, kp_driving_initial: dict) -> dict:
    """kp_S + (kp_d - kp_D0) * sqrt(area(hull(kp_S)) / area(hull(kp_D0))) (TPSMM demo, batch element 0's hulls)."""
    scale = np.sqrt(hull_area(kp_source["fg_kp"][0])) / np.sqrt(hull_area(kp_driving_initial["fg_kp"][0]))
    diff = (kp_driving["fg_kp"] - kp_driving_initial["fg_kp"]) * float(scale)
    return {**kp_driving, "fg_kp": diff + kp_source["fg_kp"]}


def _check_frames(name: str, x: torch.Tensor, batch_one: bool) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be a float tensor of shape ({'1' if batch_one else 'T'}, 3, H, W), "
                         f"got {tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if batch_one and x.shape[0] != 1:
        raise ValueError(f"{name} must have batch size 1, got {x.shape[0]}")


def engine_precision(precision: str, family: str, device: torch.device | str,
                     supported: Iterable[str] = tuple(PRECISIONS)) -> tuple[str, torch.dtype]:
    """(name, dtype) an engine on `device` computes in: 'auto' is decided by `utils.precision.resolve_precision`
    (bf16 where native, fp16 on older CUDA, else fp32); a ValueError naming the precision and the family otherwise."""
    from utils.precision import resolve_precision

    supported = tuple(supported)
    if precision not in supported and precision != "auto":
        raise ValueError(f"precision must be one of auto, {', '.join(supported)} for the {family} family, "
                         f"got {precision!r}")
    name = resolve_precision(precision, device, supported).name
    return name, PRECISIONS[name]


def check_precision(precision: str, family: str, supported: Iterable[str] = tuple(PRECISIONS),
                    device: torch.device | str = "cpu") -> torch.dtype:
    """The compute dtype of `precision` on `device` ('auto' resolved there; see `engine_precision`)."""
    return engine_precision(precision, family, device, supported)[1]


# ----------------------------------------------------------------------------- prepared conv networks

class _InstanceNormCL(nn.Module):
    """InstanceNorm2d(affine); in bf16/fp16 as GroupNorm with one group per channel.

    Same statistics; GroupNorm keeps the channels-last layout and takes bf16/fp16 input
    with fp32 affine parameters, accumulating in fp32 (InstanceNorm would convert the
    layout twice). fp32 input uses InstanceNorm itself, for exactness.
    """

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        self.num_features, self.eps = norm.num_features, norm.eps
        self.weight = nn.Parameter(norm.weight.detach().float().clone(), requires_grad=False)
        self.bias = nn.Parameter(norm.bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if x.dtype == torch.float32:
            # GroupNorm's one-pass fp32 variance loses ~1e-3 on large maps (384 px and up) where a
            # channel's mean is large against its spread; fp32 keeps InstanceNorm's two-pass maths
            if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                return self._two_pass_channels_last(x)
            return F.instance_norm(x, weight=weight, bias=bias, eps=self.eps)
        if x.dtype != weight.dtype and x.device.type != "cpu":  # mixed-type GroupNorm is a CPU kernel
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        return F.group_norm(x, self.num_features, weight, bias, self.eps)

    def _two_pass_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 InstanceNorm of a channels-last map without leaving the layout (F.instance_norm
        would copy it to NCHW and back, 5x its own time): mean, then the variance of x - mean."""
        n, c, h, w = x.shape
        y = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: channels are the contiguous dim
        mean = y.mean(dim=1, keepdim=True)  # N x 1 x C
        var = (y - mean).square_().mean(dim=1, keepdim=True)
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        return torch.addcmul(shift, y, scale).view(n, h, w, c).permute(0, 3, 1, 2)


class _PhaseUpBlock(nn.Module):
    """UpBlock2d (nearest x2, 3x3 conv with padding 1, norm, ReLU) with the upsampling folded into the conv.

    Output pixel (2i + a, 2j + b) of conv3x3(upsample(x)) only sees low-resolution rows
    {i-1, i} (a = 0) or {i, i+1} (a = 1), and likewise for columns, so it equals a 2x2
    conv of x with kernel taps summed per phase. All four phases are one conv with
    4 * C_out outputs and padding 1, read at offsets (a, b): 16 instead of 36
    multiply-adds per low-resolution pixel and channel pair.
    """

    # kernel rows (or columns) of the 3x3 conv that land on low-res tap u, for output phase a
    _TAPS = (((0,), (1, 2)), ((0, 1), (2,)))
    # below this many input pixels the conv is bound by reading its weights, which folding
    # makes 16/9 larger: small maps (the hourglass bottom) keep upsample + 3x3
    MIN_PIXELS = 256

    def __init__(self, block: UpBlock2d, norm: nn.Module):
        super().__init__()
        conv = block.conv
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.groups != 1 or conv.stride != (1, 1):
            raise ValueError("phase folding needs a 3x3 conv with padding 1")
        # not a parameter or buffer: the engine's dtype conversion leaves it fp32 (and, in a prepared copy,
        # the module's own tensor), so the folded taps are summed in fp32 and rounded once
        self._weight_fp32 = conv.weight.detach()  # Cout x Cin x 3 x 3
        self.out_channels = conv.weight.shape[0]
        self.norm = norm
        self.conv = conv  # the unfolded conv, for small inputs
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The folded kernel (4 * Cout, Cin, 2, 2), phases (a, b) outermost, in the conv's dtype and layout."""
        return self._fold()[0]

    def _fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Folded weight and bias, built on the first map large enough to use them: the hourglass bottom's
        blocks (the widest, 1024 channels on 2x2 to 8x8 maps at 256 px) never hold a second kernel."""
        if self._folded is None:
            conv = self.conv
            with torch.inference_mode(False), torch.no_grad():
                w = self._weight_fp32.to(conv.weight.device, torch.float32)
                phases = []
                for a in range(2):
                    for b in range(2):
                        taps = [[w[:, :, list(self._TAPS[a][u])][:, :, :, list(self._TAPS[b][v])].sum(dim=(2, 3))
                                 for v in range(2)] for u in range(2)]
                        phases.append(torch.stack([torch.stack(r, dim=-1) for r in taps], dim=-2))  # Cout x Cin x 2 x 2
                weight = torch.cat(phases, dim=0).to(conv.weight.dtype)  # 4*Cout x Cin x 2 x 2, (a, b, c)
                if conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous():
                    weight = weight.contiguous(memory_format=torch.channels_last)
                bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(self.out_channels)
                self._folded = (weight, bias.detach().repeat(4))
        return self._folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h * w < self.MIN_PIXELS:
            return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))), inplace=True)
        c = self.out_channels
        weight, bias = self._fold()
        y = F.conv2d(x, weight, bias, padding=1)  # N x 4C x (h+1) x (w+1)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            y = y.permute(0, 2, 3, 1)  # N x (h+1) x (w+1) x 4C, a view of the channels-last result
            out = y.new_empty(n, h, 2, w, 2, c)  # N x h x a x w x b x C
            for a in range(2):
                for b in range(2):
                    k = 2 * a + b
                    out[:, :, a, :, b, :] = y[:, a:a + h, b:b + w, k * c:(k + 1) * c]
            out = out.view(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # N x C x 2h x 2w, channels-last
        else:
            y = y.view(n, 4, c, h + 1, w + 1)  # N x (a, b) x C x (h+1) x (w+1)
            out = y.new_empty(n, c, h, 2, w, 2)  # N x C x h x a x w x b
            for a in range(2):
                for b in range(2):
                    out[:, :, :, a, :, b] = y[:, 2 * a + b, :, a:a + h, b:b + w]
            out = out.view(n, c, 2 * h, 2 * w)  # N x C x 2h x 2w
        return F.relu(self.norm(out), inplace=True)


def _prepare_module(module: nn.Module, dtype: torch.dtype, channels_last: bool, fold_upsampling: bool,
                    keep_fp32: tuple[str, ...] = ()) -> nn.Module:
    """A frozen copy of `module` in `dtype` (norm affine parameters fp32) for the engine.

    Tensors the copy keeps unchanged (same dtype, same layout) share the module's storage.

    keep_fp32: names of children that keep fp32 weights (e.g. the once-per-video source encoder).
    A network with engine hooks (`EngineHooks`) gets `compute` set, so its own forward casts
    into the convs' dtype and layout and back to fp32 where the module doc says.
    """
    # the copy's tensors start as views of the module's (new Parameter objects, the same storage):
    # every tensor the preparation replaces is replaced, not written, so the module is never changed,
    # and what it keeps as is (fp32 weights that are not folded) is not held twice
    memo = {id(t): nn.Parameter(t.detach(), requires_grad=False) for t in module.parameters()}
    memo.update({id(t): t.detach() for t in module.buffers()})
    prepared = copy.deepcopy(module, memo).eval()

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if fold_upsampling and isinstance(child, UpBlock2d) and child.conv.kernel_size == (3, 3) \
                    and child.conv.padding == (1, 1) and child.conv.groups == 1:
                norm = child.norm
                if isinstance(norm, nn.InstanceNorm2d) and norm.affine and not norm.track_running_stats:
                    norm = _InstanceNormCL(norm)
                setattr(parent, name, _PhaseUpBlock(child, norm))
            elif channels_last and isinstance(child, nn.InstanceNorm2d) and child.affine \
                    and not child.track_running_stats:
                setattr(parent, name, _InstanceNormCL(child))
            else:
                swap(child)

    swap(prepared)
    exempt = {id(m) for name in keep_fp32 for m in prepared.get_submodule(name).modules()}
    for m in prepared.modules():
        if isinstance(m, (_InstanceNormCL, nn.modules.batchnorm._BatchNorm)) or id(m) in exempt:
            continue  # normalisation parameters stay fp32 (mixed-type kernels, fp32 statistics)
        for key, p in m.named_parameters(recurse=False):
            m._parameters[key] = nn.Parameter(p.detach().to(dtype), requires_grad=False)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        prepared = prepared.to(memory_format=memory_format)
    for m in prepared.modules():
        if isinstance(m, EngineHooks):
            m.compute = ConvCompute(dtype=dtype, memory_format=memory_format)
    return prepared


def _needs_copy(module: nn.Module, dtype: torch.dtype, channels_last: bool, fold_upsampling: bool) -> bool:
    """False when the prepared copy would equal the module (fp32, NCHW, nothing to fold, eval mode)."""
    if dtype != torch.float32 or channels_last or module.training:
        return True
    return fold_upsampling and any(isinstance(m, UpBlock2d) for m in module.modules())


_PREPARED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor has no version counter (and cannot be updated in place)
        return -1


def _state_key(module: nn.Module) -> tuple:
    """Identity of the module's current weights (a new key after any in-place update or load)."""
    return tuple((t.device, t.data_ptr(), _version(t)) for t in list(module.parameters()) + list(module.buffers()))


def prepared(module: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = True,
             fold_upsampling: bool = True, keep_fp32: tuple[str, ...] = ()) -> nn.Module:
    """Cached `_prepare_module(module, ...)`; rebuilt when the module's weights change.

    An eval-mode module that the options would leave unchanged (fp32, NCHW, no UpBlock to
    fold) is returned as is: no second copy of its weights; in a copy, the tensors it keeps
    unchanged share the module's storage (a copy made before an in-place weight update is
    rebuilt on the next call, as the module itself would be).
    """
    if not _needs_copy(module, dtype, channels_last, fold_upsampling):
        return module
    options = (dtype, channels_last, fold_upsampling, tuple(keep_fp32))
    entry = _PREPARED.setdefault(module, {})
    state = _state_key(module)
    hit = entry.get(options)
    if hit is None or hit[0] != state:
        with torch.no_grad():
            hit = (state, _prepare_module(module, dtype, channels_last, fold_upsampling, tuple(keep_fp32)))
        entry[options] = hit
    return hit[1]


def size_multiple(config: dict) -> int:
    """Frame sides a TPSMM config's networks accept are multiples of this (hourglass pooling after the
    dense-motion downscale, and the inpainting encoder's down blocks)."""
    mp = config.get("model_params", {})
    dense, gen = mp.get("dense_motion_params", {}), mp.get("generator_params", {})
    if "num_blocks" not in dense:
        return 1
    per_dense = Fraction(2 ** int(dense["num_blocks"])) / Fraction(str(dense.get("scale_factor", 1)))
    return lcm(per_dense.numerator, 2 ** int(gen.get("num_down_blocks", 0)))  # smallest integer multiple of both


def slice_motion(dense: dict, start: int, stop: int) -> dict:
    """Frames start:stop of a dense-motion output dict (tensors, or lists of tensors)."""
    return {k: [x[start:stop] for x in v] if isinstance(v, list) else v[start:stop] for k, v in dense.items()}


# ----------------------------------------------------------------------------- the engine

class Animator:
    """Animate one source image with a stream of driving frames.

    models: the dict from `modules.build_models` (weights loaded, eval mode), on the
    device of `source`. The networks' own forwards run, on prepared copies, with the
    per-video caches (source keypoints, downsampled source, its heatmaps, encoder maps).
    anchor (1, 3, H, W): the relative-mode reference frame; default: the first driving frame seen.
    background: use `models['bg_predictor']` for the background motion (the TPSMM
    reconstruction protocol: source = the video's first frame, mode 'standard').
    precision: 'fp32' (exact), 'bf16' or 'fp16' for the convolutions (see module doc), or 'auto' (what the
    source's device runs natively, `utils.precision.resolve_precision`); `self.precision` is the one chosen.
    decoder_batch: frames per inpainting-decoder call. The keypoint detector and the dense
    motion network (weight-bound at their small maps) take the whole batch; the decoder's
    large maps stay in cache one frame at a time on a CPU (measured faster there). None:
    1 on a CPU, the whole batch on a GPU.
    channels_last: channels-last layout; None: on for bf16/fp16 (the AMX/tensor-core layout),
    off for fp32 (InstanceNorm, kept for exactness, would convert the layout twice per block).
    fold_upsampling: the folded UpBlock convs (on by default; off, with channels_last
    off, gives the networks' own forms, for measurements).
    """

    size_multiple = staticmethod(size_multiple)  # frame sides must be multiples of size_multiple(config)

    def __init__(self, models: dict[str, nn.Module], source: torch.Tensor, mode: str = "relative",
                 precision: str = "fp32", anchor: torch.Tensor | None = None, background: bool = False,
                 decoder_batch: int | None = None, channels_last: bool | None = None,
                 fold_upsampling: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "avd" and "avd_network" not in models:
            raise ValueError("mode 'avd' needs an avd_network in the models")
        if background and "bg_predictor" not in models:
            raise ValueError("background=True needs a bg_predictor in the models")
        _check_frames("source", source, batch_one=True)
        self.mode = mode
        self.precision, self.dtype = engine_precision(precision, "TPSMM", source.device)  # 'auto' -> fp32/bf16/fp16
        if channels_last is None:
            channels_last = self.dtype != torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.avd = models.get("avd_network")
        opts = dict(dtype=self.dtype, channels_last=channels_last, fold_upsampling=fold_upsampling)
        # The keypoint detector, the background predictor and the source encoder stay fp32 at every
        # precision: keypoints drive the TPS solve (a bf16 ResNet moves them by ~1 px, 37 dB instead of
        # 51 dB on vox-256), and the encoder runs once per video.
        exact = dict(opts, dtype=torch.float32)
        self.kp_net = prepared(models["kp_detector"], **exact)
        self.bg_net = prepared(models["bg_predictor"], **exact) if background else None
        self.dense_motion = prepared(models["dense_motion_network"], **opts)
        self.inpainting = prepared(models["inpainting_network"], **opts, keep_fp32=("first", "down_blocks"))
        self.source = source.float()
        with torch.inference_mode():
            self.kp_source = self.kp_net(self.source)  # {'fg_kp': 1 x K*5 x 2}
            self.source_down = self.dense_motion.downsample(self.source)  # 1 x 3 x h x w
            self.source_heatmap = self.dense_motion.source_heatmap(
                self.source_down.shape[2:], self.kp_source["fg_kp"])  # 1 x K*5 x h x w
            # fp32 NCHW: sampled with grid_sample every frame; [first, down_1, ..., down_n]
            self.encoder_maps = [m.float().contiguous() for m in self.inpainting.encode(self.source)]
            self.kp_initial = None if anchor is None else self._anchor_keypoints(anchor)
        self._relative_scale: float | None = None
        if decoder_batch is None:
            decoder_batch = 1 if source.device.type == "cpu" else 0
        self.decoder_batch = int(decoder_batch)  # 0: the whole batch

    def _anchor_keypoints(self, anchor: torch.Tensor) -> dict:
        _check_frames("anchor", anchor, batch_one=True)
        return self.kp_detector(anchor.float())

    @torch.inference_mode()
    def kp_detector(self, image: torch.Tensor) -> dict:
        """KPDetector.forward on the prepared (fp32) copy: {'fg_kp': (B, K*5, 2)}."""
        return self.kp_net(image)

    @torch.inference_mode()
    def keypoints(self, driving: torch.Tensor) -> dict:
        """Keypoints to animate with, for a batch of driving frames (T, 3, H, W)."""
        kp_driving = self.kp_detector(driving)
        if self.kp_initial is None:
            self.kp_initial = {k: v[:1] for k, v in kp_driving.items()}
        if self.mode == "standard":
            return kp_driving
        t = driving.shape[0]
        kp_source = {k: v.expand(t, *v.shape[1:]) for k, v in self.kp_source.items()}
        if self.mode == "relative":
            if self._relative_scale is None:
                self._relative_scale = float(np.sqrt(hull_area(self.kp_source["fg_kp"][0]))
                                             / np.sqrt(hull_area(self.kp_initial["fg_kp"][0])))
            diff = (kp_driving["fg_kp"] - self.kp_initial["fg_kp"]) * self._relative_scale
            return {**kp_driving, "fg_kp": diff + kp_source["fg_kp"]}
        return self.avd(kp_source, kp_driving)

    @torch.inference_mode()
    def dense_motion_forward(self, kp_driving: torch.Tensor, bg_param: torch.Tensor | None = None) -> dict:
        """DenseMotionNetwork.forward (eval) of the prepared copy with the cached source terms.

        kp_driving (B, K*5, 2) -> {'deformation' (B, h, w, 2), 'occlusion_map' [4 x (B, 1, .)], ...}.
        """
        return self.dense_motion(self.source, kp_driving={"fg_kp": kp_driving}, kp_source=self.kp_source,
                                 bg_param=bg_param, source_down=self.source_down,
                                 source_heatmap=self.source_heatmap)

    @torch.inference_mode()
    def inpainting_forward(self, dense: dict) -> torch.Tensor:
        """InpaintingNetwork.forward (eval, no warped maps) of the prepared copy on the cached encoder maps."""
        out = self.inpainting(self.source, dense, encoder_maps=self.encoder_maps, with_warped_maps=False)
        return out["prediction"]  # B x 3 x H x W, fp32

    @torch.inference_mode()
    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        """Predictions (T, 3, H, W), fp32, for a batch of driving frames."""
        _check_frames("driving", driving, batch_one=False)
        driving = driving.float()
        t = driving.shape[0]
        kp_norm = self.keypoints(driving)
        bg_param = None
        if self.bg_net is not None:
            bg_param = self.bg_net(self.source.expand(t, -1, -1, -1), driving)  # T x 3 x 3
        dense = self.dense_motion_forward(kp_norm["fg_kp"], bg_param)
        chunk = self.decoder_batch or t
        if chunk >= t:
            return self.inpainting_forward(dense).contiguous()
        return torch.cat([self.inpainting_forward(slice_motion(dense, i, i + chunk)) for i in range(0, t, chunk)],
                         dim=0)


def make_animation(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                   mode: str = "relative", batch_size: int = 8, precision: str = "fp32",
                   anchor: torch.Tensor | None = None) -> torch.Tensor:
    """Animate `source` (1, 3, H, W) with `driving` (T, 3, H, W), floats in [0, 1] -> (T, 3, H, W).

    Same semantics as the reference demo (first driving frame is the relative anchor,
    no background predictor). Runs on the device of `source`; models must be there too.
    precision: 'fp32' (exact), 'bf16' or 'fp16' convolutions, or 'auto' (bf16 where the device runs it
    natively, fp16 on older CUDA devices, else fp32); anchor: the relative-mode reference
    frame (default the first driving frame).
    """
    from modules.family import family_of_models

    _check_frames("driving", driving, batch_one=False)
    _check_frames("source", source, batch_one=True)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    family = family_of_models(models)
    engine = family.animator_class()  # the family's animator (TPSMM: Animator)
    if precision == "auto":  # decided here for every family's engine, on the source's device
        precision = engine_precision(precision, family.name, source.device, family.precisions)[0]
    animator = engine(models, source, mode=mode, precision=precision, anchor=anchor)
    return torch.cat([animator(driving[i:i + batch_size]) for i in range(0, driving.shape[0], batch_size)], dim=0)


@torch.no_grad()
def animate_plain(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                  mode: str = "relative") -> torch.Tensor:
    """The reference demo's loop, the baseline of the benches: batch 1, one frame at a time, no caching.

    The source keypoints are computed once (as the reference does); everything else,
    the source's inpainting encoding included, is recomputed for every frame.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    kp_detector, dense, inpainting = (models["kp_detector"], models["dense_motion_network"],
                                      models["inpainting_network"])
    kp_source = kp_detector(source)
    kp_initial = kp_detector(driving[:1])
    out = []
    for t in range(driving.shape[0]):
        frame = driving[t:t + 1]
        kp_driving = kp_detector(frame)
        if mode == "relative":
            kp_norm = relative_kp(kp_source, kp_driving, kp_initial)
        elif mode == "avd":
            kp_norm = models["avd_network"](kp_source, kp_driving)
        else:
            kp_norm = kp_driving
        motion = dense(source, kp_driving=kp_norm, kp_source=kp_source)
        out.append(inpainting(source, motion)["prediction"])
    return torch.cat(out, dim=0)
