"""FOMM through train.py (the shared trainer): 2 tiny iterations, published checkpoint layout, exact resume."""
from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from modules import build_models, load_checkpoint
from modules.family import load_config

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
CONFIG = os.path.join(FIXTURES, "fomm_tiny.yaml")
CHECKPOINT = os.path.join(FIXTURES, "fomm_tiny.pth.tar")


class PairDataset(Dataset):
    """Synthetic (source, driving) pairs: a bright square moving over a gradient (64 px)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        def frame(dx: int) -> torch.Tensor:
            img = torch.linspace(0, 1, 64).view(1, 1, 64).expand(3, 64, 64).clone() * 0.5
            img[:, 20:36, 10 + dx:26 + dx] = torch.tensor([1.0, 0.8, 0.2]).view(3, 1, 1)
            return img
        return {"source": frame(4 * index), "driving": frame(4 * index + 6)}


def tiny_training_config(num_epochs: int, gan: bool = True) -> dict:
    config = load_config(CONFIG)
    tp = config["train_params"]
    tp.update({"num_epochs": num_epochs, "batch_size": 2, "max_steps_per_epoch": 1, "num_repeats": 1,
               "epoch_milestones": [1], "checkpoint_freq": 1, "perceptual_backbone": "random_vgg19",
               "image_freq": 1, "log_freq": 1, "scales": [1]})
    tp["loss_weights"]["generator_gan"] = 1 if gan else 0
    return config


def fresh_models(config):
    models = build_models(config)
    load_checkpoint(CHECKPOINT, models)
    return models


def test_two_iterations_then_exact_resume(tmp_path):
    from train import train

    straight_dir, resumed_dir = str(tmp_path / "straight"), str(tmp_path / "resumed")
    summary = train(tiny_training_config(2), fresh_models(tiny_training_config(2)), straight_dir,
                    dataset=PairDataset())
    assert summary["epochs_run"] == 2
    assert {"perceptual", "equivariance_value", "equivariance_jacobian", "gen_gan", "feature_matching",
            "disc_gan"} <= set(summary["last_losses"])
    ckpt = torch.load(os.path.join(straight_dir, "checkpoint.pth.tar"), weights_only=True)
    published = {"kp_detector", "generator", "discriminator", "optimizer_generator", "optimizer_discriminator",
                 "optimizer_kp_detector", "epoch"}
    assert published <= set(ckpt) and ckpt["epoch"] == 1
    assert ckpt["optimizer_generator"]["param_groups"][0]["lr"] == 2.0e-5  # MultiStepLR at milestone 1
    assert os.path.isfile(os.path.join(straight_dir, "00000000-checkpoint.pth.tar"))

    train(tiny_training_config(1), fresh_models(tiny_training_config(1)), resumed_dir, dataset=PairDataset())
    train(tiny_training_config(2), fresh_models(tiny_training_config(2)), resumed_dir,
          checkpoint=os.path.join(resumed_dir, "checkpoint.pth.tar"), dataset=PairDataset())
    resumed = torch.load(os.path.join(resumed_dir, "checkpoint.pth.tar"), weights_only=True)
    assert resumed["epoch"] == 1
    for name in ("kp_detector", "generator", "discriminator"):
        for key, value in ckpt[name].items():
            assert torch.equal(value, resumed[name][key]), f"{name}.{key}"
