"""Strict loading of the published YAML config schema, with documented defaults.

A config is a nested dict. Every key a user writes must exist in the schema below
(a misspelt key is an error that names the key and the file); every key the user
leaves out gets the default written here. The published TPSMM configs
(`config/{vox-256,taichi-256,ted-384,mgif-256}.yaml`) load unchanged.
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config file that does not match the schema (one line, names key and file)."""


# A leaf whose value is a dict of free-form keys (no validation of the inner keys).
class FreeDict(dict):
    pass


TPSMM_SCHEMA: dict[str, Any] = {
    "dataset_params": {
        "root_dir": None,            # folder with train/ and test/ (required for training)
        "frame_shape": None,         # [H, W, C]; null means [256, 256, 3]
        "id_sampling": False,        # sample training videos by the id before '#'
        "pairs_list": None,          # csv of (source, driving) pairs for the published animate protocol
        "augmentation_params": {
            "flip_param": {"horizontal_flip": False, "time_flip": False},
            "jitter_param": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0},
            "crop_param": {"size": None},        # random crop to [H, W] before resizing back
            "resize_param": {"ratio": None},     # random zoom factor range [lo, hi]
            "rotation_param": {"degrees": 0.0},  # random rotation (degrees); 0 disables
        },
    },
    "model_params": {
        "common_params": {"num_tps": 10, "num_channels": 3, "bg": False, "multi_mask": True},
        "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 3},
        "dense_motion_params": {
            "block_expansion": 64, "max_features": 1024, "num_blocks": 5, "scale_factor": 0.25,
        },
        "avd_network_params": {"id_bottle_size": 128, "pose_bottle_size": 128},
    },
    "train_params": {
        "num_epochs": 100,
        "num_repeats": 1,
        "epoch_milestones": [],
        "lr_generator": 2.0e-4,
        "batch_size": 1,
        "scales": [1, 0.5, 0.25, 0.125],
        "dataloader_workers": 0,
        "checkpoint_freq": 50,
        "dropout_epoch": 0,
        "dropout_maxp": 0.3,
        "dropout_startp": 0.1,
        "dropout_inc_epoch": 10,
        "bg_start": 0,
        "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
        "loss_weights": {
            "perceptual": [10, 10, 10, 10, 10],
            "equivariance_value": 10,
            "warp_loss": 10,
            "bg": 10,
        },
        # --- our additions (not in the published configs) ---
        "perceptual_backbone": "vgg19",   # vgg19 | mobilenet_v2 | random_vgg19
        "perceptual_weights": None,       # local file for the backbone's ImageNet weights
        "seed": 0,
        "grad_clip": 10.0,                # infinity-norm clipping for kp, dense motion and bg
        "precision": "fp32",              # fp32 | bf16 | fp16 (autocast on GPU)
        "sync_bn": False,                 # SyncBatchNorm under DDP
        "channels_last": False,
        "log_freq": 10,                   # iterations between scalar logs
        "image_freq": 1,                  # epochs between TensorBoard image grids
        "max_steps_per_epoch": None,      # cap iterations per epoch (demo / smoke runs)
    },
    "train_avd_params": {
        "num_epochs": 200,
        "num_repeats": 300,
        "batch_size": 256,
        "dataloader_workers": 0,
        "checkpoint_freq": 50,
        "epoch_milestones": [],
        "lr": 1.0e-3,
        "lambda_shift": 1,
        "lambda_affine": 1,
        "random_scale": 0.25,
        "max_steps_per_epoch": None,
    },
    "visualizer_params": {"kp_size": 5, "draw_border": True, "colormap": "gist_rainbow"},
    "evaluation_params": {
        "face_backend": "dlib",           # face-alignment | dlib | mediapipe
        "body_backend": "mediapipe",
        "kind": "auto",                   # face | body | auto (from the dataset name)
        "batch_size": 16,
    },
}

# Other model families register their schema here (see `register_schema`).
_SCHEMAS: dict[str, dict[str, Any]] = {"tpsmm": TPSMM_SCHEMA}
_DETECTORS: list[tuple[str, Any]] = []


def register_schema(family: str, schema: dict[str, Any], detect) -> None:
    """Add a model family: `detect(raw_config) -> bool` picks it for a raw YAML dict."""
    _SCHEMAS[family] = schema
    _DETECTORS.append((family, detect))


def model_family(raw: Mapping[str, Any]) -> str:
    """Which schema a raw config belongs to ('tpsmm' unless a registered family claims it)."""
    mp = raw.get("model_params") if isinstance(raw, Mapping) else None
    if isinstance(mp, Mapping) and "kp_detector_params" in mp and "fomm" not in _SCHEMAS:
        import modules.fomm  # noqa: F401  (registers the FOMM schema; lazy to avoid an import cycle)
    for family, detect in _DETECTORS:
        if detect(raw):
            return family
    return "tpsmm"


def _merge(schema: Any, value: Any, path: str, source: str) -> Any:
    if isinstance(schema, FreeDict):
        if value is None:
            return copy.deepcopy(dict(schema))
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{path}' must be a mapping, got {type(value).__name__}")
        return {**copy.deepcopy(dict(schema)), **value}
    if isinstance(schema, dict):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{path}' must be a mapping, got {type(value).__name__}")
        out = {}
        for key in value:
            if key not in schema:
                where = f"{path}.{key}" if path else str(key)
                hint = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1)
                tip = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(f"{source}: unknown config key '{where}'{tip}")
        for key, default in schema.items():
            sub = f"{path}.{key}" if path else key
            out[key] = _merge(default, value.get(key), sub, source) if (
                isinstance(default, dict) or key in value) else copy.deepcopy(default)
        return out
    return copy.deepcopy(schema) if value is None and schema is not None else value


def resolve_config(raw: Mapping[str, Any] | None, source: str = "<dict>") -> dict[str, Any]:
    """Validate a raw config dict against its family's schema and fill in defaults."""
    raw = dict(raw or {})
    family = model_family(raw)
    config = _merge(_SCHEMAS[family], raw, "", source)
    config["model_family"] = family
    shape = config["dataset_params"].get("frame_shape")
    if shape is None:
        config["dataset_params"]["frame_shape"] = [256, 256, 3]
    elif (not isinstance(shape, (list, tuple)) or len(shape) != 3
          or not all(isinstance(s, int) and s > 0 for s in shape)):
        raise ConfigError(f"{source}: 'dataset_params.frame_shape' must be [H, W, C], got {shape!r}")
    return config


def load_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Load a YAML path (yaml.safe_load) or take a dict; return the resolved, strict config."""
    if isinstance(config, Mapping):
        raw = dict(config)
        raw.pop("model_family", None)
        return resolve_config(raw, "<dict>")
    path = os.fspath(config)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    return resolve_config(raw, path)


def save_config(config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config (what a run actually used) next to its outputs."""
    data = {k: v for k, v in config.items() if k != "model_family"}
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    os.replace(tmp, path)
