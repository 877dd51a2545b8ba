"""utils.curves: the trainer's per-epoch log lines read back, and the PNG of the curves."""
from __future__ import annotations

import imageio.v3 as iio
import pytest

from utils.curves import parse_loss_lines, plot_curves, read_loss_log

LOG = """\
00000000) perceptual - 69.16412; equivariance_value - 0.75345; warp_loss - 5.57100 | 29.6s, data wait 1.3s
a line that is not an epoch line
00000001) perceptual - 51.00000; equivariance_value - 0.50000; warp_loss - 4.00000 | 28.1s, data wait 1.0s
00000002) perceptual - 40.5; equivariance_value - 0.4; warp_loss - 3.5; bg - 1.25e-1
"""


def test_epoch_lines_are_read_per_loss(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text(LOG)
    curves = read_loss_log(str(path))
    assert curves["perceptual"] == [(0, 69.16412), (1, 51.0), (2, 40.5)]
    assert curves["warp_loss"] == [(0, 5.571), (1, 4.0), (2, 3.5)]
    assert curves["bg"] == [(2, 0.125)]
    assert parse_loss_lines(["no epochs here"]) == {}


def test_plot_writes_a_png_with_a_panel_per_loss(tmp_path):
    curves = parse_loss_lines(LOG.splitlines())
    one = plot_curves({"run": {"perceptual": curves["perceptual"]}}, str(tmp_path / "one.png"))
    four = plot_curves({"run": curves, "other": {"perceptual": [(0, 30.0), (1, 20.0)]}}, str(tmp_path / "four.png"))
    a, b = iio.imread(one), iio.imread(four)
    assert a.ndim == 3 and b.shape[1] > 3 * a.shape[1]  # four panels side by side
    assert not list(tmp_path.glob("*.tmp.*"))


def test_nothing_to_plot_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no losses"):
        plot_curves({"run": {}}, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
