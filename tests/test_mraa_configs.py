"""Every published MRAA config loads strictly and builds the published checkpoint layout at full size.

Reference: tests/fixtures/mraa-vox256-state-dict.txt (from shared/reference/mraa: names and shapes of the
vox256 checkpoint, the optimizers' parameter order, how the other configs differ, parameter counts).
Models are built on the meta device: names and shapes without allocating ~70 M weights.
"""
from __future__ import annotations

import os
import re

import pytest
import torch
import yaml

from modules import build_models, family_of
from modules.family import load_config
from modules.mraa import size_multiple
from utils.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT = os.path.join(ROOT, "tests", "fixtures", "mraa-vox256-state-dict.txt")
NAMES = ["vox256", "taichi256", "ted384", "ted-youtube384", "mgif256"]
NETWORKS = ("generator", "bg_predictor", "region_predictor", "avd_network")
ENTRY = re.compile(r"^([\w.]+) \(([\d, ]*)\)$")


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.replace(" ", "").split(",") if s)


def parse_layout() -> tuple[dict, dict, dict, dict]:
    """(vox256 tensors {name: shape}, per-config diffs {cfg: (removed, added, n_removed)}, optimizer orders,
    parameter counts {cfg: {network: count}})."""
    vox, diffs, order, counts = {}, {}, {}, {}
    current = None
    with open(LAYOUT, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            m = ENTRY.match(line)
            if m and m.group(1).split(".")[0] in NETWORKS:
                vox[m.group(1)] = _shape(m.group(2))
                continue
            m = re.match(r"^(optimizer_\w+)\.state\.(\d+)\.exp_avg \(.*\)\s+# ([\w.]+);", line)
            if m:
                order.setdefault(m.group(1), {})[int(m.group(2))] = m.group(3)
                continue
            m = re.match(r"^# ([\w-]+): (?:IDENTICAL|differs from vox256: (\d+) entries only in vox256)", line)
            if m:
                current = m.group(1)
                diffs[current] = ({}, {}, int(m.group(2) or 0))
                continue
            m = re.match(r"^#\s+([-+]) ([\w.]+) \(([\d, ]*)\)", line)
            if m and current:
                diffs[current][0 if m.group(1) == "-" else 1][m.group(2)] = _shape(m.group(3))
                continue
            m = re.match(r"^#\s+([\w-]+): params generator=([\d,]+), bg_predictor=([\d,]+), "
                         r"region_predictor=([\d,]+), avd_network=([\d,]+)", line)
            if m:
                counts[m.group(1)] = {k: int(v.replace(",", "")) for k, v in
                                      zip(("generator", "bg_predictor", "region_predictor", "avd_network"),
                                          m.group(2, 3, 4, 5))}
    return vox, diffs, order, counts


VOX, DIFFS, ORDER, COUNTS = parse_layout()


def build_meta(path: str) -> dict:
    with torch.device("meta"):
        return build_models(path)


def layout(models: dict) -> dict:
    return {f"{name}.{k}": tuple(v.shape) for name, m in models.items() for k, v in m.state_dict().items()}


def config_path(name: str) -> str:
    return os.path.join(ROOT, "config", "mraa", f"{name}.yaml")


def test_layout_file_parsed():
    assert len(VOX) == 196 + 37 + 73 + 69  # the state-dict entries per network the file states
    assert set(DIFFS) == {"taichi256", "ted384", "ted-youtube384", "mgif256"}
    assert set(COUNTS) == set(NAMES)
    assert len(ORDER["optimizer_reconstruction"]) == 178 and len(ORDER["optimizer_avd"]) == 42


@pytest.mark.parametrize("name", NAMES)
def test_published_config_builds_published_layout(name):
    config = load_config(config_path(name))
    assert family_of(config).name == "mraa" and config["model_family"] == "mraa"
    models = build_meta(config_path(name))
    assert set(models) == set(NETWORKS)
    expected = dict(VOX)
    if name != "vox256":
        removed, added, n_removed = DIFFS[name]
        if name == "mgif256":  # bg_type zero: the whole bg_predictor is empty (the file lists 12 of the 37)
            removed = {k: v for k, v in VOX.items() if k.startswith("bg_predictor.")}
        assert len(removed) == n_removed
        for key, shape in removed.items():
            assert expected.pop(key) == shape
        expected.update(added)
    got = layout(models)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"{name}: missing {missing[:3]}, unexpected {extra[:3]}"
    wrong = [k for k in expected if expected[k] != got[k]]
    assert not wrong, f"{name}: shape of {wrong[0]} is {got[wrong[0]]}, expected {expected[wrong[0]]}"
    for network, count in COUNTS[name].items():
        assert sum(p.numel() for p in models[network].parameters()) == count, f"{name} {network}"


def test_parameter_order_matches_published_optimizer_states():
    """Adam state i of a published checkpoint belongs to the i-th parameter: the order must match (reconstruction:
    generator, region_predictor, bg_predictor; AVD stage: avd_network)."""
    models = build_meta(config_path("vox256"))
    reconstruction = [f"{net}.{n}" for net in ("generator", "region_predictor", "bg_predictor")
                      for n, _ in models[net].named_parameters()]
    indexed = ORDER["optimizer_reconstruction"]
    assert reconstruction == [indexed[i] for i in range(len(indexed))]
    avd = [f"avd_network.{n}" for n, _ in models["avd_network"].named_parameters()]
    assert avd == [ORDER["optimizer_avd"][i] for i in range(len(ORDER["optimizer_avd"]))]


def test_published_configs_load_unchanged():
    for name in NAMES:
        with open(config_path(name), encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        config = load_config(config_path(name))
        for section in ("region_predictor_params", "bg_predictor_params", "generator_params", "avd_network_params"):
            for key, value in raw["model_params"][section].items():
                got = config["model_params"][section][key]
                if isinstance(value, dict):  # pixelwise_flow_predictor_params: the published keys, plus region_var
                    got = {k: v for k, v in got.items() if k in value}
                assert got == value, (name, section, key)
        assert config["train_params"]["loss_weights"] == raw["train_params"]["loss_weights"]
        assert config["animate_params"]["mode"] == "avd"
    vox = load_config(config_path("vox256"))
    assert vox["model_params"]["region_predictor_params"]["pad"] == 3  # absent from vox256: the published default
    assert load_config(config_path("taichi256"))["model_params"]["region_predictor_params"]["pad"] == 0
    assert size_multiple(vox) == 128 and size_multiple(load_config(os.path.join(ROOT, "tests", "fixtures",
                                                                                 "mraa_tiny.yaml"))) == 32


@pytest.mark.parametrize("where,key,value,message", [
    ("model_params.region_predictor_params", "temprature", 0.1, r"unknown config key 'model_params\.region_"
                                                                 r"predictor_params\.temprature' \(did you mean "
                                                                 r"'temperature'\?\)"),
    ("model_params.bg_predictor_params", "bg_type", "homography", r"'model_params\.bg_predictor_params\.bg_type' "
                                                                  r"must be one of zero, shift, affine, perspective"),
    ("model_params", "num_regions", 0, r"'model_params\.num_regions' must be >= 1"),
    ("train_params.loss_weights", "equivariance_jacobian", 10, r"unknown config key 'train_params\.loss_weights\."
                                                               r"equivariance_jacobian'"),
])
def test_bad_key_is_one_line_config_error(tmp_path, where, key, value, message):
    with open(config_path("vox256"), encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    section = raw
    for part in where.split("."):
        section = section[part]
    section[key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(bad)
    assert "\n" not in str(caught.value) and str(bad) in str(caught.value)


def test_other_families_configs_are_not_mraa():
    for path in (os.path.join(ROOT, "config", "vox-256.yaml"), os.path.join(ROOT, "config", "fomm", "vox-256.yaml")):
        assert load_config(path)["model_family"] != "mraa"


def test_regression_affine_and_shift_only_variants_build_and_run():
    """The published options the released configs leave off: regressed affines (4 shared maps, identity init),
    regions without affines, isotropic heatmaps, no skips, a perspective background."""
    with open(os.path.join(ROOT, "tests", "fixtures", "mraa_tiny.yaml"), encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    raw["model_params"]["region_predictor_params"]["pca_based"] = False
    raw["model_params"]["bg_predictor_params"]["bg_type"] = "perspective"
    raw["model_params"]["generator_params"]["skips"] = False
    raw["model_params"]["generator_params"]["pixelwise_flow_predictor_params"]["use_covar_heatmap"] = False
    models = build_models(raw)
    assert tuple(models["region_predictor"].jacobian.weight.shape) == (4, 8 + 3, 7, 7)  # 4 maps shared by the regions
    frames = torch.rand(2, 3, 64, 64)
    for m in models.values():
        m.eval()
    with torch.no_grad():
        params = models["region_predictor"](frames)
        assert set(params) == {"shift", "covar", "affine", "heatmap"}
        assert torch.allclose(params["affine"], torch.eye(2).expand(2, 4, 2, 2), atol=1e-6)  # identity init
        bg = models["bg_predictor"](frames[:1].expand(2, -1, -1, -1), frames)
        assert torch.allclose(bg, torch.eye(3).expand(2, 3, 3))
        out = models["generator"](frames[:1], driving_region_params=params, source_region_params=params, bg_params=bg)
        assert out["prediction"].shape == (2, 3, 64, 64) and torch.isfinite(out["prediction"]).all()
    raw["model_params"]["estimate_affine"] = False
    raw["model_params"]["region_predictor_params"]["pca_based"] = False
    models = build_models(raw)
    with torch.no_grad():
        params = models["region_predictor"].eval()(frames)
        assert "affine" not in params
        out = models["generator"].eval()(frames[:1], driving_region_params=params, source_region_params=params)
    assert "flow_sign" not in out
    grid = out["sparse_motion"][:, :1].expand_as(out["sparse_motion"])  # same params both sides: the identity
    assert torch.allclose(out["sparse_motion"], grid, atol=1e-6)


def test_published_keys_kept_only_for_compatibility_are_listed():
    from modules.mraa.config import MRAA_SCHEMA
    from utils.config import compat_keys

    keys = compat_keys(MRAA_SCHEMA)
    for key in ("model_params.region_predictor_params.fast_svd", "train_params.use_sync_bn",
                "visualizer_params.region_bg_color", "dataset_params.pairs_list"):
        assert key in keys
    assert "model_params.revert_axis_swap" not in keys and "train_avd_params.lambda_affine" not in keys
