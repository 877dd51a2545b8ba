"""Trainer: exact resume, SIGTERM checkpoint, DDP (gloo) equals one process, AVD stage, clear start-up errors."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from modules import build_models, load_checkpoint
from modules.family import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_train_config(tiny_config_path, root, **train):
    with open(tiny_config_path) as handle:
        raw = yaml.safe_load(handle)
    raw["dataset_params"]["root_dir"] = root
    raw["train_params"].update({"num_epochs": 2, "num_repeats": 2, "batch_size": 2, "epoch_milestones": [1],
                                "scales": [1, 0.5], "checkpoint_freq": 1, "dropout_epoch": 1, "bg_start": 1,
                                "perceptual_backbone": "mobilenet_v2", "max_steps_per_epoch": 2,
                                "dataloader_workers": 0, "log_freq": 1})
    raw["train_params"].update(train)
    raw["train_avd_params"].update({"num_epochs": 2, "num_repeats": 2, "batch_size": 2, "checkpoint_freq": 1,
                                    "dataloader_workers": 0})
    return load_config(raw)


def seeded_models(config):
    torch.manual_seed(0)
    return build_models(config)


def test_resume_gives_identical_weights(tmp_path, tiny_config_path, tiny_dataset):
    from train import train

    config = tiny_train_config(tiny_config_path, tiny_dataset)
    straight = train(config, seeded_models(config), str(tmp_path / "a"))
    assert straight["epochs_run"] == 2
    first = copy.deepcopy(config)
    first["train_params"]["num_epochs"] = 1
    train(first, seeded_models(config), str(tmp_path / "b"))
    resumed = train(config, seeded_models(config), str(tmp_path / "b"),
                    checkpoint=str(tmp_path / "b" / "checkpoint.pth.tar"))
    assert resumed["epochs_run"] == 1
    a = torch.load(tmp_path / "a" / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pth.tar", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for name in ("kp_detector", "dense_motion_network", "inpainting_network", "bg_predictor"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), f"{name}.{key}"
    assert a["optimizer_bg_predictor"]["state"], "bg optimizer stepped after bg_start"
    assert a["schedulers"]["optimizer"]["last_epoch"] == 2
    for key in ("optimizer", "optimizer_bg_predictor", "epoch"):
        assert key in a
    assert os.path.exists(tmp_path / "a" / "00000001-checkpoint.pth.tar")
    assert os.path.exists(tmp_path / "a" / "config.yaml") and os.path.exists(tmp_path / "a" / "log.txt")
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "a" / "tensorboard"))


def test_checkpoint_loads_into_fresh_models(tmp_path, tiny_config_path, tiny_dataset):
    from train import train

    config = tiny_train_config(tiny_config_path, tiny_dataset, num_epochs=1)
    train(config, seeded_models(config), str(tmp_path))
    rest = load_checkpoint(tmp_path / "checkpoint.pth.tar", build_models(config), strict=False)
    assert rest["epoch"] == 0 and rest["resume_step"] == 0


def _run(args, **kw):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py")] + args, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigterm_mid_epoch_leaves_loadable_checkpoint(tmp_path, tiny_config_path, tiny_dataset):
    config = tiny_train_config(tiny_config_path, tiny_dataset, num_epochs=1, max_steps_per_epoch=None,
                               num_repeats=40)
    path = tmp_path / "c.yaml"
    with open(path, "w") as handle:
        yaml.safe_dump({k: v for k, v in config.items() if k != "model_family"}, handle)
    proc = _run(["--config", str(path), "--log_dir", str(tmp_path / "log")])
    deadline = time.time() + 240
    run_dir = None
    while time.time() < deadline:  # wait until a few steps are done
        logs = list((tmp_path / "log").glob("*/tensorboard/events*")) if (tmp_path / "log").exists() else []
        if logs and os.path.getsize(logs[0]) > 400:
            run_dir = logs[0].parent.parent
            break
        time.sleep(0.5)
    assert run_dir is not None, "training did not start"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 143, out  # stopped by SIGTERM after saving: 128 + 15, so a scheduler can requeue
    ckpt = run_dir / "checkpoint.pth.tar"
    rest = load_checkpoint(ckpt, build_models(config), strict=False)
    assert rest["epoch"] == -1 and 0 < rest["resume_step"] < 40, rest.get("resume_step")
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]
    assert "stopped by signal" in (run_dir / "log.txt").read_text()


def test_avd_stage_in_own_folder_and_resumable(tmp_path, tiny_config_path, tiny_dataset):
    from train import train, train_avd

    config = tiny_train_config(tiny_config_path, tiny_dataset, num_epochs=1)
    main_dir = tmp_path / "main"
    train(config, seeded_models(config), str(main_dir))
    main_ckpt = main_dir / "checkpoint.pth.tar"
    before = main_ckpt.read_bytes()
    kp_before = torch.load(main_ckpt, weights_only=True)["kp_detector"]
    one = copy.deepcopy(config)
    one["train_avd_params"]["num_epochs"] = 1
    summary = train_avd(one, build_models(config), str(main_ckpt), str(main_dir / "avd"))
    assert summary["epochs_run"] == 1
    avd_ckpt = main_dir / "avd" / "avd-checkpoint.pth.tar"
    resumed = train_avd(config, build_models(config), str(avd_ckpt), str(main_dir / "avd"))
    assert resumed["epochs_run"] == 1  # resumed at epoch 1 of 2
    assert main_ckpt.read_bytes() == before  # main run untouched
    data = torch.load(avd_ckpt, weights_only=True)
    assert data["avd_epoch"] == 1 and "optimizer_avd" in data and "avd_network" in data
    for key, value in kp_before.items():  # keypoint detector frozen
        assert torch.equal(value, data["kp_detector"][key]), key


def test_run_py_errors_are_one_line(tmp_path, tiny_config_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train_params: {num_epoch: 3}\n")
    proc = _run(["--config", str(path)])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "unknown config key 'train_params.num_epoch'" in out and "Traceback" not in out
    proc = _run(["--config", tiny_config_path, "--mode", "train_avd"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "needs --checkpoint" in out


def test_missing_vgg_weights_stop_at_start(tmp_path, tiny_config_path, tiny_dataset, monkeypatch):
    from modules.perceptual import PerceptualWeightsError
    from train import train

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    config = tiny_train_config(tiny_config_path, tiny_dataset, perceptual_backbone="vgg19")
    with pytest.raises(PerceptualWeightsError) as err:
        train(config, seeded_models(config), str(tmp_path / "log"))
    assert "vgg19-dcbb9e9d.pth" in str(err.value) and str(tmp_path / "torch_home") in str(err.value)


def test_torchrun_two_processes(tmp_path, tiny_config_path, tiny_dataset):
    """`torchrun --nproc_per_node=2 run.py` (gloo on CPU): one run folder, rank 0 writes, ranks agree."""
    config = tiny_train_config(tiny_config_path, tiny_dataset, num_epochs=1, max_steps_per_epoch=2)
    path = tmp_path / "c.yaml"
    with open(path, "w") as handle:
        yaml.safe_dump({k: v for k, v in config.items() if k != "model_family"}, handle)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(ROOT, "run.py"), "--config", str(path), "--log_dir", str(tmp_path / "log"),
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = os.listdir(tmp_path / "log")
    assert len(runs) == 1, runs
    run_dir = tmp_path / "log" / runs[0]
    rest = load_checkpoint(run_dir / "checkpoint.pth.tar", build_models(config), strict=False)
    assert rest["epoch"] == 0
    assert proc.stdout.count("done: 1 epoch(s)") == 1  # printed by rank 0 only


def test_resume_from_published_layout_fast_forwards_lr(tmp_path, tiny_config_path, tiny_dataset):
    """A checkpoint without scheduler state (the published layout) resumes with the LR of its epoch."""
    from train import train

    config = tiny_train_config(tiny_config_path, tiny_dataset, num_epochs=1, max_steps_per_epoch=1)
    train(config, seeded_models(config), str(tmp_path / "a"))
    data = torch.load(tmp_path / "a" / "checkpoint.pth.tar", weights_only=True)
    published = {k: v for k, v in data.items() if k not in ("schedulers", "resume_step", "config")}
    published["epoch"] = 3
    torch.save(published, tmp_path / "published.pth.tar")
    later = tiny_train_config(tiny_config_path, tiny_dataset, num_epochs=5, max_steps_per_epoch=1)
    train(later, seeded_models(config), str(tmp_path / "b"), checkpoint=str(tmp_path / "published.pth.tar"))
    out = torch.load(tmp_path / "b" / "checkpoint.pth.tar", weights_only=True)
    assert out["epoch"] == 4 and out["schedulers"]["optimizer"]["last_epoch"] == 5
    lr = later["train_params"]["lr_generator"]
    assert out["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr * 0.1)  # milestone 1 passed
