"""Long videos: animate.py streams decode -> animation -> encode, so peak memory does not grow with length.

Each run is a fresh process (peak RSS is per process). The driving videos are synthetic
720p clips (2.6 MiB per decoded frame): holding the 160 extra frames of the long one
would add ~440 MiB; streaming adds nothing measurable.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A network much smaller than tests/fixtures/tiny.yaml: only the pipeline's memory is measured here.
MICRO = {
    "dataset_params": {"frame_shape": [64, 64, 3]},
    "model_params": {
        "common_params": {"num_tps": 2, "num_channels": 3, "bg": False, "multi_mask": True},
        "generator_params": {"block_expansion": 8, "max_features": 32, "num_down_blocks": 3},
        "dense_motion_params": {"block_expansion": 8, "max_features": 32, "num_blocks": 3, "scale_factor": 0.25},
        "avd_network_params": {"id_bottle_size": 16, "pose_bottle_size": 16},
    },
}

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)  # tiny networks: one thread is fastest on a busy 2-core machine
import animate
start = time.time()
code = animate.main(sys.argv[2:])
print(json.dumps({"code": code, "seconds": time.time() - start,
                  "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from modules import build_models, save_checkpoint
    from utils.media import ffmpeg_exe

    d = tmp_path_factory.mktemp("micro")
    config = d / "micro.yaml"
    config.write_text(yaml.safe_dump(MICRO))
    save_checkpoint(d / "micro.pth.tar", build_models(str(config)), epoch=0)  # random weights
    videos = {}
    for frames in (40, 200):
        videos[frames] = str(d / f"synthetic_{frames}.mp4")
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=s=1280x720:r=30", "-f", "lavfi", "-i", "sine=frequency=500",
                        "-frames:v", str(frames), "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
                        "-c:a", "aac", videos[frames]], check=True)
    import skimage.data
    from PIL import Image
    Image.fromarray(skimage.data.astronaut()).save(d / "photo.png")
    return {"config": str(config), "checkpoint": str(d / "micro.pth.tar"), "videos": videos, "dir": d,
            "photo": str(d / "photo.png")}


def animate_in_child(micro, frames: int) -> dict:
    out = str(micro["dir"] / f"result_{frames}.mp4")
    proc = subprocess.run([sys.executable, "-c", CHILD, ROOT, "--config", micro["config"], "--checkpoint",
                           micro["checkpoint"], "--source_image", micro["photo"], "--driving_video", micro["videos"][frames],
                           "--result_video", out, "--cpu", "--quiet", "--batch_size", "8", "--img_shape", "32,32"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    from utils.media import probe
    info = probe(out)
    assert info["num_frames"] == frames and info["has_audio"] and (info["width"], info["height"]) == (32, 32)
    return report


def test_peak_memory_flat_with_video_length(micro):
    short = animate_in_child(micro, 40)
    long = animate_in_child(micro, 200)
    growth_mib = (long["self_kb"] - short["self_kb"]) / 1024
    print(f"peak RSS: 40 frames {short['self_kb'] / 1024:.0f} MiB, 200 frames {long['self_kb'] / 1024:.0f} MiB "
          f"(+{growth_mib:.1f} MiB); {short['seconds']:.1f} s / {long['seconds']:.1f} s")
    assert growth_mib < 40  # holding the 160 extra decoded 720p frames would be ~440 MiB
