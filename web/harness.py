"""Start `app.py` on a free port and drive it with headless Chromium (the tests and `web/screenshot.py`).

Chromium and chromedriver are Debian's packages (`make browser-deps`); the environment variables
CHROMIUM and CHROMEDRIVER name other executables. The flags keep the browser from reaching for
the network on its own (a closed network refuses those connections), so whatever the page
requests shows in the network log.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import IO, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-extensions", "--hide-scrollbars")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(args: Sequence[str], log: IO[str], env: dict | None = None,
                 timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """`python app.py --port <free> *args`; returns (process, url) once the page answers 200."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "--port", str(port), *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})), stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while not http_ok(url):
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode} (log: {getattr(log, 'name', '?')})")
        if time.time() > deadline:
            stop_server(proc)
            raise RuntimeError(f"app.py not serving after {timeout:.0f} s (log: {getattr(log, 'name', '?')})")
        time.sleep(1.0)
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def chromium(profile_dir: str, width: int = 1280, height: int = 1000, page_load_timeout: float = 90.0):
    """A selenium driver for headless Chromium with a fresh profile and the network log on."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise RuntimeError("chromium and chromedriver are needed: `make browser-deps` "
                           "(apt-get install chromium chromium-driver), or set CHROMIUM and CHROMEDRIVER")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(page_load_timeout)
    return driver


def requested_urls(driver) -> set[str]:
    """Every URL the page requested (HTTP and WebSocket) since the last call, from the network log."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            urls.add(message["params"].get("request", {}).get("url") or message["params"].get("url", ""))
    return urls


def external(urls) -> list[str]:
    """The http(s)/ws(s) URLs among `urls` that point anywhere but this machine."""
    out = []
    for url in urls:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in LOCAL_HOSTS:
            out.append(url)
    return sorted(out)
