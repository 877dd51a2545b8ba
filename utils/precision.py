"""The one place that decides a compute precision from the hardware: `resolve_precision`.

`precision: auto` (animate.py --precision, demo.py, reconstruction.py, the web page, the Python API's
`make_animation` / animators, `train_params.precision`) becomes:

- bf16 where the device runs it natively: a CPU with AMX (`amx_bf16` / `amx_tile`) or AVX-512 BF16
  (`avx512_bf16`) in /proc/cpuinfo's flags, a CUDA device of compute capability 8.0 or newer;
- fp16 on an older CUDA device (tensor cores from 7.0; fp16 arithmetic from 5.3);
- fp32 everywhere else (an AVX2 CPU, Apple MPS, unknown devices).

An explicit bf16 / fp16 that the device only emulates still runs, with a one-line warning: on a CPU
without those flags bf16 convolutions took 5-7x the fp32 time (issue 25, an AVX2 EPYC), and fp16 on
a CPU without AVX-512 FP16 / AMX-FP16 is slower still.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable

PRECISIONS = ("fp32", "bf16", "fp16")
CHOICES = ("auto",) + PRECISIONS
CPU_BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")
CPU_FP16_FLAGS = ("amx_fp16", "avx512_fp16")


@dataclass(frozen=True)
class Precision:
    """What `resolve_precision` chose: `name` (fp32 / bf16 / fp16), `why` (for the line entry points print)
    and `warning` (one line, or None): the precision asked for is emulated on this device."""

    name: str
    why: str
    warning: str | None = None

    def line(self) -> str:
        return f"precision {self.name} ({self.why})"


@functools.lru_cache(maxsize=None)
def _read_cpu_flags(path: str) -> frozenset[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):  # x86 / ARM
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (the first processor's), empty where unknown."""
    return _read_cpu_flags(path)


def _cuda_capability(device: Any) -> tuple[int, int]:
    import torch

    return torch.cuda.get_device_capability(device)


def native_precisions(device: Any, flags: Iterable[str] | None = None,
                      capability: tuple[int, int] | None = None) -> tuple[str, ...]:
    """The precisions `device` computes natively (always fp32). flags: the CPU's (default /proc/cpuinfo's);
    capability: a CUDA device's (default asked from torch); both are arguments so tests can fake them."""
    kind = str(getattr(device, "type", device)).split(":")[0]
    if kind == "cpu":
        have = set(cpu_flags() if flags is None else flags)
        return ("fp32",) + (("bf16",) if have & set(CPU_BF16_FLAGS) else ()) + \
            (("fp16",) if have & set(CPU_FP16_FLAGS) else ())
    if kind == "cuda":
        major, minor = capability if capability is not None else _cuda_capability(device)
        return ("fp32",) + (("bf16",) if major >= 8 else ()) + (("fp16",) if (major, minor) >= (5, 3) else ())
    if kind == "mps":
        return ("fp32", "fp16")
    return ("fp32",)


def _device_words(kind: str, flags: Iterable[str] | None, capability: tuple[int, int] | None, device: Any) -> str:
    if kind == "cpu":
        have = set(cpu_flags() if flags is None else flags)
        found = [f for f in CPU_BF16_FLAGS if f in have]
        return f"this CPU has {', '.join(found)}" if found else "this CPU has no AVX-512 BF16 or AMX"
    if kind == "cuda":
        major, minor = capability if capability is not None else _cuda_capability(device)
        return f"CUDA compute capability {major}.{minor}"
    return f"a {kind} device"


def resolve_precision(precision: str, device: Any, supported: Iterable[str] = PRECISIONS,
                      flags: Iterable[str] | None = None, capability: tuple[int, int] | None = None) -> Precision:
    """`precision` ('auto', 'fp32', 'bf16', 'fp16') on `device` for an engine that offers `supported`.

    auto: bf16 where native, else fp16 on CUDA, else fp32 (each only if `supported`). An explicit
    precision is kept; when the device only emulates it, `warning` says so and roughly how much slower.
    ValueError for a name outside CHOICES or `supported`.
    """
    supported = tuple(supported)
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {precision!r}")
    kind = str(getattr(device, "type", device)).split(":")[0]
    native = native_precisions(device, flags, capability)
    words = _device_words(kind, flags, capability, device)
    if precision == "auto":
        for name in ("bf16", "fp16") if kind == "cuda" else ("bf16",):
            if name in native and name in supported:
                return Precision(name, f"auto: {words}")
        return Precision("fp32", f"auto: {words}" + ("" if kind != "cpu" or "bf16" not in native
                                                      else "; this engine has no bf16 path"))
    if precision not in supported:
        raise ValueError(f"precision must be one of {', '.join(('auto',) + supported)} here, got {precision!r}")
    if precision in native:
        auto = resolve_precision("auto", device, supported, flags, capability).name
        return Precision(precision, "asked" if auto == precision else f"asked; auto would pick {auto}: {words}")
    slower = "about 5-7x the time of fp32 (measured on an AVX2 CPU)" if kind == "cpu" and precision == "bf16" \
        else "several times the time of fp32"
    return Precision(precision, f"asked; emulated: {words}",
                     warning=f"{precision} is emulated on this {'CPU' if kind == 'cpu' else kind + ' device'} "
                             f"({words}): expect {slower}; precision auto picks "
                             f"{resolve_precision('auto', device, supported, flags, capability).name} here")
