"""The keypoint detector's encoder option (model_params.kp_encoder_params): MobileNetV2 from ImageNet weights."""
from __future__ import annotations

import copy
import os

import pytest
import torch

from modules.family import build_models
from modules.perceptual import MOBILENET_FILE, mobilenet_weights_path
from utils.config import ConfigError, read_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny.yaml")


def tiny_config(**encoder) -> dict:
    raw = copy.deepcopy(read_yaml(TINY))
    if encoder:
        raw["model_params"]["kp_encoder_params"] = encoder
    return raw


def test_default_is_the_papers_resnet18_with_the_published_keys():
    kp = build_models(tiny_config())["kp_detector"]
    keys = kp.state_dict().keys()
    assert "fg_encoder.fc.weight" in keys and "fg_encoder.layer4.1.bn2.running_var" in keys
    assert not any(k.startswith("fg_encoder.features.") for k in keys)


def test_mobilenet_v2_builds_loads_imagenet_weights_and_outputs_keypoints():
    path = mobilenet_weights_path()
    assert path is not None and path.endswith(MOBILENET_FILE)  # installed with the requirements
    imagenet = torch.load(path, map_location="cpu", weights_only=True)
    kp = build_models(tiny_config(backbone="mobilenet_v2", pretrained=True))["kp_detector"]
    state = kp.state_dict()
    for key in ("features.0.0.weight", "features.18.1.running_mean", "features.9.conv.1.0.weight"):
        assert torch.equal(state["fg_encoder." + key], imagenet[key]), key
    assert state["fg_encoder.classifier.weight"].shape == (4 * 5 * 2, 1280)  # tiny.yaml: 4 TPS
    assert not any(k.startswith("input_") for k in state)  # normalisation constants are not weights
    random = build_models(tiny_config(backbone="mobilenet_v2", pretrained=False))["kp_detector"].state_dict()
    assert not torch.equal(random["fg_encoder.features.0.0.weight"], imagenet["features.0.0.weight"])

    kp.eval()
    image = torch.rand(2, 3, 64, 64)
    out = kp(image)["fg_kp"]
    assert out.shape == (2, 20, 2) and torch.isfinite(out).all() and out.abs().max() < 1
    assert not torch.allclose(out[0], out[1])  # the keypoints depend on the image


def test_mobilenet_v2_every_parameter_gets_a_gradient():
    kp = build_models(tiny_config(backbone="mobilenet_v2", pretrained=True))["kp_detector"].train()
    out = kp(torch.rand(2, 3, 64, 64))["fg_kp"]
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in kp.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing


def test_checkpoint_round_trip_and_config_errors(tmp_path):
    from modules.checkpoint import read_checkpoint, write_checkpoint_file

    models = build_models(tiny_config(backbone="mobilenet_v2", pretrained=False))
    write_checkpoint_file({"kp_detector": models["kp_detector"].state_dict()}, str(tmp_path / "kp.pth.tar"))
    again = build_models(tiny_config(backbone="mobilenet_v2", pretrained=True))["kp_detector"]
    again.load_state_dict(read_checkpoint(str(tmp_path / "kp.pth.tar"))["kp_detector"])
    image = torch.rand(1, 3, 64, 64)
    assert torch.equal(models["kp_detector"].eval()(image)["fg_kp"], again.eval()(image)["fg_kp"])
    with pytest.raises(ConfigError, match="kp_encoder_params.backbone"):
        build_models(tiny_config(backbone="vgg"))
    with pytest.raises(ConfigError, match="pretrained"):
        build_models(tiny_config(backbone="resnet18", pretrained=True))
