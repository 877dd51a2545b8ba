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
    """Memory this process can still get on `device` ('cpu', 'cuda', 'cuda:N'), or None when it cannot be read.

    On the CPU, the smaller of the machine's available memory and what is left under the process's
    address-space limit (`ulimit -v`, RLIMIT_AS), which fails allocations long before the machine is full.
    """
    return memory_left(device)[0]


def memory_left(device: str = "cpu") -> tuple[int | None, str]:
    """(bytes, what bounds them) for `available_bytes`: 'free on <device>' or the address-space limit."""
    free = _free_bytes(device)
    if str(device).startswith("cuda"):
        return free, f"free on {device}"
    left = address_space_left()
    if left is not None and (free is None or left < free):
        return left, "left under this process's address-space limit (ulimit -v)"
    return free, f"free on {device}"


def address_space_left() -> int | None:
    """Bytes of virtual address space left under RLIMIT_AS (its soft limit minus this process's VmSize), or
    None without a limit (or where it cannot be read)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            used = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return max(0, int(soft) - used)


def _free_bytes(device: str) -> int | None:
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
    free, where = memory_left(device) if limit is None else (limit, f"free on {device}")
    if free is not None and needed > free:
        raise ResourceError(f"{what} needs at least {gib(needed)} of memory, more than the {gib(free)} {where}; "
                            f"use a smaller size")


def animation_bytes(height: int, width: int, channels: int, batch: int = 1) -> int:
    """Lower bound of an animation's memory at `height` x `width`: the full-resolution source encoder map
    (`channels` wide, fp32), its warped copy and the decoder's output at full resolution, per frame in the
    batch, plus the uint8 input and output frames."""
    pixels = int(height) * int(width)
    return pixels * (3 * channels * 4 * max(1, int(batch)) + 2 * 3 * max(1, int(batch)))
