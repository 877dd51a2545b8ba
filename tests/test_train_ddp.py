"""Two gloo processes compute the same gradients as one process on the same global batch."""
from __future__ import annotations

import contextlib
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from modules import build_models
from modules.perceptual import build_perceptual
from modules.tpsmm_training import TPSMMTraining
from utils.config import load_config
from utils.weight_recipe import fill_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "fixtures", "tiny.yaml")
GLOBAL_BATCH = 4
EPOCH = 12  # after bg_start (10), before dropout_epoch (35): bg, dropout and random TPS all active


def make_family():
    config = load_config(CONFIG)
    config["train_params"]["scales"] = [1, 0.5]
    models = fill_models(build_models(config))
    family = TPSMMTraining(models, config, build_perceptual("random_vgg19"))
    family.full.train()
    for m in family.full.modules():  # BatchNorm statistics are per rank on CPU (SyncBatchNorm is GPU-only)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return family


def batch():
    gen = torch.Generator().manual_seed(1)
    return {"source": torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=gen),
            "driving": torch.rand(GLOBAL_BATCH, 3, 64, 64, generator=gen)}


def gradients(family) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": p.grad.detach().clone() for n, m in family.models.items()
            for k, p in m.named_parameters() if p.grad is not None}


def worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    family = make_family()
    family.ddp_modules["full"] = nn.parallel.DistributedDataParallel(family.full, find_unused_parameters=True)
    local = GLOBAL_BATCH // world
    rows = slice(rank * local, (rank + 1) * local)
    data = {k: v[rows] for k, v in batch().items()}
    draws = family.draws(EPOCH, 3, GLOBAL_BATCH, rows, "cpu")
    losses, _ = family.forward_backward(data, EPOCH, draws, contextlib.nullcontext)
    if rank == 0:
        torch.save(gradients(family), out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gradients_equal_single_process(tmp_path):
    out = str(tmp_path / "ddp_grads.pt")
    mp.spawn(worker, args=(2, free_port(), out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)

    family = make_family()
    draws = family.draws(EPOCH, 3, GLOBAL_BATCH, slice(0, GLOBAL_BATCH), "cpu")
    assert "dropout_keep" in draws and "transform" in draws
    family.forward_backward(batch(), EPOCH, draws, contextlib.nullcontext)
    single = gradients(family)
    assert set(single) == set(ddp) and len(single) > 100
    assert any(k.startswith("bg_predictor.") for k in single)
    for key, value in single.items():
        scale = value.abs().max().item() + 1e-8
        assert (value - ddp[key]).abs().max().item() <= 1e-4 * scale + 1e-6, key
