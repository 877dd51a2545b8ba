"""run.py as reference commands use it: --device_ids without torchrun, --mode animate, reconstruction beside the checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import copy_demo_clips

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Real 64 px face clips (png strips from the demo data) in the published layout: 2 train, 2 test."""
    return copy_demo_clips(tmp_path_factory.mktemp("data"), test=("carphone#003.png", "single_face#003.png"))


def write_config(path, source: str, root: str, train: dict | None = None, **top) -> str:
    with open(source) as handle:
        raw = yaml.safe_load(handle)
    raw["dataset_params"]["root_dir"] = root
    raw["dataset_params"]["pairs_list"] = None  # (the published FOMM configs name data/vox256.csv)
    raw["train_params"].update(train or {})
    raw.update(top)
    with open(path, "w") as handle:
        yaml.safe_dump(raw, handle)
    return str(path)


def run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "run.py")] + args, cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def test_device_ids_spawns_one_gloo_process_per_id(tmp_path, tiny_config_path, dataset):
    """`run.py --device_ids 0,1` without torchrun: run.py starts 2 DDP ranks (CPU stand-in: --device cpu)."""
    from modules import build_models, load_checkpoint

    config = write_config(tmp_path / "c.yaml", tiny_config_path, dataset, train={
        "num_epochs": 1, "num_repeats": 2, "batch_size": 2, "epoch_milestones": [1], "scales": [1, 0.5],
        "checkpoint_freq": 1, "dropout_epoch": 1, "bg_start": 1, "perceptual_backbone": "mobilenet_v2",
        "max_steps_per_epoch": 2, "dataloader_workers": 0, "log_freq": 1})
    proc = run(["--config", config, "--log_dir", str(tmp_path / "log"), "--device", "cpu", "--device_ids", "0,1"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "started 2 DDP processes for device ids 0,1 (gloo on the CPU)" in proc.stderr
    assert "rank 0 (device id 0) exited with 0" in proc.stderr and "rank 1 (device id 1) exited with 0" in proc.stderr
    assert proc.stdout.count("done: 1 epoch(s)") == 1  # printed by rank 0 only
    runs = os.listdir(tmp_path / "log")
    assert len(runs) == 1, runs  # both ranks wrote into rank 0's folder
    rest = load_checkpoint(tmp_path / "log" / runs[0] / "checkpoint.pth.tar", build_models(config), strict=False)
    assert rest["epoch"] == 0


def test_device_ids_errors_and_one_process_paths():
    import run as run_py

    assert run_py.parse_device_ids("0,1,3") == [0, 1, 3]
    for bad in ("a,b", "0,0", "", "-1"):
        with pytest.raises(ValueError):
            run_py.parse_device_ids(bad)
    args = run_py.parse_args(["--config", "c", "--mode", "reconstruction", "--checkpoint", "x/y/ck.pth.tar"])
    assert run_py.default_log_dir(args) == os.path.abspath("x/y")
    args = run_py.parse_args(["--config", "c", "--mode", "reconstruction", "--checkpoint", "x/ck.pth.tar",
                              "--log_dir", "mine"])
    assert run_py.default_log_dir(args) == "mine"
    assert run_py.default_log_dir(run_py.parse_args(["--config", "c"])) == "log"


def test_reconstruction_writes_beside_the_checkpoint(tmp_path, tiny_config_path, tiny_checkpoint, dataset):
    config = write_config(tmp_path / "c.yaml", tiny_config_path, dataset)
    folder = tmp_path / "run"
    os.makedirs(folder)
    shutil.copy(tiny_checkpoint, folder / "tiny.pth.tar")
    proc = run(["--config", config, "--mode", "reconstruction", "--checkpoint", str(folder / "tiny.pth.tar"),
                "--device", "cpu"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(folder / "reconstruction" / "l1.json") as handle:
        summary = json.load(handle)
    assert 0 < summary["l1"] < 1
    assert sorted(os.listdir(folder / "reconstruction" / "png")) == ["carphone#003", "single_face#003"]


def test_fomm_mode_animate_pairs_protocol(tmp_path, dataset):
    """FOMM's `run.py --mode animate`: the protocol's pairs, each animated by the engine with normalization_params."""
    import imageio.v3 as iio

    from evaluation.videos import resize_frames, to_uint8
    from modules import build_models, load_checkpoint
    from modules.fomm.animation import make_fomm_animation
    from utils.video import open_video

    config = write_config(tmp_path / "c.yaml", os.path.join(FIXTURES, "fomm_tiny.yaml"), dataset,
                          animate_params={"num_pairs": 3, "format": ".mp4", "normalization_params": {
                              "adapt_movement_scale": False, "use_relative_movement": True,
                              "use_relative_jacobian": True}})
    folder = tmp_path / "run"
    os.makedirs(folder)
    shutil.copy(os.path.join(FIXTURES, "fomm_tiny.pth.tar"), folder / "fomm.pth.tar")
    proc = run(["--config", config, "--mode", "animate", "--checkpoint", str(folder / "fomm.pth.tar"),
                "--device", "cpu"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = ["carphone#003", "single_face#003"]
    # 3 of the 2 x 2 (driving, source) pairs, drawn with numpy seed 0 as the reference's PairedDataset
    np.random.seed(0)
    grid = np.mgrid[:2, :2].reshape(2, -1).T
    expected = {f"{names[d]}-{names[s]}.png" for d, s in grid.take(np.random.choice(4, 3, replace=False), axis=0)}
    assert set(os.listdir(folder / "animation" / "png")) == expected
    assert len([n for n in os.listdir(folder / "animation") if n.endswith(".mp4")]) == 3
    models = build_models(config)
    models = {k: models[k] for k in ("kp_detector", "generator")}
    load_checkpoint(folder / "fomm.pth.tar", models)
    for m in models.values():
        m.eval()
    for name in expected:
        driving_name, source_name = name[:-4].split("-")
        source = resize_frames(open_video(os.path.join(dataset, "test", source_name + ".png")).get_frames([0]),
                               (64, 64))
        driving_reader = open_video(os.path.join(dataset, "test", driving_name + ".png"))
        driving = resize_frames(driving_reader.get_frames(list(range(driving_reader.num_frames))), (64, 64))
        ours = make_fomm_animation(source, driving, models, use_relative_movement=True, use_relative_jacobian=True,
                                   adapt_movement_scale=False)
        strip = iio.imread(folder / "animation" / "png" / name)
        assert strip.shape == (64, 64 * driving.shape[0], 3)
        want = np.concatenate(list(to_uint8(ours)), axis=1)
        assert np.abs(strip.astype(int) - want.astype(int)).max() <= 1


def test_animation_pairs_from_a_pairs_list(tmp_path):
    import run as run_py

    csv = tmp_path / "pairs.csv"
    csv.write_text("source,driving\nb,a\nzz,a\nc,b\na,c\n")
    assert run_py.animation_pairs(["a", "b", "c"], 2, str(csv)) == [(0, 1), (1, 2)]  # (driving, source); zz skipped
    with pytest.raises(ValueError, match="pairs_list"):
        run_py.animation_pairs(["a"], 2, str(tmp_path / "missing.csv"))
    pairs = run_py.animation_pairs([str(i) for i in range(10)], 5)
    assert len(set(pairs)) == 5 and all(0 <= d < 5 and 0 <= s < 5 for d, s in pairs)
