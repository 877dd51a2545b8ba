"""`python -m modules.download` for the published MRAA checkpoints: the table, a download from a loopback
mirror into checkpoints/mraa/, and the offline message (no network is used)."""
from __future__ import annotations

import functools
import http.server
import os
import threading

import pytest

from modules import build_models, load_checkpoint
from modules.download import PUBLISHED, DownloadError, download, main
from modules.mraa.checkpoint import save_published_checkpoint
from modules.mraa.weight_recipe import fill_mraa_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "fixtures", "mraa_tiny.yaml")
NAMES = {"mraa-vox": "vox256", "mraa-taichi": "taichi256", "mraa-ted": "ted384",
         "mraa-ted-youtube": "ted-youtube384", "mraa-mgif": "mgif256"}


def test_published_table_names_the_mraa_files(capsys):
    for key, name in NAMES.items():
        entry = PUBLISHED[key]
        assert entry.filename == f"mraa/{name}.pth"
        assert os.path.isfile(os.path.join(ROOT, entry.config)) and entry.config == f"config/mraa/{name}.yaml"
        assert entry.url.startswith("https://github.com/snap-research/articulated-animation/raw/451f7da")
        assert entry.url.endswith(f"/checkpoints/{name}.pth")
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    for key, name in NAMES.items():
        assert f"config/mraa/{name}.yaml" in listed and key in listed


@pytest.fixture()
def mirror(tmp_path):
    """A loopback HTTP server over a folder holding the tiny MRAA checkpoint in the published layout."""
    served = tmp_path / "served"
    served.mkdir()
    save_published_checkpoint(served / "vox256.pth", fill_mraa_models(build_models(CONFIG)), epoch_avd=29)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_lands_in_checkpoints_mraa_and_loads(tmp_path, mirror):
    folder = tmp_path / "checkpoints"
    path = download("mraa-vox", str(folder), url=f"{mirror}/vox256.pth", config=CONFIG, progress=False)
    assert path == str(folder / "mraa" / "vox256.pth") and os.path.isfile(path)
    assert not os.path.exists(path + ".part")
    models = build_models(CONFIG)
    assert load_checkpoint(path, models)["epoch_avd"] == 29


def test_download_against_the_wrong_config_does_not_land(tmp_path, mirror):
    folder = tmp_path / "checkpoints"
    with pytest.raises(DownloadError, match="does not load against"):
        download("mraa-vox", str(folder), url=f"{mirror}/vox256.pth", progress=False)  # the full-size vox256
    assert not os.path.exists(folder / "mraa" / "vox256.pth")


def test_offline_is_one_line_naming_url_and_place(tmp_path, capsys):
    port = 9  # discard: nothing listens on loopback
    code = main(["mraa-taichi", "--dir", str(tmp_path / "ck"), "--url", f"http://127.0.0.1:{port}/taichi256.pth",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "taichi256.pth" in err and str(tmp_path / "ck" / "mraa" / "taichi256.pth") in err
