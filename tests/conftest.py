"""Shared test fixtures: the tiny parity config, its reference-format checkpoint, real clips."""
from __future__ import annotations

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_io():
    return torch.load(os.path.join(FIXTURES, "tiny_io.pt"), weights_only=True)


@pytest.fixture(scope="session")
def tiny_config_path():
    return os.path.join(FIXTURES, "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config_path):
    """The reference-format checkpoint of tiny.yaml, built from the weight recipe (as the fixture was)."""
    from modules import build_models, save_checkpoint
    from utils.weight_recipe import fill_models

    models = fill_models(build_models(tiny_config_path))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar"
    save_checkpoint(path, models, epoch=100)
    return str(path)


@pytest.fixture()
def tiny_models(tiny_config_path, tiny_checkpoint):
    """tiny.yaml networks loaded through load_checkpoint, eval mode."""
    from modules import build_models, load_checkpoint

    models = build_models(tiny_config_path)
    load_checkpoint(tiny_checkpoint, models)
    for m in models.values():
        m.eval()
    return models
