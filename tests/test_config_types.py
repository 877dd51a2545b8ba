"""The typed config: each value a user can write gives the documented result or a one-line error naming key and file."""
from __future__ import annotations

import os

import pytest
import yaml

from modules import load_config
from modules.fomm import FOMM_SCHEMA
from modules.tpsmm.config import TPSMM_SCHEMA
from utils.config import ConfigError, compat_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny.yaml")


def _write(tmp_path, section: str, key: str, text: str) -> str:
    """tiny.yaml with `section.key: <text>` written as YAML source (so YAML's own reading applies)."""
    raw = yaml.safe_load(open(TINY, encoding="utf-8"))
    path = tmp_path / "c.yaml"
    parts = section.split(".")
    node = raw
    for p in parts:
        node = node.setdefault(p, {})
    node[key] = "__PLACEHOLDER__"
    body = yaml.safe_dump(raw, sort_keys=False).replace("__PLACEHOLDER__", text)
    path.write_text(body, encoding="utf-8")
    return str(path)


def _get(config: dict, dotted: str):
    for p in dotted.split("."):
        config = config[p]
    return config


# (section, key, YAML text, expected value)
ACCEPTED = [
    ("train_params", "lr_generator", "2e-4", 2e-4),            # YAML 1.1 reads this as the string "2e-4"
    ("train_params", "lr_generator", "2.0e-4", 2e-4),
    ("model_params.common_params", "num_tps", '"10"', 10),     # a quoted integer is the integer
    ("model_params.common_params", "num_tps", "6.0", 6),       # an integral float for an integer key
    ("train_params", "grad_clip", "null", None),               # nullable: null switches clipping off
    ("dataset_params", "frame_shape", "null", [256, 256, 3]),  # null: the published default size
    ("train_params", "scales", '[1, "0.5"]', [1, 0.5]),
    ("train_params", "precision", "bf16", "bf16"),
]


@pytest.mark.parametrize("section,key,text,expected", ACCEPTED, ids=[f"{k}={t}" for _, k, t, _ in ACCEPTED])
def test_values_read_as_the_user_meant(tmp_path, section, key, text, expected):
    value = _get(load_config(_write(tmp_path, section, key, text)), f"{section}.{key}")
    assert value == expected
    assert type(value) is type(expected)


# (section, key, YAML text, words the one-line message must contain)
REFUSED = [
    ("model_params.common_params", "num_tps", "-1", "must be >= 1, got -1"),
    ("model_params.common_params", "num_tps", "2.5", "must be an integer, got 2.5"),
    ("model_params.common_params", "num_tps", '"ten"', "must be an integer, got 'ten'"),
    ("train_params", "lr_generator", "[0.1, 0.2]", "must be a number, got [0.1, 0.2]"),
    ("train_params", "lr_generator", "-2e-4", "must be >= 0.0"),
    ("train_params", "num_epochs", "-3", "must be >= 1, got -3"),
    ("train_params", "num_epochs", "0", "must be >= 1, got 0"),
    ("model_params.common_params", "bg", '"yes"', "must be true or false, got 'yes'"),
    ("train_params", "precision", "fp64", "must be one of fp32, bf16, fp16, auto, got 'fp64'"),
    ("dataset_params", "frame_shape", "[64, 64]", "must have 3 items"),
    ("train_params", "scales", "[1, -0.5]", "'train_params.scales[1]' must be > 0.0"),
    ("train_params", "batch_size", "{a: 1}", "must be an integer, got {'a': 1}"),
    ("train_params", "lr_generatr", "0.1", "unknown config key 'train_params.lr_generatr' (did you mean 'lr_generator'?)"),
]


@pytest.mark.parametrize("section,key,text,words", REFUSED, ids=[f"{k}={t}" for _, k, t, _ in REFUSED])
def test_wrong_values_are_one_line_errors_naming_key_and_file(tmp_path, section, key, text, words):
    path = _write(tmp_path, section, key, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert f"'{section}.{key}" in message
    assert words in message


def test_run_py_reports_a_bad_value_in_one_line_with_exit_2(tmp_path, capsys):
    import run

    path = _write(tmp_path, "model_params.common_params", "num_tps", '"ten"')
    assert run.main(["--config", path, "--log_dir", str(tmp_path / "log")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {path}: 'model_params.common_params.num_tps' must be an integer, got 'ten'"
    assert not (tmp_path / "log").exists()


def test_keys_kept_only_for_compatibility_are_listed():
    tpsmm = compat_keys(TPSMM_SCHEMA)
    for key in ("dataset_params.pairs_list", "train_avd_params.lambda_affine", "visualizer_params.kp_size",
                "visualizer_params.draw_border", "visualizer_params.colormap"):
        assert key in tpsmm
    assert "train_params.lr_generator" not in tpsmm
    assert "visualizer_params.colormap" in compat_keys(FOMM_SCHEMA)


def test_a_key_left_out_takes_its_default_even_when_null_is_allowed():
    raw = yaml.safe_load(open(TINY, encoding="utf-8"))
    raw["train_params"].pop("grad_clip", None)
    assert load_config(raw)["train_params"]["grad_clip"] == 10.0
    raw["train_params"]["grad_clip"] = None
    assert load_config(raw)["train_params"]["grad_clip"] is None


def test_explicit_family_name_and_unknown_family(tmp_path):
    raw = yaml.safe_load(open(TINY, encoding="utf-8"))
    assert load_config({**raw, "model_family": "tpsmm"})["model_family"] == "tpsmm"
    with pytest.raises(ConfigError, match="unknown model family 'nope'"):
        load_config({**raw, "model_family": "nope"})
