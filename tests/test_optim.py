"""utils.optim.adam: the fused kernel where it applies, with the plain Adam update rule."""
from __future__ import annotations

import torch

from utils.optim import adam


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g)) for shape in ((7, 3), (5,), (2, 4, 3, 3))]


def test_adam_is_fused_on_cpu_and_follows_plain_adam():
    fast, plain = _params(0), _params(0)
    start = [p.detach().clone() for p in fast]
    opt_fast = adam(fast, lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-4)
    opt_plain = torch.optim.Adam(plain, lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-4)
    assert opt_fast.param_groups[0]["fused"] is True
    assert not opt_plain.param_groups[0]["fused"]
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in fast]
        for p, q, grad in zip(fast, plain, grads):
            p.grad, q.grad = grad.clone(), grad.clone()
        opt_fast.step()
        opt_plain.step()
    for p, q, p0 in zip(fast, plain, start):
        assert (p - p0).abs().max() > 1e-3  # it moved
        assert (p - q).abs().max() < 1e-6


def test_adam_accepts_param_groups_and_state_round_trip():
    params = _params(2)
    opt = adam([{"params": params[:2]}, {"params": params[2:], "lr": 1e-3}], lr=1e-2)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-3]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    again = adam([{"params": params[:2]}, {"params": params[2:], "lr": 1e-3}], lr=1e-2)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["fused"] is True
    assert torch.equal(again.state[params[0]]["exp_avg"], opt.state[params[0]]["exp_avg"])
