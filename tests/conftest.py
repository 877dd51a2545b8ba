"""Shared test fixtures: the tiny parity config, its reference-format checkpoint, real clips."""
from __future__ import annotations

import os
import shutil
import sys

# Under pytest-xdist (`make test` runs one worker per core) each worker, and every process a test starts,
# computes on one thread: the workers share the cores instead of fighting over them.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
if XDIST_WORKERS > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import pytest  # noqa: E402  (after the thread environment, which torch reads when it loads)
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
DEMO = os.path.join(ROOT, "data", "demo")
torch.set_num_threads(1 if XDIST_WORKERS > 1 else max(1, min(2, os.cpu_count() or 1)))


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


def copy_demo_clips(root, test: tuple[str, ...] = ("carphone#003.png",)) -> str:
    """Real 64 px face clips (png strips of data/demo) in the published layout under `root`: the two training
    clips carphone#000 and single_face#000, and `test`."""
    for split, names in (("train", ("carphone#000.png", "single_face#000.png")), ("test", test)):
        os.makedirs(os.path.join(root, split))
        for name in names:
            shutil.copy(os.path.join(DEMO, split, name), os.path.join(root, split, name))
    return str(root)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """`copy_demo_clips` once per test module: 2 training clips, 1 test clip."""
    return copy_demo_clips(tmp_path_factory.mktemp("data"))
