"""Model families: the one registry that says what a config builds, trains and animates.

A family (`modules/tpsmm`, `modules/fomm`, or one a user registers) is a `Family`
record: its config schema, how to build its networks, its training class, its
animator, which networks animation can do without, and the input size multiple.
`load_config` picks the family of a raw config (an explicit top-level
`model_family: NAME`, else the first registered family whose `detect` claims it,
else the default 'tpsmm'), validates it against that family's schema and records the
family under `model_family` in the resolved config. Everything else asks the registry:
`family_of(config)` or `family_of_models(models)`.

Adding a family: build a `Family` and call `register_family(family)` before loading
its configs (see ARCHITECTURE.md).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from utils.config import ConfigError, read_yaml, validate

DEFAULT_FAMILY = "tpsmm"


def _resolve(target: Any) -> Any:
    """A 'package.module:attribute' string -> the attribute (imported on first use); anything else as is."""
    if isinstance(target, str):
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)
    return target


@dataclass(frozen=True)
class Family:
    """Everything the entry points need to know about one model family.

    schema: the typed config schema (`utils.config.Spec` leaves).
    build: resolved config -> {checkpoint name: nn.Module} (CPU, train mode).
    training: the training class (or 'module:Class'), built as `cls(models, config, perceptual)`.
    animator: the animator class (or 'module:Class'), built as
      `cls(models, source, mode=..., precision=..., anchor=..., background=...)`.
    networks: the networks animation needs; optional: those it can do without.
    size_multiple: resolved config -> the integer every frame side must be a multiple of.
    precisions: the animator precisions the family honours.
    modes: the animation modes it offers.
    detect: raw YAML dict -> True when it is this family's config (None: only by name).
    """

    name: str
    schema: Mapping[str, Any]
    build: Callable[[dict], dict[str, nn.Module]]
    training: Any
    animator: Any
    networks: tuple[str, ...]
    optional: tuple[str, ...] = ()
    size_multiple: Callable[[dict], int] = lambda config: 1
    precisions: tuple[str, ...] = ("fp32",)
    modes: tuple[str, ...] = ("relative", "standard")
    detect: Callable[[Mapping[str, Any]], bool] | None = None

    def training_class(self) -> type:
        return _resolve(self.training)

    def animator_class(self) -> type:
        return _resolve(self.animator)


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add (or replace) a family in the registry; returns it."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family takes a modules.family.Family, got {type(family).__name__}")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    """Every registered family by name (`modules/__init__.py` registers the built-in ones)."""
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    known = families()
    if name not in known:
        raise ConfigError(f"unknown model family {name!r} (registered: {', '.join(sorted(known))})")
    return known[name]


def family_of(config: Mapping[str, Any]) -> Family:
    """The family of a resolved config (or of a raw one, by the rules of `load_config`)."""
    name = config.get("model_family") if isinstance(config, Mapping) else None
    if name is None:
        name = detect_family(config)
    return get_family(str(name))


def detect_family(raw: Mapping[str, Any]) -> str:
    """The family name of a raw config dict."""
    known = families()
    for name, family in known.items():
        if name != DEFAULT_FAMILY and family.detect is not None and family.detect(raw):
            return name
    return DEFAULT_FAMILY


def family_of_models(models: Mapping[str, nn.Module]) -> Family:
    """The family whose required networks are all in `models` (the most specific match)."""
    matches = [f for f in families().values() if all(n in models for n in f.networks)]
    if not matches:
        raise ValueError(f"no model family has the networks {', '.join(models)}")
    return max(matches, key=lambda f: len(f.networks))


def resolve_config(raw: Mapping[str, Any] | None, source: str = "<dict>") -> dict[str, Any]:
    """Validate a raw config dict against its family's schema and fill in defaults."""
    raw = dict(raw or {})
    name = raw.pop("model_family", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{source}: 'model_family' must be a string, got {name!r}")
    family = get_family(name) if name is not None else get_family(detect_family(raw))
    config = validate(raw, family.schema, source)
    config["model_family"] = family.name
    if config.get("dataset_params", {}).get("frame_shape", 0) is None:
        config["dataset_params"]["frame_shape"] = [256, 256, 3]
    return config


def load_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A YAML path (`yaml.safe_load`) or a raw / resolved dict -> the resolved, strict, typed config."""
    if isinstance(config, Mapping):
        return resolve_config(config, "<dict>")
    path = os.fspath(config)
    return resolve_config(read_yaml(path), path)


def build_models(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, nn.Module]:
    """Build every network of the config's model family, keyed by the published checkpoint names.

    `config` is a YAML path or a (raw or resolved) config dict. Modules are on the CPU
    in train mode; callers move them with `.to(device)`.
    """
    resolved = load_config(config)
    return family_of(resolved).build(resolved)
