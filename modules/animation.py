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
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import UpBlock2d
from modules.geometry import make_coordinate_grid, tps_from_keypoints, tps_warp_keypoint_mode

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


def _check_precision(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


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
        w = conv.weight.detach()  # Cout x Cin x 3 x 3
        cout = w.shape[0]
        phases = []
        for a in range(2):
            for b in range(2):
                taps = [[w[:, :, list(self._TAPS[a][u])][:, :, :, list(self._TAPS[b][v])].sum(dim=(2, 3))
                         for v in range(2)] for u in range(2)]
                phases.append(torch.stack([torch.stack(row, dim=-1) for row in taps], dim=-2))  # Cout x Cin x 2 x 2
        self.weight = nn.Parameter(torch.cat(phases, dim=0), requires_grad=False)  # 4*Cout x Cin x 2 x 2, (a, b, c)
        bias = conv.bias.detach() if conv.bias is not None else w.new_zeros(cout)
        self.bias = nn.Parameter(bias.repeat(4), requires_grad=False)
        self.out_channels = cout
        self.norm = norm
        self.conv = conv  # the unfolded conv, for small inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h * w < self.MIN_PIXELS:
            return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))), inplace=True)
        c = self.out_channels
        y = F.conv2d(x, self.weight, self.bias, padding=1)  # N x 4C x (h+1) x (w+1)
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


def _prepare_module(module: nn.Module, dtype: torch.dtype, channels_last: bool, fold_upsampling: bool) -> nn.Module:
    """A frozen copy of `module` in `dtype` (norm affine parameters fp32) for the engine."""
    prepared = copy.deepcopy(module).eval()
    for p in prepared.parameters():
        p.requires_grad_(False)

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
    for m in prepared.modules():
        if isinstance(m, (_InstanceNormCL, nn.modules.batchnorm._BatchNorm)):
            continue  # normalisation parameters stay fp32 (mixed-type kernels, fp32 statistics)
        for key, p in m.named_parameters(recurse=False):
            m._parameters[key] = nn.Parameter(p.detach().to(dtype), requires_grad=False)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    return prepared


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
             fold_upsampling: bool = True) -> nn.Module:
    """Cached `_prepare_module(module, ...)`; rebuilt when the module's weights change."""
    options = (dtype, channels_last, fold_upsampling)
    entry = _PREPARED.setdefault(module, {})
    state = _state_key(module)
    hit = entry.get(options)
    if hit is None or hit[0] != state:
        with torch.no_grad():
            hit = (state, _prepare_module(module, dtype, channels_last, fold_upsampling))
        entry[options] = hit
    return hit[1]


# ----------------------------------------------------------------------------- the engine

class Animator:
    """Animate one source image with a stream of driving frames.

    models: the dict from `modules.build_models` (weights loaded, eval mode), on the
    device of `source`. The first driving frame seen is the relative-mode anchor.
    precision: 'fp32' (exact), 'bf16' or 'fp16' for the convolutions (see module doc).
    decoder_batch: frames per inpainting-decoder call. The keypoint detector and the dense
    motion network (weight-bound at their small maps) take the whole batch; the decoder's
    large maps stay in cache one frame at a time on a CPU (measured faster there). None:
    1 on a CPU, the whole batch on a GPU.
    channels_last: channels-last layout; None: on for bf16/fp16 (the AMX/tensor-core layout),
    off for fp32 (InstanceNorm, kept for exactness, would convert the layout twice per block).
    fold_upsampling: the folded UpBlock convs (on by default; off, with channels_last
    off, gives the networks' own forms, for measurements).
    """

    def __init__(self, models: dict[str, nn.Module], source: torch.Tensor, mode: str = "relative",
                 precision: str = "fp32", decoder_batch: int | None = None, channels_last: bool | None = None,
                 fold_upsampling: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "avd" and "avd_network" not in models:
            raise ValueError("mode 'avd' needs an avd_network in the models")
        _check_frames("source", source, batch_one=True)
        self.mode = mode
        self.precision = precision
        self.dtype = _check_precision(precision)
        if channels_last is None:
            channels_last = self.dtype != torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        dense = models["dense_motion_network"]
        inpainting = models["inpainting_network"]
        self.avd = models.get("avd_network")
        self.num_tps = dense.num_tps
        self.kp_variance = dense.kp_variance
        self.multi_mask = dense.multi_mask
        self.dense_motion = dense
        self.inpainting = inpainting
        opts = dict(dtype=self.dtype, channels_last=channels_last, fold_upsampling=fold_upsampling)
        # The keypoint detector and the source encoder stay fp32 at every precision: keypoints drive the
        # TPS solve (a bf16 ResNet moves them by ~1 px, 37 dB instead of 51 dB on vox-256), and the encoder
        # runs once per video.
        exact = dict(opts, dtype=torch.float32)
        self.kp_net = prepared(models["kp_detector"], **exact)
        self.hourglass = prepared(dense.hourglass, **opts)
        self.maps = prepared(dense.maps, **opts)
        self.occlusion = prepared(dense.occlusion, **opts)
        self.up = prepared(dense.up, **opts) if dense.multi_mask else None
        self.resblock = prepared(inpainting.resblock, **opts)
        self.up_blocks = prepared(inpainting.up_blocks, **opts)
        self.final = prepared(inpainting.final, **opts)

        self.source = source.float()
        with torch.inference_mode():
            self.kp_source = self.kp_detector(self.source)  # {'fg_kp': 1 x K*5 x 2}
            self.source_down = dense.downsample(self.source)  # 1 x 3 x h x w
            h, w = self.source_down.shape[2:]
            self.grid = make_coordinate_grid((h, w), torch.float32, source.device)  # h x w x 2
            self.source_heatmap = self._gaussian(self.kp_source["fg_kp"])  # 1 x K*5 x h x w
            encoder = [prepared(inpainting.first, **exact), *prepared(inpainting.down_blocks, **exact)]
            maps, out = [], self._cast(self.source, torch.float32)
            for block in encoder:
                out = block(out)
                maps.append(out.float().contiguous())  # fp32 NCHW: sampled with grid_sample every frame
            self.encoder_maps = maps  # [first, down_1, ..., down_n], full resolution first
        self.kp_initial: dict | None = None
        self._relative_scale: float | None = None
        if decoder_batch is None:
            decoder_batch = 1 if source.device.type == "cpu" else 0
        self.decoder_batch = int(decoder_batch)  # 0: the whole batch

    # -- helpers
    def _cast(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Into the conv networks: compute dtype (default: the engine's) and memory layout."""
        return x.to(dtype=self.dtype if dtype is None else dtype).contiguous(memory_format=self.memory_format)

    def _gaussian(self, kp: torch.Tensor) -> torch.Tensor:
        """kp2gaussian on the cached grid: (B, N, 2) -> (B, N, h, w)."""
        diff = self.grid[None, None] - kp[:, :, None, None, :]  # B x N x h x w x 2
        return torch.exp(-0.5 * (diff ** 2).sum(-1) / self.kp_variance)

    @torch.inference_mode()
    def kp_detector(self, image: torch.Tensor) -> dict:
        """KPDetector.forward on the prepared (fp32, channels-last) ResNet."""
        logits = self.kp_net.fg_encoder(self._cast(image, torch.float32))  # B x K*5*2
        return {"fg_kp": (torch.sigmoid(logits) * 2 - 1).view(image.shape[0], self.num_tps * 5, 2)}

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

    def dense_motion_forward(self, kp_driving: torch.Tensor) -> dict:
        """DenseMotionNetwork.forward (eval, no background motion) on cached source terms.

        kp_driving (B, K*5, 2) -> {'deformation' (B, h, w, 2), 'occlusion_map' [4 x (B, 1, .)]}.
        """
        b = kp_driving.shape[0]
        h, w = self.grid.shape[:2]
        k = self.num_tps
        heat = self._gaussian(kp_driving) - self.source_heatmap  # B x K*5 x h x w
        heatmap = torch.cat([heat.new_zeros(b, 1, h, w), heat], dim=1)  # B x K*5+1 x h x w
        kp_s = self.kp_source["fg_kp"].view(1, k, 5, 2).expand(b, k, 5, 2)
        tps = tps_from_keypoints(kp_driving.view(b, k, 5, 2), kp_s)  # driving -> source
        tps_grids = tps_warp_keypoint_mode(tps, self.grid.view(1, h * w, 2)).view(b, k, h, w, 2)
        identity = self.grid.view(1, 1, h, w, 2).expand(b, 1, h, w, 2)
        transformations = torch.cat([identity, tps_grids], dim=1)  # B x K+1 x h x w x 2
        c = self.source_down.shape[1]
        repeated = self.source_down.expand(b * (k + 1), c, h, w)
        deformed = F.grid_sample(repeated, transformations.reshape(b * (k + 1), h, w, 2), align_corners=True)
        inp = torch.cat([heatmap, deformed.view(b, (k + 1) * c, h, w)], dim=1)  # B x (K*5+1 + C(K+1)) x h x w
        levels = self.hourglass(self._cast(inp), all_levels=True)

        maps = F.softmax(self.maps(levels[-1]).float(), dim=1)  # B x K+1 x h x w, fp32
        deformation = torch.einsum("bkhw,bkhwc->bhwc", maps, transformations)  # TPSMM Eq. 6, B x h x w x 2
        occlusion = []
        if self.multi_mask:
            up_nums = len(self.up)
            first = len(self.occlusion) - up_nums
            for i in range(first):
                occlusion.append(torch.sigmoid(self.occlusion[i](levels[up_nums - len(self.occlusion) + i]).float()))
            feat = levels[-1]
            for i in range(up_nums):
                feat = self.up[i](feat)
                occlusion.append(torch.sigmoid(self.occlusion[i + first](feat).float()))
        else:
            occlusion.append(torch.sigmoid(self.occlusion[0](levels[-1]).float()))
        return {"deformation": deformation, "occlusion_map": occlusion}

    def _warp(self, feature: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """deform_input: fp32 flow resized bilinearly to the feature's size, fp32 grid_sample."""
        h, w = feature.shape[2:]
        if deformation.shape[1:3] != (h, w):
            deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                        align_corners=True).permute(0, 2, 3, 1)
        return F.grid_sample(feature, deformation, align_corners=True)

    def _occlude(self, feature: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
        if not self.multi_mask and feature.shape[2:] != occlusion.shape[2:]:
            occlusion = F.interpolate(occlusion, size=feature.shape[2:], mode="bilinear", align_corners=True)
        return feature * occlusion

    def inpainting_forward(self, dense: dict) -> torch.Tensor:
        """InpaintingNetwork.forward (eval, no warped maps) on the cached encoder maps -> prediction (B, 3, H, W)."""
        enc = self.encoder_maps
        b = dense["deformation"].shape[0]
        deformation, occlusion = dense["deformation"], dense["occlusion_map"]
        n = len(self.up_blocks)
        out = self._cast(self._occlude(self._warp(enc[-1].expand(b, -1, -1, -1), deformation), occlusion[0]))
        encode_i = None
        for i in range(n):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            occ = occlusion[i + 1] if self.multi_mask else occlusion[0]
            # sampled and occluded in fp32, then into the decoder's dtype and layout
            encode_i = self._cast(self._occlude(self._warp(enc[-(i + 2)].expand(b, -1, -1, -1), deformation), occ))
            if i == n - 1:
                break
            out = torch.cat([out, encode_i], dim=1)
        source = self.source.expand(b, -1, -1, -1)
        deformed = self._warp(source, deformation)
        occ_last = occlusion[-1]
        if not self.multi_mask:
            occ_last = F.interpolate(occ_last, size=out.shape[2:], mode="bilinear", align_corners=True)
        out = torch.addcmul(encode_i, out, (1 - occ_last).to(out.dtype))  # out * (1 - occ) + warped first map
        out = torch.sigmoid(self.final(out).float())
        return (out * (1 - occ_last) + deformed * occ_last).contiguous()  # blend with the warped source (Sec. 3.3), fp32

    @torch.inference_mode()
    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        """Predictions (T, 3, H, W), fp32, for a batch of driving frames."""
        _check_frames("driving", driving, batch_one=False)
        kp_norm = self.keypoints(driving.float())
        dense = self.dense_motion_forward(kp_norm["fg_kp"])
        chunk = self.decoder_batch or driving.shape[0]
        if chunk >= driving.shape[0]:
            return self.inpainting_forward(dense)
        return torch.cat([self.inpainting_forward({"deformation": dense["deformation"][i:i + chunk],
                                                   "occlusion_map": [o[i:i + chunk] for o in dense["occlusion_map"]]})
                          for i in range(0, driving.shape[0], chunk)], dim=0)

    def stream(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for batch in batches:
            yield self(batch)


def make_animation(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                   mode: str = "relative", batch_size: int = 8, precision: str = "fp32") -> torch.Tensor:
    """Animate `source` (1, 3, H, W) with `driving` (T, 3, H, W), floats in [0, 1] -> (T, 3, H, W).

    Same semantics as the reference demo (first driving frame is the relative anchor,
    no background predictor). Runs on the device of `source`; models must be there too.
    precision: 'fp32' (exact), 'bf16' or 'fp16' convolutions (TPSMM family).
    """
    if "generator" in models:  # FOMM family
        from modules.fomm import make_fomm_animation
        return make_fomm_animation(source, driving, models, mode=mode, batch_size=batch_size)
    _check_frames("driving", driving, batch_one=False)
    animator = Animator(models, source, mode=mode, precision=precision)
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
