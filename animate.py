"""Animate a source image with a driving video (command line). See README, section "Animate your own photo".

The command line and the web app share one code path: `run_animation(...)`.
"""
from __future__ import annotations

from typing import Callable

from modules.animation import make_animation  # noqa: F401  (public API: animate.make_animation)


def run_animation(config, checkpoint, source_image, driving_video, result_video, mode: str = "relative",
                  crop: str = "centre", find_best_frame: bool = False, audio: bool = True,
                  side_by_side: str | bool | None = None, device: str = "cpu", precision: str = "fp32",
                  batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> dict:
    """Animate `source_image` with `driving_video`, write `result_video` (mp4/gif/PNG folder). Work in progress."""
    raise NotImplementedError("run_animation is being written (animate-CLI helper)")
