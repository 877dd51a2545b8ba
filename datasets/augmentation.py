"""Augmentations of a training clip, the same random draw for every frame of it (FOMM/TPSMM recipe).

Each is done as the config says: time and horizontal flips, random zoom
(`resize_param.ratio`), random crop (`crop_param.size`, padded where the zoomed
frame is smaller, then resized back), rotation, and colour jitter (brightness,
contrast, saturation, hue as in torchvision's ColorJitter, random order). Unlike the
reference, jitter runs on float tensors (no uint8 round trips or deprecated skimage
calls) and the crop is resized back to the frame shape instead of changing it.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _coin(gen: torch.Generator) -> bool:
    return bool(torch.rand((), generator=gen) < 0.5)


class VideoAugmentation:
    """Callable (T, 3, H, W) float clip, torch.Generator -> augmented clip of the same shape."""

    def __init__(self, flip_param: dict | None = None, jitter_param: dict | None = None,
                 crop_param: dict | None = None, resize_param: dict | None = None,
                 rotation_param: dict | None = None):
        flip = flip_param or {}
        self.time_flip = bool(flip.get("time_flip", False))
        self.horizontal_flip = bool(flip.get("horizontal_flip", False))
        jitter = jitter_param or {}
        self.brightness = float(jitter.get("brightness") or 0.0)
        self.contrast = float(jitter.get("contrast") or 0.0)
        self.saturation = float(jitter.get("saturation") or 0.0)
        self.hue = float(jitter.get("hue") or 0.0)
        self.crop_size = (crop_param or {}).get("size")
        self.resize_ratio = (resize_param or {}).get("ratio")
        self.degrees = float((rotation_param or {}).get("degrees") or 0.0)

    def __call__(self, clip: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        h, w = clip.shape[2:]
        if self.time_flip and _coin(gen):
            clip = clip.flip(0)
        if self.horizontal_flip and _coin(gen):
            clip = clip.flip(3)
        if self.resize_ratio:
            ratio = _uniform(gen, float(self.resize_ratio[0]), float(self.resize_ratio[1]))
            size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
            clip = F.interpolate(clip, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self.crop_size:
            clip = self._random_crop(clip, (int(self.crop_size[0]), int(self.crop_size[1])), gen)
        if self.degrees:
            angle = _uniform(gen, -self.degrees, self.degrees)
            clip = TF.rotate(clip, angle, interpolation=TF.InterpolationMode.BILINEAR)
        if tuple(clip.shape[2:]) != (h, w):
            clip = F.interpolate(clip, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return self._jitter(clip.clamp(0, 1), gen)

    @staticmethod
    def _random_crop(clip: torch.Tensor, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
        ch, cw = size
        h, w = clip.shape[2:]
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:  # zero-pad symmetrically, as the reference's crop does
            clip = F.pad(clip, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            h, w = clip.shape[2:]
        top = int(torch.randint(h - ch + 1, (1,), generator=gen))
        left = int(torch.randint(w - cw + 1, (1,), generator=gen))
        return clip[:, :, top:top + ch, left:left + cw]

    def _jitter(self, clip: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        ops = []
        if self.brightness:
            f = _uniform(gen, max(0.0, 1 - self.brightness), 1 + self.brightness)
            ops.append(lambda x, f=f: TF.adjust_brightness(x, f))
        if self.contrast:
            f = _uniform(gen, max(0.0, 1 - self.contrast), 1 + self.contrast)
            ops.append(lambda x, f=f: TF.adjust_contrast(x, f))
        if self.saturation:
            f = _uniform(gen, max(0.0, 1 - self.saturation), 1 + self.saturation)
            ops.append(lambda x, f=f: TF.adjust_saturation(x, f))
        if self.hue:
            f = _uniform(gen, -min(self.hue, 0.5), min(self.hue, 0.5))
            ops.append(lambda x, f=f: TF.adjust_hue(x, f))
        order = torch.randperm(len(ops), generator=gen).tolist() if ops else []
        for i in order:
            clip = ops[i](clip)
        return clip.clamp(0, 1)
