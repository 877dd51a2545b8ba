"""Networks of the Thin-Plate Spline Motion Model (and the FOMM family), built from one config.

Public API: `build_models(config)`, `load_checkpoint(path, models, ...)`,
`save_checkpoint(path, models, ...)`.
"""
from modules.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from modules.factory import build_models, register_family

__all__ = ["build_models", "register_family", "load_checkpoint", "save_checkpoint", "CheckpointError"]
