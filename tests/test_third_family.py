"""A third model family, registered from this file alone, trains through run.py and animates through animate.py.

The family is deliberately small (one 3x3-conv "mixer" that maps source + driving to the
frame): what is tested is the plumbing, that the registry is the only place a family is
described (schema, networks, training class, animator).
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from modules import family as registry
from modules.family import Family
from modules.tpsmm.config import trainer_loop_params
from utils.config import TRAINER_PARAMS, Float, Int, shared_sections
from utils.optim import Stage, adam

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mixer(nn.Module):
    """(source, driving) (B, 3, H, W) each -> a frame (B, 3, H, W) in [0, 1]."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(6, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([source.expand_as(driving), driving], dim=1)))


SCHEMA = {
    **shared_sections(),
    "model_params": {"width": Int(4, low=1)},
    "train_params": {**trainer_loop_params(num_epochs=2), **TRAINER_PARAMS, "lr": Float(1e-2, low=0.0),
                     "loss_weights": {"l1": Float(1.0, low=0.0)}},
}


def build(config: dict) -> dict[str, nn.Module]:
    return {"mixer": Mixer(config["model_params"]["width"])}


class MixerTraining:
    """The training-class interface of train.py: one stage, an L1 reconstruction loss."""

    uses_perceptual = False

    def __init__(self, models: dict[str, nn.Module], config: dict, perceptual: nn.Module | None = None):
        tp = config["train_params"]
        self.loop_params = tp
        self.weight = tp["loss_weights"]["l1"]
        self.models = dict(models)
        self.ddp_modules = {"mixer": models["mixer"]}
        opt = adam(models["mixer"].parameters(), lr=tp["lr"])
        self.optimizers = {"optimizer": opt}
        self.schedulers = {"optimizer": torch.optim.lr_scheduler.MultiStepLR(opt, tp["epoch_milestones"])}

    def draws(self, epoch: int, step: int, global_batch: int, rows: slice, device) -> dict:
        return {}

    def stages(self, epoch: int) -> list[Stage]:
        def losses(batch: dict, draws: dict, shared: dict) -> dict[str, torch.Tensor]:
            prediction = self.ddp_modules["mixer"](batch["source"], batch["driving"])
            shared["generated"] = {"prediction": prediction}
            return {"l1": self.weight * (prediction - batch["driving"]).abs().mean()}

        return [Stage(("optimizer",), losses)]

    def checkpoint_models(self, epoch: int) -> dict[str, nn.Module]:
        return dict(self.models)


class MixerAnimator:
    """The animator interface: built once per source, called with batches of driving frames."""

    def __init__(self, models: dict[str, nn.Module], source: torch.Tensor, mode: str = "relative",
                 precision: str = "fp32", anchor: torch.Tensor | None = None, background: bool = False):
        if precision != "fp32":
            raise ValueError(f"the mixer family animates in fp32 only, not {precision!r}")
        self.mixer, self.source = models["mixer"], source

    @torch.inference_mode()
    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        return self.mixer(self.source, driving)


@pytest.fixture()
def mixer_family(monkeypatch):
    family = Family(name="mixer", schema=SCHEMA, build=build, training=MixerTraining, animator=MixerAnimator,
                    networks=("mixer",), modes=("relative", "standard"))
    monkeypatch.setitem(registry._FAMILIES, "mixer", family)  # removed again after the test
    return family


def test_a_family_from_one_file_trains_and_animates(mixer_family, tmp_path, capsys):
    import animate
    import run

    config = {"model_family": "mixer",
              "dataset_params": {"root_dir": os.path.join(ROOT, "data", "demo"), "frame_shape": [64, 64, 3]},
              "model_params": {"width": 3},
              "train_params": {"num_epochs": 2, "batch_size": 2, "max_steps_per_epoch": 2, "checkpoint_freq": 1}}
    path = tmp_path / "mixer.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    assert run.main(["--config", str(path), "--log_dir", str(tmp_path / "log"), "--device", "cpu"]) == 0
    checkpoints = glob.glob(str(tmp_path / "log" / "*" / "checkpoint.pth.tar"))
    assert len(checkpoints) == 1
    saved = torch.load(checkpoints[0], weights_only=True)
    assert saved["epoch"] == 1 and set(saved["mixer"]) == set(build(registry.load_config(str(path)))["mixer"].state_dict())
    untrained = build(registry.load_config(str(path)))["mixer"].state_dict()
    assert any(not torch.equal(saved["mixer"][k], untrained[k]) for k in untrained)  # training moved the weights

    out = tmp_path / "frames"
    assert animate.main(["--config", str(path), "--checkpoint", checkpoints[0], "--source_image",
                         os.path.join(ROOT, "data", "demo", "source.png"), "--driving_video",
                         os.path.join(ROOT, "data", "demo", "test", "carphone#003.png"), "--result_video", str(out),
                         "--cpu", "--quiet", "--no-audio"]) == 0
    frames = sorted(os.listdir(out))
    assert len(frames) > 1
    from utils.video import open_video
    expected = len(list(open_video(os.path.join(ROOT, "data", "demo", "test", "carphone#003.png"))))
    assert len(frames) == expected
    import imageio.v3 as iio
    first = iio.imread(out / frames[0])
    assert first.shape == (64, 64, 3) and np.ptp(first) > 0

    # the registry refuses what the family does not offer, by the family's own lists
    assert animate.main(["--config", str(path), "--checkpoint", checkpoints[0], "--source_image",
                         os.path.join(ROOT, "data", "demo", "source.png"), "--driving_video",
                         os.path.join(ROOT, "data", "demo", "test", "carphone#003.png"), "--result_video",
                         str(tmp_path / "x.mp4"), "--cpu", "--quiet", "--mode", "avd"]) == 2
    assert "mode 'avd' is not available for the mixer family" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
