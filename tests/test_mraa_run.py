"""MRAA through the entry points: `run.py` trains a tiny config and resumes exactly (published checkpoint layout
plus schedulers and the resume position), `--mode train_avd` trains the AVD stage into its own checkpoint,
`reconstruction.py` and `python -m evaluation` report L1 for it, and `evaluation.compare` lists it by family.
Two real 64 px face clips from data/demo; one step per epoch.
"""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch
import yaml

from modules import build_models, load_checkpoint, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "fixtures", "mraa_tiny.yaml")
NETWORKS = ("generator", "region_predictor", "bg_predictor")


def raw_config(root: str) -> dict:
    with open(CONFIG) as handle:
        raw = yaml.safe_load(handle)
    raw["dataset_params"]["root_dir"] = root
    raw["train_params"].update({"num_epochs": 2, "num_repeats": 2, "batch_size": 2, "epoch_milestones": [1],
                                "scales": [1], "checkpoint_freq": 1, "perceptual_backbone": "mobilenet_v2",
                                "max_steps_per_epoch": 1, "dataloader_workers": 0, "log_freq": 1})
    raw["train_avd_params"].update({"num_epochs": 1, "num_repeats": 2, "batch_size": 2, "checkpoint_freq": 1,
                                    "dataloader_workers": 0, "max_steps_per_epoch": 1})
    return raw


def seeded_models(config: dict) -> dict:
    torch.manual_seed(0)
    return build_models(config)


def test_two_epochs_then_exact_resume_in_the_published_layout(tmp_path, tiny_dataset):
    from train import train

    config = load_config(raw_config(tiny_dataset))
    straight = train(config, seeded_models(config), str(tmp_path / "a"))
    assert straight["epochs_run"] == 2
    assert set(straight["last_losses"]) == {"perceptual", "equivariance_shift", "equivariance_affine"}
    first = copy.deepcopy(config)
    first["train_params"]["num_epochs"] = 1
    train(first, seeded_models(config), str(tmp_path / "b"))
    resumed = train(config, seeded_models(config), str(tmp_path / "b"),
                    checkpoint=str(tmp_path / "b" / "checkpoint.pth.tar"))
    assert resumed["epochs_run"] == 1
    a = torch.load(tmp_path / "a" / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pth.tar", weights_only=True)
    published = {"generator", "region_predictor", "bg_predictor", "optimizer_reconstruction", "epoch_reconstruction"}
    assert published <= set(a) and "avd_network" not in a and "epoch" not in a
    assert a["epoch_reconstruction"] == b["epoch_reconstruction"] == 1
    for name in NETWORKS:
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), f"{name}.{key}"
    for group_a, group_b in zip(a["optimizer_reconstruction"]["state"].values(),
                                b["optimizer_reconstruction"]["state"].values()):
        assert torch.equal(group_a["exp_avg"], group_b["exp_avg"])
    assert a["optimizer_reconstruction"]["param_groups"][0]["lr"] == pytest.approx(2.0e-5)  # milestone 1
    assert a["schedulers"]["optimizer_reconstruction"]["last_epoch"] == 2
    assert os.path.isfile(tmp_path / "a" / "00000001-checkpoint.pth.tar")

    from modules.checkpoint import latest_checkpoint

    assert latest_checkpoint(str(tmp_path / "a")) == str(tmp_path / "a" / "checkpoint.pth.tar")  # --checkpoint auto


def test_bf16_autocast_step_is_finite(tmp_path, tiny_dataset):
    from train import train

    raw = raw_config(tiny_dataset)
    raw["train_params"].update({"num_epochs": 1, "precision": "bf16"})
    config = load_config(raw)
    summary = train(config, seeded_models(config), str(tmp_path / "bf16"))
    assert summary["epochs_run"] == 1
    assert all(0 < v < float("inf") for v in summary["last_losses"].values()), summary["last_losses"]


def test_run_py_train_then_train_avd_then_reconstruction_and_evaluation(tmp_path, tiny_dataset, capsys):
    import run
    from evaluation.cli import main as evaluate_main
    from evaluation.compare import main as compare_main
    from reconstruction import main as reconstruction_main

    raw = raw_config(tiny_dataset)
    raw["train_params"]["num_epochs"] = 1
    path = tmp_path / "mraa.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert run.main(["--config", str(path), "--log_dir", str(tmp_path / "log"), "--device", "cpu"]) == 0
    (run_dir,) = [tmp_path / "log" / name for name in os.listdir(tmp_path / "log")]
    main_ckpt = run_dir / "checkpoint.pth.tar"
    main = torch.load(main_ckpt, weights_only=True)

    assert run.main(["--config", str(path), "--mode", "train_avd", "--checkpoint", str(main_ckpt),
                     "--device", "cpu"]) == 0
    avd_ckpt = run_dir / "avd" / "avd-checkpoint.pth.tar"
    data = torch.load(avd_ckpt, weights_only=True)
    published = {"generator", "bg_predictor", "region_predictor", "optimizer_reconstruction", "avd_network",
                 "optimizer_avd", "epoch_avd"}
    assert published <= set(data) and data["epoch_avd"] == 0 and data["epoch_reconstruction"] == 0
    assert data["optimizer_avd"]["state"], "the AVD optimizer stepped"
    # the main run's optimizer is kept, not overwritten by the AVD's (the published train_avd.py's bug)
    assert len(data["optimizer_reconstruction"]["param_groups"][0]["params"]) == \
        len(main["optimizer_reconstruction"]["param_groups"][0]["params"])
    for name in NETWORKS:  # frozen, and the region predictor's BatchNorm stats untouched (eval mode)
        for key, value in main[name].items():
            assert torch.equal(value, data[name][key]), f"{name}.{key}"
    models = build_models(load_config(str(path)))
    rest = load_checkpoint(avd_ckpt, models)  # strict: every network, keys and shapes
    assert not any(torch.equal(models["avd_network"].state_dict()[k], v)
                   for k, v in seeded_models(load_config(str(path)))["avd_network"].state_dict().items()
                   if k.endswith("weight") and v.dim() == 2)
    assert rest["epoch_avd"] == 0

    # a reconstruction-stage resume from the AVD checkpoint works (the published one failed on its optimizer)
    again = copy.deepcopy(raw)
    again["train_params"]["num_epochs"] = 2
    path.write_text(yaml.safe_dump(again))
    assert run.main(["--config", str(path), "--checkpoint", str(avd_ckpt), "--device", "cpu"]) == 0
    assert torch.load(run_dir / "avd" / "checkpoint.pth.tar", weights_only=True)["epoch_reconstruction"] == 1

    # the animation protocol (run.py --mode animate) in the config's mode, avd as published
    assert run.main(["--config", str(path), "--mode", "animate", "--checkpoint", str(avd_ckpt), "--device", "cpu",
                     "--log_dir", str(tmp_path / "anim")]) == 0
    assert os.listdir(tmp_path / "anim" / "animation" / "png") == ["carphone#003-carphone#003.png"]

    log_dir = str(tmp_path / "eval")
    assert reconstruction_main(["--config", str(path), "--checkpoint", str(avd_ckpt), "--log_dir", log_dir,
                                "--device", "cpu", "--no_mp4", "--quiet"]) == 0
    with open(os.path.join(log_dir, "reconstruction", "l1.json")) as handle:
        summary = json.load(handle)
    assert summary["model_family"] == "mraa" and summary["bg_predictor"] is True and summary["epoch"] == 0
    assert 0.0 < summary["l1"] < 0.5 and summary["frames"] > 1
    assert evaluate_main(["--log_dir", log_dir, "--kind", "none", "--quiet"]) == 0
    with open(os.path.join(log_dir, "reconstruction", "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["l1"] == pytest.approx(summary["l1_png"], abs=1e-9)
    capsys.readouterr()
    assert compare_main([log_dir, "--sort", "family"]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert "| mraa |" in row and "avd-checkpoint.pth.tar" in row and f"| {summary['l1']:.4f} |" in row


def test_fine_tuning_from_a_published_avd_stage_file(tmp_path, tiny_dataset, capsys):
    """The released checkpoints hold the AVD optimizer under `optimizer_reconstruction` too: loading it into the
    reconstruction optimizer is a one-line error when strict; the trainer starts that optimizer fresh, says so,
    and trains from the file's weights."""
    from modules.checkpoint import CheckpointError
    from modules.mraa.checkpoint import save_published_checkpoint
    from modules.mraa.training import MRAATraining
    from modules.mraa.weight_recipe import fill_mraa_models
    from train import train

    config = load_config(raw_config(tiny_dataset))
    config["train_params"]["num_epochs"] = 1
    published = fill_mraa_models(build_models(config))
    path = save_published_checkpoint(tmp_path / "published" / "tiny.pth", published, epoch_avd=29)
    models = build_models(config)
    training = MRAATraining(models, config, perceptual=torch.nn.Identity())
    with pytest.raises(CheckpointError, match="'optimizer_reconstruction' does not fit"):
        load_checkpoint(path, training.models, training.optimizers)
    summary = train(config, build_models(config), str(tmp_path / "ft"), checkpoint=str(path))
    assert summary["epochs_run"] == 1
    assert "'optimizer_reconstruction' starts fresh" in capsys.readouterr().err
    data = torch.load(tmp_path / "ft" / "checkpoint.pth.tar", weights_only=True)
    assert data["epoch_reconstruction"] == 0
    count = sum(1 for name in NETWORKS for _ in published[name].parameters())
    assert len(data["optimizer_reconstruction"]["param_groups"][0]["params"]) == count
    assert "starts fresh" in (tmp_path / "ft" / "log.txt").read_text()


def test_train_avd_picks_the_family_stage_and_refuses_a_family_without_one(tmp_path, capsys):
    import run
    from modules.mraa.training import MRAAAVDTraining
    from modules.tpsmm_training import AVDTraining
    from train import avd_training_class

    assert avd_training_class("mraa") is MRAAAVDTraining and avd_training_class("tpsmm") is AVDTraining
    fixtures = os.path.join(ROOT, "tests", "fixtures")
    code = run.main(["--config", os.path.join(fixtures, "fomm_tiny.yaml"), "--mode", "train_avd", "--checkpoint",
                     os.path.join(fixtures, "fomm_tiny.pth.tar"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "model family 'fomm' has no AVD stage" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(fixtures, "avd"))
