"""The one pair of frame converters: uint8 (T, H, W, 3) arrays <-> float (T, 3, H, W) tensors in [0, 1]."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def to_tensor(frames: Sequence[np.ndarray] | np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) (an array or a list of (H, W, 3)) -> float32 (T, 3, H, W) in [0, 1]."""
    array = np.ascontiguousarray(np.stack(frames) if isinstance(frames, (list, tuple)) else frames)
    if array.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {array.dtype}")
    tensor = torch.from_numpy(array)
    if device is not None:
        tensor = tensor.to(device)
    return tensor.permute(0, 3, 1, 2).float().div_(255.0)  # T x 3 x H x W


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float (T, 3, H, W) in [0, 1] -> uint8 (T, H, W, 3) on the CPU (clamped, rounded)."""
    return frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
