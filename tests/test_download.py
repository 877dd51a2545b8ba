"""`python -m modules.download`: against a loopback HTTP server serving a small checkpoint (and broken ones)."""
from __future__ import annotations

import http.server
import os
import re
import socket
import threading

import pytest
import torch

from modules.download import PUBLISHED, DownloadError, download, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CHECKPOINT = os.path.join(FIXTURES, "fomm_tiny.pth.tar")  # a small FOMM checkpoint (1.3 MB)
CONFIG = os.path.join(FIXTURES, "fomm_tiny.yaml")


class Server:
    """Serves `files` {path: bytes} with HTTP Range; `cut[path] = n` closes the connection after n bytes once."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut, self.requests = files, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                server.requests.append((self.path, self.headers.get("Range")))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                limit = server.cut.pop(self.path, None)
                self.wfile.write(body if limit is None else body[:limit])
                self.wfile.flush()
                if limit is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with open(CHECKPOINT, "rb") as handle:
        data = handle.read()
    srv = Server({"/vox-cpk.pth.tar": data, "/truncated.pth.tar": data[: len(data) // 2]})
    yield srv, data
    srv.close()


def test_download_checks_and_keeps(tmp_path, server, capsys):
    srv, data = server
    path = download("fomm-vox", str(tmp_path), url=srv.url + "/vox-cpk.pth.tar", config=CONFIG)
    assert path == str(tmp_path / "vox-cpk.pth.tar")
    with open(path, "rb") as handle:
        assert handle.read() == data
    assert not os.path.exists(path + ".part")
    assert "vox-cpk.pth.tar" in capsys.readouterr().err  # the progress bar
    before = len(srv.requests)
    assert download("fomm-vox", str(tmp_path), url=srv.url + "/vox-cpk.pth.tar", config=CONFIG) == path
    assert len(srv.requests) == before  # already there and loads: nothing fetched


def test_interrupted_download_resumes_with_range(tmp_path, server):
    srv, data = server
    srv.cut["/vox-cpk.pth.tar"] = 300_000
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download("fomm-vox", str(tmp_path), url=srv.url + "/vox-cpk.pth.tar", config=CONFIG, progress=False)
    partial = tmp_path / "vox-cpk.pth.tar.part"
    assert os.path.getsize(partial) == 300_000 and not os.path.exists(tmp_path / "vox-cpk.pth.tar")
    path = download("fomm-vox", str(tmp_path), url=srv.url + "/vox-cpk.pth.tar", config=CONFIG, progress=False)
    assert srv.requests[-1] == ("/vox-cpk.pth.tar", "bytes=300000-")
    with open(path, "rb") as handle:
        assert handle.read() == data
    assert torch.load(path, weights_only=True)["epoch"] == 99


def test_truncated_file_does_not_land(tmp_path, server):
    srv, _ = server
    with pytest.raises(DownloadError) as err:
        download("fomm-vox", str(tmp_path), url=srv.url + "/truncated.pth.tar", config=CONFIG, progress=False)
    assert "does not load" in str(err.value) and "truncated" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_mismatched_config_does_not_land(tmp_path, server):
    srv, _ = server
    with pytest.raises(DownloadError, match="does not load against"):
        download("vox", str(tmp_path), url=srv.url + "/vox-cpk.pth.tar",
                 config=os.path.join(FIXTURES, "tiny.yaml"), progress=False)
    assert os.listdir(tmp_path) == []


def test_offline_is_one_line_naming_url_and_place(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    url = f"http://127.0.0.1:{port}/vox.pth.tar"
    assert main(["vox", "--dir", str(tmp_path), "--url", url, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert url in err and str(tmp_path / "vox.pth.tar") in err


def test_published_table():
    assert {"vox", "taichi", "ted", "mgif", "fomm-vox", "fomm-vox-adv", "fomm-taichi"} <= set(PUBLISHED)
    for name, entry in PUBLISHED.items():
        assert os.path.isfile(os.path.join(ROOT, entry.config)), name
        assert entry.url.startswith("https://"), name
    assert PUBLISHED["ted"].config == "config/ted-384.yaml"
