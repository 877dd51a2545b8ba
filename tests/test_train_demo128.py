"""data/train_demo128.py: the fp16 export loads back into fp32 networks and animates like the original."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_demo128", os.path.join(ROOT, "data", "train_demo128.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo128_config_export_fits_in_30_mb(script):
    from modules import build_models

    models = build_models(os.path.join(ROOT, "config", "demo128.yaml"))
    assert "bg_predictor" not in models  # trained without it, as the export has none
    floats = sum(t.numel() for name in script.ANIMATION_NETWORKS for t in models[name].state_dict().values()
                 if t.is_floating_point())
    assert 2 * floats < 30e6 - 0.5e6, floats  # fp16 bytes, with room for the pickle


def test_fp16_export_loads_as_fp32_and_animates_alike(script, tmp_path, tiny_config_path, tiny_checkpoint, tiny_io):
    from animate import load_models, make_animation
    from modules import build_models, load_checkpoint
    from modules.family import load_config

    path = str(tmp_path / "demo.pth.tar")
    info = script.export_fp16(tiny_checkpoint, path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert set(data) == {"kp_detector", "dense_motion_network", "inpainting_network", "epoch", "precision"}
    assert info["epoch"] == data["epoch"] == 100 and info["bytes"] == os.path.getsize(path)
    assert all(t.dtype in (torch.float16, torch.int64) for name in script.ANIMATION_NETWORKS for t in data[name].values())

    config = load_config(tiny_config_path)
    restored = load_models(config, path, "relative", torch.device("cpu"))  # animate.py's loader, strict
    original = build_models(config)
    load_checkpoint(tiny_checkpoint, original)
    for name in script.ANIMATION_NETWORKS:
        for key, value in restored[name].state_dict().items():
            ref = original[name].state_dict()[key]
            if ref.is_floating_point():
                assert value.dtype == torch.float32, key
                assert torch.equal(value, ref.half().float()), key
    for m in original.values():
        m.eval()
    source, driving = tiny_io["source"], tiny_io["driving"]
    with torch.no_grad():
        a = make_animation(source, driving, restored, mode="relative")
        b = make_animation(source, driving, original, mode="relative")
    diff = (a - b).abs().max().item()
    assert 0.0 < diff < 2e-2, diff  # fp16 rounding moves the output, a little


def test_finished_only_after_the_last_epoch(script, tmp_path):
    path = str(tmp_path / "c.pth.tar")
    for epoch, step, expected in ((3, 0, True), (3, 5, False), (2, 0, False), (2, 7, False)):
        torch.save({"epoch": epoch, "resume_step": step}, path)
        assert script.finished(path, num_epochs=4) is expected, (epoch, step)


def test_export_needs_every_animation_network(script, tmp_path):
    path = str(tmp_path / "partial.pth.tar")
    torch.save({"kp_detector": {"w": torch.zeros(2)}, "epoch": 1}, path)
    with pytest.raises(ValueError, match="dense_motion_network"):
        script.export_fp16(path, str(tmp_path / "out.pth.tar"))
