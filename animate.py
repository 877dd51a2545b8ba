"""Animate a source image with a driving video (command line). See README."""
from modules.animation import make_animation  # noqa: F401  (public API: animate.make_animation)
