"""Configs, model construction and checkpoints: the published layout and one-line errors."""
from __future__ import annotations

import os

import pytest
import torch
import yaml

from modules import CheckpointError, build_models, load_checkpoint, save_checkpoint
from utils.config import ConfigError
from modules.family import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = ["vox-256", "taichi-256", "ted-384", "mgif-256"]


def published_layout() -> set[str]:
    with open(os.path.join(ROOT, "tests", "fixtures", "vox-256-state-dict.txt")) as handle:
        return {line.strip() for line in handle if line.strip()}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_config_builds_published_layout(name):
    models = build_models(os.path.join(ROOT, "config", f"{name}.yaml"))
    ours = {f"{m}.{k} {tuple(v.shape)}" for m, module in models.items() for k, v in module.state_dict().items()}
    expected = published_layout()
    if name == "mgif-256":  # bg: false -> no background predictor, otherwise identical
        expected = {line for line in expected if not line.startswith("bg_predictor.")}
        assert "bg_predictor" not in models
    assert ours == expected


def test_published_configs_load_with_their_values():
    config = load_config(os.path.join(ROOT, "config", "taichi-256.yaml"))
    assert config["train_params"]["dropout_maxp"] == 0.7
    assert config["dataset_params"]["frame_shape"] == [256, 256, 3]  # null -> default
    assert config["model_params"]["common_params"]["num_tps"] == 10
    mgif = load_config(os.path.join(ROOT, "config", "mgif-256.yaml"))
    assert mgif["dataset_params"]["augmentation_params"]["crop_param"]["size"] == [256, 256]
    assert mgif["train_avd_params"]["lambda_affine"] == 1


def test_missing_keys_get_defaults(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("model_params:\n  common_params: {num_tps: 3}\n")
    config = load_config(str(path))
    assert config["model_params"]["common_params"]["num_tps"] == 3
    assert config["model_params"]["dense_motion_params"]["scale_factor"] == 0.25
    assert config["train_params"]["lr_generator"] == 2.0e-4


def test_misspelt_key_names_key_and_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model_params:\n  common_params: {num_tsp: 10}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    message = str(err.value)
    assert "model_params.common_params.num_tsp" in message and str(path) in message
    assert "num_tps" in message and "\n" not in message


def test_build_models_takes_dict_and_path(tiny_config_path):
    with open(tiny_config_path) as handle:
        raw = yaml.safe_load(handle)
    a, b = build_models(raw), build_models(tiny_config_path)
    assert list(a) == ["kp_detector", "dense_motion_network", "inpainting_network", "bg_predictor", "avd_network"]
    assert {k: v.shape for k, v in a["inpainting_network"].state_dict().items()} == \
        {k: v.shape for k, v in b["inpainting_network"].state_dict().items()}


def test_checkpoint_round_trip_is_exact(tmp_path, tiny_config_path, tiny_checkpoint):
    models = build_models(tiny_config_path)
    optimizer = torch.optim.Adam(models["kp_detector"].parameters(), lr=1e-3)
    rest = load_checkpoint(tiny_checkpoint, models)
    assert rest["epoch"] == 100
    out = save_checkpoint(tmp_path / "copy.pth.tar", models, {"optimizer": optimizer}, epoch=7)
    fresh = build_models(tiny_config_path)
    rest = load_checkpoint(out, fresh, {"optimizer": torch.optim.Adam(fresh["kp_detector"].parameters())})
    assert rest == {"epoch": 7}
    for name in models:
        for (k, v), (k2, v2) in zip(models[name].state_dict().items(), fresh[name].state_dict().items()):
            assert k == k2 and torch.equal(v, v2)
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_tensor_is_named(tmp_path, tiny_config_path, tiny_checkpoint):
    data = torch.load(tiny_checkpoint, weights_only=True)
    del data["dense_motion_network"]["maps.weight"]
    torch.save(data, tmp_path / "bad.pth.tar")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pth.tar", build_models(tiny_config_path))
    assert "dense_motion_network.maps.weight" in _one_line(err)


def test_misshaped_tensor_is_named(tmp_path, tiny_config_path, tiny_checkpoint):
    data = torch.load(tiny_checkpoint, weights_only=True)
    data["kp_detector"]["fg_encoder.fc.weight"] = torch.zeros(7, 512)
    torch.save(data, tmp_path / "bad.pth.tar")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pth.tar", build_models(tiny_config_path))
    message = _one_line(err)
    assert "kp_detector.fg_encoder.fc.weight" in message and "(7, 512)" in message


def test_checkpoint_for_other_config_is_refused(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tiny_checkpoint, build_models(os.path.join(ROOT, "config", "vox-256.yaml")))
    assert "does not match the config" in _one_line(err)


def test_truncated_checkpoint(tmp_path, tiny_config_path, tiny_checkpoint):
    with open(tiny_checkpoint, "rb") as handle:
        blob = handle.read()
    (tmp_path / "cut.pth.tar").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "cut.pth.tar", build_models(tiny_config_path))
    assert "truncated" in _one_line(err)


def test_modules_follow_input_device_and_dtype(tiny_models, tiny_io):
    """Modules never pick a device: float64 inputs and models run end to end in float64."""
    models = {k: v.double() for k, v in tiny_models.items()}
    out = models["kp_detector"](tiny_io["source"].double())
    assert out["fg_kp"].dtype == torch.float64
