"""`make demo` end to end, shortened: the shipped-model part with a stand-in model, one training step,
reconstruction tables, animation, side-by-side image and training curves."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = r"(?:-?[\d.]+|nan)"  # motion r can be negative, or nan without enough faces


def stand_in_shipped_model(path: str) -> str:
    """A config/demo128.yaml model with seeded random weights, exported as data/train_demo128.py ships it."""
    from modules import build_models

    spec = importlib.util.spec_from_file_location("train_demo128", os.path.join(ROOT, "data", "train_demo128.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    full = path + ".full"
    torch.save({name: m.state_dict() for name, m in build_models(os.path.join(ROOT, "config", "demo128.yaml")).items()}
               | {"epoch": 0}, full)
    script.export_fp16(full, path)
    os.remove(full)
    return path


def table(out: str, title: str) -> dict[str, list[float]]:
    """{clip: [numbers]} of the table printed under the line starting with `title`."""
    block = out.split("\n" + title, 1)[1].split("\n\n", 1)[0]
    return {m.group(1): [float(x) for x in m.group(2).split()]
            for m in re.finditer(rf"^(\S+#\d+|all frames)\s+((?:{NUMBER}\s*)+)$", block, flags=re.M)}


def test_demo_smoke(tmp_path):
    shipped = stand_in_shipped_model(str(tmp_path / "shipped.pth.tar"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "demo_train.py"), "--epochs", "1", "--steps_per_epoch", "1",
                           "--shipped", shipped, "--work_dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for path in ("checkpoints/demo.pth.tar", "demo_out/animation.mp4", "demo_out/side_by_side.png",
                 "demo_out/animation_pasted.mp4", "demo_out/training_curves.png",
                 "demo_out/pretrained/reconstruction/l1.json",
                 "demo_out/short_run/reconstruction/l1.json", "log/demo/log.txt"):
        assert os.path.getsize(tmp_path / path) > 0, path
    # the order make demo promises: the pretrained table, then the unseen face (with its motion r), then training
    first_table = out.index("\npretrained model, 128 px")
    unseen = re.search(rf"^unseen face: landmark motion r ({NUMBER}) against the driving clip", out, flags=re.M)
    assert unseen, out
    assert first_table < out.index("[2/4]") < unseen.start() < out.index("[3/4]"), out
    assert re.search(rf"unseen face \(data/demo128/source.png\) driven by .*: landmark motion r {NUMBER}$", out, flags=re.M)

    pretrained = table(out, "pretrained model, 128 px")
    assert set(pretrained) == {"carphone-heldout#000", "single_face-heldout#000", "wolfganglanger-heldout#000",
                               "all frames"}, out
    for clip, numbers in pretrained.items():  # model L1, repeat source, ratio (+ motion r per clip)
        assert len(numbers) == (3 if clip == "all frames" else 4), (clip, numbers)
        l1, baseline, ratio = numbers[:3]  # printed with 4, 4 and 2 decimals: allow for their rounding
        rounding = 0.005 + (l1 / baseline) * (5e-5 / l1 + 5e-5 / baseline)
        assert abs(l1 / baseline - ratio) <= rounding, (clip, numbers)
    short = table(out, "short run from scratch, 64 px")
    assert set(short) == {"carphone#003", "single_face#003", "all frames"}, out
    assert [len(short[c]) for c in ("carphone#003", "single_face#003", "all frames")] == [4, 4, 3], short
    assert "time: pretrained model" in out and "training" in out

    from utils.video import open_video

    driving = os.path.join(ROOT, "data", "demo128", "test", "wolfganglanger-heldout#000.mp4")
    assert open_video(str(tmp_path / "demo_out" / "animation.mp4")).num_frames == open_video(driving).num_frames
    pasted = open_video(str(tmp_path / "demo_out" / "animation_pasted.mp4"))
    assert pasted.num_frames == open_video(driving).num_frames and (pasted.height, pasted.width) == (512, 512)


def test_demo_without_a_pretrained_model(tmp_path):
    """A fresh clone has no checkpoints/demo128.pth.tar: step 1 says so, the short run animates data/demo's photo."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "demo_train.py"), "--epochs", "1", "--steps_per_epoch", "1",
                           "--shipped", str(tmp_path / "none.pth.tar"), "--work_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert f"[1/4] no pretrained model at {tmp_path / 'none.pth.tar'}" in out
    assert "pretrained model, 128 px" not in out and not (tmp_path / "demo_out" / "pretrained").exists()
    short = table(out, "short run from scratch, 64 px")
    assert set(short) == {"carphone#003", "single_face#003", "all frames"}, out
    for path in ("demo_out/animation.mp4", "demo_out/side_by_side.png", "demo_out/training_curves.png"):
        assert os.path.getsize(tmp_path / path) > 0, path
    from utils.video import open_video

    driving = os.path.join(ROOT, "data", "demo", "test", "carphone#003.png")
    assert open_video(str(tmp_path / "demo_out" / "animation.mp4")).num_frames == open_video(driving).num_frames
