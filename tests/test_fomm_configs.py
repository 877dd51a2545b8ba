"""Every published FOMM config loads unchanged and builds the published checkpoint layout.

Reference: tests/fixtures/fomm-vox-256-state-dict.txt (names and shapes of vox-cpk.pth.tar,
the optimizer parameter order, and how every other published config differs).
Models are built on the meta device: names and shapes without allocating ~60 M weights.
"""
from __future__ import annotations

import glob
import os
import re

import pytest
import torch
import yaml

from modules import build_models
from utils.config import ConfigError
from modules.family import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT = os.path.join(ROOT, "tests", "fixtures", "fomm-vox-256-state-dict.txt")
NAMES = ["bair-256", "fashion-256", "mgif-256", "nemo-256", "taichi-256", "taichi-adv-256", "vox-256", "vox-adv-256"]
ENTRY = re.compile(r"^([\w.]+) \(([\d, ]*)\)")


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.replace(" ", "").split(",") if s)


def parse_layout() -> tuple[dict, dict, dict, dict]:
    """(vox-256 tensors {name: shape}, per-config diffs {cfg: (removed, added)}, optimizer order, param counts)."""
    vox, diffs, order, counts = {}, {}, {}, {}
    current = None
    with open(LAYOUT, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            m = ENTRY.match(line)
            if m and m.group(1).split(".")[0] in ("kp_detector", "generator", "discriminator"):
                vox[m.group(1)] = _shape(m.group(2))
                continue
            m = re.match(r"^optimizer_(\w+)\.state\.(\d+)\.exp_avg \(.*\)\s+# ([\w.]+);", line)
            if m:
                order.setdefault(m.group(1), {})[int(m.group(2))] = m.group(3)
                continue
            m = re.match(r"^# ([\w-]+): (differs from vox-256|IDENTICAL)", line)
            if m:
                current = m.group(1)
                diffs[current] = ({}, {})
                continue
            m = re.match(r"^#\s+([-+]) ([\w.]+) \(([\d, ]*)\)", line)
            if m and current:
                diffs[current][0 if m.group(1) == "-" else 1][m.group(2)] = _shape(m.group(3))
                continue
            m = re.match(r"^#\s+([\w-]+): params kp_detector=([\d,]+) generator=([\d,]+) .*discriminator=([\d,]+);", line)
            if m:
                counts[m.group(1)] = {k: int(v.replace(",", "")) for k, v in
                                      zip(("kp_detector", "generator", "discriminator"), m.group(2, 3, 4))}
    return vox, diffs, order, counts


VOX, DIFFS, ORDER, COUNTS = parse_layout()


def read_yaml(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def build_meta(path: str) -> dict:
    with torch.device("meta"):
        return build_models(path)


def layout(models: dict) -> dict:
    return {f"{name}.{k}": tuple(v.shape) for name, m in models.items() for k, v in m.state_dict().items()}


def test_layout_file_parsed():
    assert len(VOX) == 297
    assert set(DIFFS) == {"taichi-256", "vox-adv-256", "taichi-adv-256", "bair-256", "mgif-256", "nemo-256", "fashion-256"}
    assert set(COUNTS) == set(NAMES)
    assert len(ORDER["generator"]) == 114 and len(ORDER["kp_detector"]) == 44


def test_all_published_configs_present():
    present = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "config", "fomm", "*-256.yaml")))
    assert present == [f"{name}.yaml" for name in NAMES]


def test_demo_config_builds_a_small_fomm():
    config = load_config(os.path.join(ROOT, "config", "fomm", "demo.yaml"))
    assert config["model_family"] == "fomm" and config["dataset_params"]["root_dir"] == "data/demo"
    models = build_meta(os.path.join(ROOT, "config", "fomm", "demo.yaml"))
    assert sum(p.numel() for m in models.values() for p in m.parameters()) < 5_000_000


@pytest.mark.parametrize("name", NAMES)
def test_published_config_builds_published_layout(name):
    path = os.path.join(ROOT, "config", "fomm", f"{name}.yaml")
    config = load_config(path)
    assert config["model_family"] == "fomm"
    models = build_meta(path)
    assert list(models) == ["kp_detector", "generator", "discriminator"]
    expected = dict(VOX)
    if name != "vox-256":
        removed, added = DIFFS[name]
        for key, shape in removed.items():
            assert expected.pop(key) == shape
        expected.update(added)
    got = layout(models)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"{name}: missing {missing[:3]}, unexpected {extra[:3]}"
    wrong = [k for k in expected if expected[k] != got[k]]
    assert not wrong, f"{name}: shape of {wrong[0]} is {got[wrong[0]]}, expected {expected[wrong[0]]}"
    for module, count in COUNTS[name].items():
        assert sum(p.numel() for p in models[module].parameters()) == count, f"{name} {module}"


def test_parameter_order_matches_published_optimizer_states():
    """Adam state index i of a published checkpoint belongs to the i-th parameter: the order must match."""
    models = build_meta(os.path.join(ROOT, "config", "fomm", "vox-256.yaml"))
    for module, indexed in ORDER.items():
        names = [f"{module}.{n}" for n, _ in models[module].named_parameters()]
        assert names == [indexed[i] for i in range(len(indexed))], module


def test_published_configs_load_unchanged_and_strictly(tmp_path):
    raw = read_yaml(os.path.join(ROOT, "config", "fomm", "vox-256.yaml"))
    config = load_config(os.path.join(ROOT, "config", "fomm", "vox-256.yaml"))
    for section in ("common_params", "kp_detector_params", "discriminator_params"):
        for key, value in raw["model_params"][section].items():
            assert config["model_params"][section][key] == value
    assert config["model_params"]["common_params"]["align_corners"] is False
    assert config["animate_params"]["normalization_params"]["use_relative_jacobian"] is True
    raw["model_params"]["kp_detector_params"]["temprature"] = 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="temprature.*did you mean 'temperature'"):
        load_config(bad)


def test_mgif_single_jacobian_map_shares_four_maps():
    models = build_meta(os.path.join(ROOT, "config", "fomm", "mgif-256.yaml"))
    assert models["kp_detector"].num_jacobian_maps == 1


def test_tpsmm_configs_are_still_tpsmm():
    for path in glob.glob(os.path.join(ROOT, "config", "*.yaml")):
        raw = read_yaml(path)
        if "kp_detector_params" not in (raw.get("model_params") or {}):
            assert load_config(path)["model_family"] == "tpsmm", path
