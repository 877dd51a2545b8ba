"""Shared harness for the DDP tests: N gloo processes vs one process on the same global batch."""
from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gradients(family) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": p.grad.detach().clone() for n, m in family.models.items()
            for k, p in m.named_parameters() if p.grad is not None}


def batchnorm_eval(modules) -> None:
    """BatchNorm in eval mode: its statistics are per rank on CPU (SyncBatchNorm is GPU-only)."""
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.eval()


def backward_only(family, batch: dict, epoch: int, draws: dict) -> dict[str, torch.Tensor]:
    """Every stage's backward as the trainer runs it, without the optimizer steps: the losses.

    A stage zeroes only its own optimizers' gradients, so afterwards each network holds the
    gradients of the stage that steps it (e.g. FOMM's discriminator: those of `disc_gan`).
    """
    from train import TrainStep

    step = TrainStep(family)
    shared: dict = {}
    losses: dict = {}
    for stage in family.stages(epoch):
        losses.update(step.backward(stage, batch, draws, shared))
    return losses


def _worker(rank: int, world: int, port: int, out: str, make_family: Callable, make_batch: Callable,
            epoch: int, step: int, global_batch: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    family = make_family()
    for name, module in list(family.ddp_modules.items()):
        family.ddp_modules[name] = nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
    local = global_batch // world
    rows = slice(rank * local, (rank + 1) * local)
    data = {k: v[rows] for k, v in make_batch().items()}
    backward_only(family, data, epoch, family.draws(epoch, step, global_batch, rows, "cpu"))
    if rank == 0:
        torch.save(gradients(family), out)
    dist.destroy_process_group()


def ddp_and_single_gradients(tmp_path, make_family: Callable, make_batch: Callable, epoch: int,
                             global_batch: int, step: int = 3, world: int = 2):
    """(gradients of rank 0 under DDP, gradients of one process, losses of one process)."""
    out = str(tmp_path / "ddp_grads.pt")
    mp.spawn(_worker, args=(world, free_port(), out, make_family, make_batch, epoch, step, global_batch),
             nprocs=world, join=True)
    ddp = torch.load(out, weights_only=True)
    family = make_family()
    draws = family.draws(epoch, step, global_batch, slice(0, global_batch), "cpu")
    losses = backward_only(family, make_batch(), epoch, draws)
    return ddp, gradients(family), losses, draws, family


def kill_rank_at(epoch: int, step: int, rank: int = 1) -> None:
    """Test-only fault for the elastic test: SIGKILL `rank` as it starts (epoch, step), on torchrun's first attempt.

    Wraps `train.training_class` so the family's `draws` (called once per step) kills the process.
    """
    import train
    from utils import dist as du

    original = train.training_class

    def dying(family: str):
        cls = original(family)

        class Dying(cls):
            def draws(self, e, s, *args):
                first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
                if (e, s) == (epoch, step) and du.get_rank() == rank and first_attempt:
                    os.write(2, f"test hook: rank {rank} SIGKILLs itself at epoch {e} step {s}\n".encode())
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().draws(e, s, *args)
        return Dying

    train.training_class = dying


if __name__ == "__main__":  # torchrun tests/ddp_harness.py --kill_at EPOCH STEP <run.py arguments>
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    argv = sys.argv[1:]
    if argv[:1] == ["--kill_at"]:
        kill_rank_at(int(argv[1]), int(argv[2]))
        argv = argv[3:]
    import run

    sys.exit(run.main(argv))
