"""Typed, strict configs: every key has a type, a default and (where one applies) a range.

A schema is a nested dict whose leaves are `Spec`s. `validate(raw, schema, source)`
checks a raw YAML dict against it and fills in defaults:

- a key the schema does not have is an error naming the key and the file (with a
  "did you mean" hint);
- a wrong type or an out-of-range value is an error naming key, file, the expected
  type and the value found (`ConfigError`, one line);
- a number YAML reads as a string is read as the number the user meant (YAML 1.1
  reads `2e-4` without a dot as the string "2e-4"; a quoted "10" for an integer key
  is 10);
- a key written with no value (`key:` or `key: null`) takes its default, unless the
  spec is nullable, where null is the value.

Keys marked `compat=True` are accepted because the published configs carry them, and
never read (`compat_keys(schema)` lists them). The model families' schemas live
with the families (`modules/tpsmm`, `modules/fomm`); the sections every family
shares (data, trainer, evaluation) are here.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from utils.errors import UserError
from utils.io import write_text


class ConfigError(UserError):
    """A config file that does not match the schema (one line, names key and file)."""


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
          "list": "a list", "dict": "a mapping"}


@dataclass(frozen=True)
class Spec:
    """One config value: kind ('int' | 'float' | 'bool' | 'str' | 'list' | 'dict'), default, constraints."""

    kind: str
    default: Any = None
    low: float | None = None           # inclusive lower bound (numbers; list items via `item`)
    high: float | None = None          # inclusive upper bound
    above: float | None = None         # exclusive lower bound
    choices: tuple | None = None       # allowed values (str)
    nullable: bool = False             # null is a value (not "use the default")
    item: "Spec | None" = None         # list items
    length: int | None = None          # exact list length
    compat: bool = False               # accepted for the published configs, never read
    doc: str = field(default="", compare=False)

    def expected(self) -> str:
        text = _KINDS[self.kind]
        if self.kind == "list" and self.item is not None:
            text = f"a list of {self.length or ''} {_KINDS[self.item.kind].split(' ', 1)[-1]}s".replace("  ", " ")
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, key: str, source: str) -> Any:
        """The value as the program reads it, or a `ConfigError` naming key and file."""
        if value is None:
            if self.nullable:
                return None
            return copy.deepcopy(self.default)
        converted = _convert(self, value)
        if converted is _BAD:
            raise ConfigError(f"{source}: '{key}' must be {self.expected()}, got {value!r}")
        if self.kind == "list" and self.item is not None:
            converted = [self.item.check(v, f"{key}[{i}]", source) for i, v in enumerate(converted)]
            if self.length is not None and len(converted) != self.length:
                raise ConfigError(f"{source}: '{key}' must have {self.length} items, got {value!r}")
        _check_range(self, converted, key, source)
        return converted


_BAD = object()


def _number(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number


def _convert(spec: Spec, value: Any) -> Any:
    if spec.kind == "bool":
        return value if isinstance(value, bool) else _BAD
    if spec.kind == "str":
        return value if isinstance(value, str) else _BAD
    if spec.kind == "list":
        return list(value) if isinstance(value, (list, tuple)) else _BAD
    if spec.kind == "dict":
        return dict(value) if isinstance(value, Mapping) else _BAD
    if isinstance(value, bool):
        return _BAD
    if isinstance(value, str):
        number = _number(value)
        if number is None:
            return _BAD
        value = number
    if not isinstance(value, (int, float)):
        return _BAD
    if spec.kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                return _BAD
            value = int(value)
        return value
    if not math.isfinite(value):
        return _BAD
    return value


def _check_range(spec: Spec, value: Any, key: str, source: str) -> None:
    if spec.choices is not None and value not in spec.choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in spec.choices], n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"{source}: '{key}' must be one of {', '.join(map(str, spec.choices))}, got {value!r}{tip}")
    if spec.kind not in ("int", "float"):
        return
    if spec.low is not None and value < spec.low:
        raise ConfigError(f"{source}: '{key}' must be >= {spec.low}, got {value!r}")
    if spec.high is not None and value > spec.high:
        raise ConfigError(f"{source}: '{key}' must be <= {spec.high}, got {value!r}")
    if spec.above is not None and value <= spec.above:
        raise ConfigError(f"{source}: '{key}' must be > {spec.above}, got {value!r}")


# -- spec constructors (schemas read like the YAML they check)

def Int(default: int | None, low: int | None = None, high: int | None = None, nullable: bool = False,
        compat: bool = False, doc: str = "") -> Spec:
    return Spec("int", default, low=low, high=high, nullable=nullable, compat=compat, doc=doc)


def Float(default: float | None, low: float | None = None, high: float | None = None, above: float | None = None,
          nullable: bool = False, compat: bool = False, doc: str = "") -> Spec:
    return Spec("float", default, low=low, high=high, above=above, nullable=nullable, compat=compat, doc=doc)


def Bool(default: bool, compat: bool = False, doc: str = "") -> Spec:
    return Spec("bool", default, compat=compat, doc=doc)


def Str(default: str | None, choices: tuple | None = None, nullable: bool = False, compat: bool = False,
        doc: str = "") -> Spec:
    return Spec("str", default, choices=choices, nullable=nullable, compat=compat, doc=doc)


def List(item: Spec, default: list | None, length: int | None = None, nullable: bool = False,
         compat: bool = False, doc: str = "") -> Spec:
    return Spec("list", default, item=item, length=length, nullable=nullable, compat=compat, doc=doc)


def Mapping_(default: dict | None = None, compat: bool = False, doc: str = "") -> Spec:
    """A mapping of free-form keys (not validated inside)."""
    return Spec("dict", default or {}, compat=compat, doc=doc)


# -- validation

def validate(raw: Mapping[str, Any] | None, schema: Mapping[str, Any], source: str = "<dict>",
             path: str = "") -> dict[str, Any]:
    """Check `raw` against `schema` and fill in defaults (see the module docstring)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: '{path or '<top level>'}' must be a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in schema:
            where = f"{path}.{key}" if path else str(key)
            hint = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{source}: unknown config key '{where}'{tip}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        sub = f"{path}.{key}" if path else key
        if isinstance(spec, Spec):
            out[key] = spec.check(raw[key], sub, source) if key in raw else copy.deepcopy(spec.default)
        else:
            out[key] = validate(raw.get(key), spec, source, sub)
    return out


def compat_keys(schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Dotted names of the keys accepted only for compatibility with the published configs."""
    out = []
    for key, spec in schema.items():
        sub = f"{path}.{key}" if path else key
        if isinstance(spec, Spec):
            if spec.compat:
                out.append(sub)
        else:
            out += compat_keys(spec, sub)
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """`yaml.safe_load` of a config file, with one-line errors (missing, not YAML, not a mapping)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    return dict(raw or {})


def save_config(config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config (what a run actually used) next to its outputs, atomically."""
    write_text(path, yaml.safe_dump(dict(config), sort_keys=False))


# -- the sections every model family shares

POSITIVE = dict(low=1)
_AUGMENTATION = {
    "flip_param": {"horizontal_flip": Bool(False), "time_flip": Bool(False)},
    "jitter_param": {k: Float(0.0, low=0.0) for k in ("brightness", "contrast", "saturation", "hue")},
    "crop_param": {"size": List(Int(None, low=1), None, length=2, nullable=True,
                                doc="random crop to [H, W] before resizing back")},
    "resize_param": {"ratio": List(Float(None, above=0.0), None, length=2, nullable=True,
                                   doc="random zoom factor range [lo, hi]")},
    "rotation_param": {"degrees": Float(0.0, low=0.0, high=180.0, doc="random rotation; 0 disables")},
}

DATASET_PARAMS: dict[str, Any] = {
    "root_dir": Str(None, nullable=True, doc="folder with train/ and test/ (required for training)"),
    "frame_shape": List(Int(None, low=1), None, length=3, nullable=True, doc="[H, W, C]; null: [256, 256, 3]"),
    "id_sampling": Bool(False, doc="sample training videos by the id before '#'"),
    "pairs_list": Str(None, nullable=True, compat=True,
                      doc="csv of (source, driving) pairs of the reference's animate protocol"),
    "augmentation_params": _AUGMENTATION,
    "index_cache": Bool(True, doc="keep each split's video index in <split>/.video_index.json (rebuilt where stale)"),
    "frame_cache": Str(None, nullable=True, doc="folder where png strips are expanded into frames once (fast access)"),
}

# the trainer's own keys, shared by every family (not in the published configs)
TRAINER_PARAMS: dict[str, Any] = {
    "perceptual_backbone": Str("vgg19", choices=("vgg19", "mobilenet_v2", "random_vgg19")),
    "perceptual_weights": Str(None, nullable=True, doc="local file with the backbone's ImageNet weights"),
    "seed": Int(0, low=0),
    "precision": Str("fp32", choices=("fp32", "bf16", "fp16", "auto"),
                     doc="autocast dtype of the training step; auto: bf16 where native, fp16 on older CUDA, else fp32"),
    "sync_bn": Bool(False, doc="SyncBatchNorm under DDP"),
    "channels_last": Bool(False),
    "log_freq": Int(10, **POSITIVE, doc="iterations between scalar logs"),
    "image_freq": Int(1, **POSITIVE, doc="epochs between TensorBoard image grids"),
    "max_steps_per_epoch": Int(None, **POSITIVE, nullable=True, doc="cap iterations per epoch (demo / smoke runs)"),
    "dataloader_workers": Int(0, low=0),
}

VISUALIZER_PARAMS: dict[str, Any] = {
    "kp_size": Int(5, low=0, compat=True),
    "draw_border": Bool(True, compat=True),
    "colormap": Str("gist_rainbow", compat=True),
}

EVALUATION_PARAMS: dict[str, Any] = {
    "face_backend": Str("dlib", choices=("face-alignment", "dlib", "mediapipe")),
    "body_backend": Str("mediapipe", choices=("mediapipe",)),
    "kind": Str("auto", choices=("face", "body", "auto"), doc="auto: from the dataset name"),
    "batch_size": Int(16, **POSITIVE),
}


def shared_sections() -> dict[str, Any]:
    """Fresh copies of the shared sections, for a family's schema."""
    return {"dataset_params": copy.deepcopy(DATASET_PARAMS), "visualizer_params": copy.deepcopy(VISUALIZER_PARAMS),
            "evaluation_params": copy.deepcopy(EVALUATION_PARAMS)}


def frame_shape(config: Mapping[str, Any]) -> list[int]:
    """The config's [H, W, C] (null in the file means [256, 256, 3])."""
    shape = config["dataset_params"]["frame_shape"]
    return list(shape) if shape is not None else [256, 256, 3]
