"""Checkpoints in the published layout: {name: state_dict, ..., 'epoch': int}, written atomically.

Reading never runs code from the file (`torch.load(weights_only=True)`). A trusted legacy
file that holds pickled Python objects is converted once, with explicit consent, to a
tensors-only copy:

    python -m modules.checkpoint --convert OLD.pth.tar --out NEW.pth.tar --trust-this-file
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import re
import sys
import zipfile
from typing import Any, Mapping

import torch
from torch import nn

from utils.errors import UserError, one_line
from utils.io import stale_temporaries, temporary_path


class CheckpointError(UserError, RuntimeError):
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
    not_one = not_a_checkpoint(path)
    if not_one:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: {not_one}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise CheckpointError(_pickled_code_message(path, str(err))) from None
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a PyTorch checkpoint "
                              f"({one_line(err, 200) or type(err).__name__})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError,
            KeyError) as err:  # IndexError, KeyError (an unknown opcode): the weights-only unpickler on arbitrary bytes
        if "can't allocate memory" in str(err):  # torch's CPU allocator, e.g. under `ulimit -v`: not the file's fault
            raise CheckpointError(f"cannot read checkpoint {path}: out of memory") from None
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a PyTorch checkpoint "
                              f"({one_line(err, 200) or type(err).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} is not a dict of state dicts")
    return data


def not_a_checkpoint(path: str | os.PathLike) -> str | None:
    """What the file is when its first bytes say it cannot be a checkpoint (None when they could be).

    torch.save writes a zip archive ('PK') or, in the legacy format, a pickle (protocol 2+: 0x80);
    anything else (an HTML page saved by a failed download, a text file) is described instead of
    being fed to the unpickler, whose errors would call it 'pickled Python objects' or a KeyError.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:  # unreadable is not "not a checkpoint": torch.load's error says why
        return None
    if head.startswith((b"PK", b"\x80")):
        return None
    if not head:
        return "the file is empty"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<body")) or b"<html" in text:
        return "it is an HTML page (what a failed or refused download saves); download the file again"
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown content (starts with bytes {head[:8].hex(' ')})"
    if all(ch.isprintable() or ch in "\t\r\n" for ch in sample):
        return f"it is a text file (starts {one_line(sample, 40)!r})"
    return f"unknown content (starts with bytes {head[:8].hex(' ')})"


def _pickled_code_message(path: str, error: str) -> str:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", error)
    what = f" (the first is {found.group(1)})" if found else ""
    return (f"checkpoint {path} holds pickled Python objects{what}, which could run code when loaded, so it is "
            f"refused; if you trust its source, convert it once to tensors only: python -m modules.checkpoint "
            f"--convert {path} --out <new file> --trust-this-file")


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
    shapes are checked strictly; the error names the first problem. An optimizer state that
    does not fit its optimizer (the published MRAA AVD stage saved its AVD optimizer under
    `optimizer_reconstruction` too) is an error, or with `strict=False` left unloaded and
    named in the result's `unfit_optimizers`.
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
    unfit = []
    for name, opt in (optimizers or {}).items():
        if name in data and opt is not None:
            try:
                opt.load_state_dict(data[name])
            except ValueError as err:  # another optimizer's state under this name (published MRAA AVD files)
                if not strict:
                    unfit.append(name)
                    continue
                raise CheckpointError(f"checkpoint {path}: '{name}' does not fit this run's optimizer "
                                      f"({one_line(err, 160)})") from None
    used = set(models) | set(optimizers or {})
    rest = {k: v for k, v in data.items() if k not in used}
    if unfit:
        rest["unfit_optimizers"] = unfit
    return rest


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
    for stale in stale_temporaries(path):  # left by a process killed while writing (kill -9, power loss)
        os.remove(stale)
        print(f"removed {stale}, an unfinished checkpoint write of a process that no longer runs", file=sys.stderr)
    write_checkpoint_file(data, path)
    return path


def write_checkpoint_file(data: dict, path: str) -> None:
    """torch.save to `<path>.tmp.<pid>`, renamed over `path` when complete; a failed write (disk full: an
    OSError, or a RuntimeError from torch's zip writer) is a one-line CheckpointError."""
    tmp = temporary_path(path)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or one_line(err)}; "
                              f"the previous checkpoint (if any) is unchanged") from None
    except RuntimeError as err:  # torch's zip writer reports a full disk as "PytorchStreamWriter failed writing file"
        raise CheckpointError(f"cannot write checkpoint {path}: {one_line(err, 200)} (is the disk full?); "
                              f"the previous checkpoint (if any) is unchanged") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def latest_checkpoint(folder: str | os.PathLike, prefix: str = "",
                      skipped: list[str] | None = None) -> str | None:
    """The newest complete training checkpoint in `folder` (for `--checkpoint auto`), or None.

    `<prefix>checkpoint.pth.tar` if it reads and holds an epoch (`epoch`, or a stage's `epoch_<stage>`
    such as MRAA's `epoch_reconstruction`; it is always written first), else the highest-numbered
    `<prefix>%08d-checkpoint.pth.tar` that does.
    skipped: gets '<path>: <why>' for each newer checkpoint passed over (unreadable, no epoch).
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
            if any(key == "epoch" or str(key).startswith("epoch_") for key in read_checkpoint(path)):
                return path
            why = "it holds no epoch (not a training checkpoint)"
        except CheckpointError as err:
            why = str(err).replace(f" {path}", "", 1)
        if skipped is not None:
            skipped.append(f"{path}: {why}")
    return None


def tensors_only(value: Any, where: str = "", dropped: list[str] | None = None) -> Any:
    """A copy of `value` keeping containers, tensors, numbers, strings and None; other objects are
    dropped and their places listed in `dropped`."""
    if isinstance(value, torch.Tensor) or value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (dict, collections.OrderedDict):  # exact types: a subclass is a pickled object
        out = {}
        for key, item in value.items():
            kept = tensors_only(item, f"{where}.{key}" if where else str(key), dropped)
            if kept is not _DROPPED:
                out[key] = kept
        return out
    if type(value) in (list, tuple):
        items = [tensors_only(item, f"{where}[{i}]", dropped) for i, item in enumerate(value)]
        return type(value)(item for item in items if item is not _DROPPED)
    if dropped is not None:
        dropped.append(f"{where or '<top>'} ({type(value).__module__}.{type(value).__name__})")
    return _DROPPED


_DROPPED = object()


def convert_legacy(path: str, out: str) -> list[str]:
    """Load a trusted legacy checkpoint with pickled objects once and save its tensors only; returns what was dropped."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.abspath(path) == os.path.abspath(out):
        raise CheckpointError("--out must differ from the input (the original stays as it is)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)  # consent given by --trust-this-file
    except Exception as err:  # noqa: BLE001  (any unpickling failure of a foreign file)
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(err, 200)}") from None
    dropped: list[str] = []
    clean = tensors_only(data, "", dropped)
    if not isinstance(clean, dict):
        raise CheckpointError(f"checkpoint {path} is not a dict of state dicts")
    write_checkpoint_file(clean, out)
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert a trusted legacy checkpoint to tensors only.")
    parser.add_argument("--convert", required=True, metavar="OLD", help="the checkpoint with pickled objects")
    parser.add_argument("--out", required=True, metavar="NEW", help="where to write the tensors-only copy")
    parser.add_argument("--trust-this-file", action="store_true",
                        help="confirm that OLD comes from a source you trust (loading it may run its code)")
    args = parser.parse_args(argv)
    try:
        if not args.trust_this_file:
            raise CheckpointError("loading OLD runs any code pickled in it: add --trust-this-file if you trust "
                                  "its source")
        dropped = convert_legacy(args.convert, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}" + (f" (dropped {len(dropped)} object(s): {', '.join(dropped[:5])})" if dropped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
