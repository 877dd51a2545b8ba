"""`make demo` end to end, shortened: one training step, then reconstruction, baseline and animation."""
from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_smoke(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "demo_train.py"), "--epochs", "1", "--steps_per_epoch", "1",
                           "--work_dir", str(tmp_path)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for path in ("checkpoints/demo.pth.tar", "demo_out/animation.mp4", "demo_out/side_by_side.png",
                 "demo_out/reconstruction/l1.json", "log/demo/log.txt"):
        assert os.path.getsize(tmp_path / path) > 0, path
    rows = dict(re.findall(r"^(\S+#\d+|all frames)\s+([\d.]+)\s+[\d.]+$", out, flags=re.M))
    assert set(rows) == {"carphone#003", "single_face#003", "all frames"}, out
    assert "repeat source" in out and "time: training" in out
    from utils.video import open_video

    assert open_video(str(tmp_path / "demo_out" / "animation.mp4")).num_frames == 30
