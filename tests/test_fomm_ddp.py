"""FOMM under DDP: two gloo processes compute the same gradients as one process on the same global batch.

Covers the Jacobian equivariance loss (autograd.grad with create_graph inside the DDP forward), the
adversarial terms and the discriminator's own DDP wrapper. BatchNorm runs in eval mode here: its
statistics are per rank on CPU (SyncBatchNorm is GPU-only).
"""
from __future__ import annotations

import contextlib
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from modules import build_models, load_checkpoint
from modules.fomm.training import FOMMTraining
from utils.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.yaml")
CHECKPOINT = os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.pth.tar")
GLOBAL_BATCH = 4


class TinyFeatures(nn.Module):
    """A frozen 2-level feature pyramid standing in for VGG-19 (keeps the test fast)."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(4, 3, 3, 3, generator=gen) * 0.3, requires_grad=False)
        self.w2 = nn.Parameter(torch.randn(4, 4, 3, 3, generator=gen) * 0.3, requires_grad=False)

    def forward(self, x):
        a = torch.relu(nn.functional.conv2d(x, self.w1, padding=1))
        return [a, torch.relu(nn.functional.conv2d(nn.functional.avg_pool2d(a, 2), self.w2, padding=1))]


def make_family() -> FOMMTraining:
    config = load_config(CONFIG)
    tp = config["train_params"]
    tp["scales"] = [1]
    tp["loss_weights"]["generator_gan"] = 1
    tp["loss_weights"]["perceptual"] = [10, 10, 0, 0, 0]
    models = build_models(config)
    load_checkpoint(CHECKPOINT, models)
    family = FOMMTraining(models, config, perceptual=TinyFeatures())
    for m in family.models.values():
        m.train()
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.eval()
    return family


def batch() -> dict:
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
    for name, module in list(family.ddp_modules.items()):
        family.ddp_modules[name] = nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
    local = GLOBAL_BATCH // world
    rows = slice(rank * local, (rank + 1) * local)
    data = {k: v[rows] for k, v in batch().items()}
    draws = family.draws(0, 3, GLOBAL_BATCH, rows, "cpu")
    family.forward_backward(data, 0, draws, contextlib.nullcontext)
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
    assert set(family.ddp_modules) == {"full", "disc_full"}
    draws = family.draws(0, 3, GLOBAL_BATCH, slice(0, GLOBAL_BATCH), "cpu")
    losses, _ = family.forward_backward(batch(), 0, draws, contextlib.nullcontext)
    assert {"equivariance_jacobian", "gen_gan", "feature_matching", "disc_gan"} <= set(losses)
    single = gradients(family)
    assert set(single) == set(ddp)
    assert any(k.startswith("discriminator.") for k in single) and any(k.startswith("kp_detector.") for k in single)
    # per network, errors relative to its largest gradient (near-zero entries differ by summation order only)
    scale = {}
    for key, grad in single.items():
        top = key.split(".")[0]
        scale[top] = max(scale.get(top, 0.0), grad.abs().max().item())
    for key, grad in single.items():
        err = (grad - ddp[key]).abs().max().item()
        assert err <= 1e-5 * scale[key.split(".")[0]], f"{key}: {err:.3g}"
