"""torch.distributed helpers: rank/world size that are 0/1 when not distributed, rank-0-only side effects."""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


DEFAULT_TIMEOUT_S = 600


def init_from_env(device_kind: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); return this rank's device.

    nccl on GPU, gloo on CPU. Without torchrun: no process group, cuda:0 if available else cpu.
    `timeout_s` bounds every collective: a rank whose peer vanished (e.g. its node died) fails
    after at most that long instead of hanging, and torchrun restarts the group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device_kind is None else device_kind == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not is_distributed():
        timeout = datetime.timedelta(seconds=timeout_s)
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", store=attempt_store(store),
                                rank=rank, world_size=world, timeout=timeout)
    return device


def attempt_store(store: dist.Store) -> dist.Store:
    """`store` with keys private to this torchrun attempt (`TORCHELASTIC_RESTART_COUNT`).

    torchrun's workers share the agent's store, which outlives a restart: without a prefix the
    restarted ranks can read the dead attempt's gloo addresses and fail with "connection refused"
    (about half of all restarts here, tests/test_elastic.py).
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    return store if restart is None else dist.PrefixStore(f"attempt{restart}", store)


def broadcast_object(value, src: int = 0):
    """`value` from rank `src` on every rank (unchanged when not distributed)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value)
        value /= get_world_size()
    return value


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when `flag` is true on at least one (e.g. a signal that reached one rank)."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
