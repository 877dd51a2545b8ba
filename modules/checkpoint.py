"""Checkpoints in the published layout: {name: state_dict, ..., 'epoch': int}, written atomically."""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any, Mapping

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used with the given models (one-line message)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP/compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """torch.load with weights_only=True, turning every failure into a one-line CheckpointError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            IndexError) as err:  # IndexError: the weights-only unpickler on arbitrary bytes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a PyTorch checkpoint ({first[:200]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} is not a dict of state dicts")
    return data


def _check_state_dict(name: str, module: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}"
                  for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s) e.g. {name}.{missing[0]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s) e.g. {name}.{unexpected[0]}")
    if mismatched:
        problems.append(f"shape mismatch {name}.{mismatched[0]}" + (f" (+{len(mismatched) - 1} more)" if len(mismatched) > 1 else ""))
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the config: " + "; ".join(problems))


def load_checkpoint(path: str | os.PathLike, models: Mapping[str, nn.Module],
                    optimizers: Mapping[str, Any] | None = None, map_location: Any = "cpu",
                    strict: bool = True) -> dict:
    """Load weights (and optimizer states) in place; return the rest of the checkpoint (e.g. 'epoch').

    Every model given must be in the checkpoint, except `avd_network` and `bg_predictor`
    when `strict=False` (the main run's checkpoint has no AVD network yet). Keys and
    shapes are checked strictly; the error names the first problem.
    """
    path = os.fspath(path)
    data = read_checkpoint(path, map_location)
    for name, model in models.items():
        if name not in data:
            if not strict and name in ("avd_network", "bg_predictor"):
                continue
            raise CheckpointError(f"checkpoint {path} has no '{name}' (has: {', '.join(sorted(map(str, data)))})")
        module = unwrap(model)
        _check_state_dict(name, module, data[name], path)
        module.load_state_dict(data[name])
    for name, opt in (optimizers or {}).items():
        if name in data and opt is not None:
            opt.load_state_dict(data[name])
    used = set(models) | set(optimizers or {})
    return {k: v for k, v in data.items() if k not in used}


def save_checkpoint(path: str | os.PathLike, models: Mapping[str, nn.Module],
                    optimizers: Mapping[str, Any] | None = None, **extra: Any) -> str:
    """Write {name: state_dict} + optimizer states + extra entries (epoch, config, ...) atomically."""
    path = os.fspath(path)
    data: dict[str, Any] = {name: unwrap(m).state_dict() for name, m in models.items()}
    for name, opt in (optimizers or {}).items():
        if opt is not None:
            data[name] = opt.state_dict()
    data.update(extra)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def latest_checkpoint(folder: str | os.PathLike, prefix: str = "") -> str | None:
    """The newest complete training checkpoint in `folder` (for `--checkpoint auto`), or None.

    `<prefix>checkpoint.pth.tar` if it reads and holds an `epoch` (it is always written
    first), else the highest-numbered `<prefix>%08d-checkpoint.pth.tar` that does.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return None
    numbered = sorted((name for name in os.listdir(folder)
                       if name.startswith(prefix) and name.endswith("-checkpoint.pth.tar")
                       and name[len(prefix):-len("-checkpoint.pth.tar")].isdigit()), reverse=True)
    for name in [f"{prefix}checkpoint.pth.tar"] + numbered:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            if "epoch" in read_checkpoint(path):
                return path
        except CheckpointError:
            continue
    return None
