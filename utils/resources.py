"""Refuse work that cannot fit in memory before it starts (one line naming the size and the limit).

The estimates are lower bounds built from maps that must exist at once; a request is
refused only when even the lower bound exceeds what the device has free, so nothing
that would fit is refused, and an absurd size (say 100000 x 100000) fails at once
instead of being killed by the kernel's out-of-memory handler halfway.
"""
from __future__ import annotations

import os

from utils.errors import UserError


class ResourceError(UserError):
    """A request that cannot fit in the memory of the machine (one-line, user-facing)."""


def available_bytes(device: str = "cpu") -> int | None:
    """Free memory of `device` ('cpu', 'cuda', 'cuda:N'), or None when it cannot be read."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def check_fits(needed: int, what: str, device: str = "cpu", limit: int | None = None) -> None:
    """Raise `ResourceError` when `needed` bytes (a lower bound) exceed the free memory of `device` (or `limit`)."""
    free = available_bytes(device) if limit is None else limit
    if free is not None and needed > free:
        raise ResourceError(f"{what} needs at least {gib(needed)} of memory, more than the {gib(free)} free "
                            f"on {device}; use a smaller size")


def animation_bytes(height: int, width: int, channels: int, batch: int = 1) -> int:
    """Lower bound of an animation's memory at `height` x `width`: the full-resolution source encoder map
    (`channels` wide, fp32), its warped copy and the decoder's output at full resolution, per frame in the
    batch, plus the uint8 input and output frames."""
    pixels = int(height) * int(width)
    return pixels * (3 * channels * 4 * max(1, int(batch)) + 2 * 3 * max(1, int(batch)))
