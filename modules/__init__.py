"""Networks of the Thin-Plate Spline Motion Model (and the FOMM family), built from one config.

Public API: `load_config(config)`, `build_models(config)`, `load_checkpoint(path, models, ...)`,
`save_checkpoint(path, models, ...)`; model families: `Family`, `register_family`, `family_of`.
"""
from modules.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from modules.family import (Family, build_models, family_of, family_of_models, families, get_family, load_config,
                            register_family)
import modules.tpsmm  # noqa: E402,F401  (the built-in families register themselves)
import modules.fomm  # noqa: E402,F401
import modules.mraa  # noqa: E402,F401

__all__ = ["build_models", "load_config", "load_checkpoint", "save_checkpoint", "CheckpointError", "Family",
           "register_family", "family_of", "family_of_models", "families", "get_family"]
