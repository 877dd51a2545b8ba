"""The live tab end to end: `python app.py` with the tiny model, headless Chromium whose fake camera
plays a real clip (`--use-fake-device-for-media-stream --use-file-for-fake-video-capture`).

The page (web/static/live.html, in the "Live (webcam)" tab) sends camera frames over a WebSocket and
draws the animated frames it gets back; `window.live` keeps their count, size and an 8x8 grey
signature of each. The server's /live/status says how many sessions and worker threads are alive.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from web.harness import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, start_server, stop_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.path.join(ROOT, "tests", "data", "single_face.mp4")
SERVER_START_TIMEOUT = 300   # s; torch + gradio imports on a busy 2-core machine
UI_TIMEOUT = 90              # s
FRAMES = 20                  # animated frames to receive


def _y4m(src: str, dst: str, frames: int, still: bool = False) -> str:
    """`frames` frames of `src` (or its first frame repeated, `still`) as 320x180 Y4M for Chromium's fake camera."""
    from utils.media import ffmpeg_exe

    select = ["-vf", "trim=end_frame=1,loop=loop=-1:size=1,scale=320:180"] if still else ["-vf", "scale=320:180"]
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", src, *select, "-frames:v", str(frames),
                    "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", dst], check=True, timeout=120)
    return dst


def _status(server) -> dict:
    with urllib.request.urlopen(server["url"] + "live/status", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, tiny_config_path):
    """`python app.py --live_sessions 1` on a free port with the tiny model."""
    base = tmp_path_factory.mktemp("live_server")
    (base / "checkpoints").mkdir()
    (base / "config").mkdir()
    shutil.copy(tiny_checkpoint, base / "checkpoints" / "tiny.pth.tar")
    shutil.copy(tiny_config_path, base / "config" / "tiny.yaml")
    log_path = base / "server.log"
    with open(log_path, "w") as log:
        try:
            proc, url = start_server(["--device", "cpu", "--checkpoints_dir", str(base / "checkpoints"),
                                      "--config_dir", str(base / "config"), "--live_sessions", "1"], log,
                                     env={"GRADIO_TEMP_DIR": str(base / "gradio"), "OMP_NUM_THREADS": "1"},
                                     timeout=SERVER_START_TIMEOUT)
        except RuntimeError as err:
            raise AssertionError(f"{err}:\n{log_path.read_text()[-3000:]}") from None
        try:
            yield {"url": url, "proc": proc, "log": log_path}
        finally:
            stop_server(proc)


def _browser(profile: str, camera_file: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, "--window-size=1280,1000", f"--user-data-dir={profile}",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera_file}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(UI_TIMEOUT)
    return driver


def _wait(driver, condition, timeout: float, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        state = driver.execute_script("return window.live ? JSON.stringify({...window.live, log: window.live.log.length}) : null")
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; live state: {state}") from None


def _wait_server(server, condition, timeout: float, what: str) -> dict:
    deadline = time.time() + timeout
    while True:
        status = _status(server)
        if condition(status):
            return status
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; status: {status}")
        time.sleep(0.25)


def _run_camera(driver, frames: int) -> list[dict]:
    """Start the camera in the open live page and return the log of the first `frames` animated frames."""
    driver.find_element("id", "start").click()
    _wait(driver, lambda d: d.execute_script("return window.live.received") >= frames, UI_TIMEOUT,
          f"{frames} animated frames")
    return driver.execute_script("return window.live.log")


def _motion(log: list[dict]) -> float:
    """Largest mean absolute change of the 8x8 grey signature between received frames."""
    sigs = np.array([entry["sig"] for entry in log], dtype=np.float64)  # N x 64
    return float(np.abs(sigs[1:] - sigs[:-1]).mean(axis=1).max())


def test_live_tab_animates_the_fake_camera_and_frees_the_session(server, tmp_path):
    moving = _y4m(CLIP, str(tmp_path / "moving.y4m"), frames=72)
    driver = _browser(str(tmp_path / "profile"), moving)
    try:
        # The tab in the app's page holds the live page in a frame.
        driver.get(server["url"])
        tab = _wait(driver, lambda d: [b for b in d.find_elements("css selector", "button[role=tab]")
                                       if "Live" in b.text], UI_TIMEOUT, "the live tab")
        tab[0].click()
        frame = _wait(driver, lambda d: d.find_elements("id", "live_frame"), UI_TIMEOUT, "the live frame")
        driver.switch_to.frame(frame[0])
        _wait(driver, lambda d: d.find_elements("id", "start"), UI_TIMEOUT, "the live page")
        log = _run_camera(driver, FRAMES)
        live = driver.execute_script("return window.live")
        assert live["error"] is None and live["ready"]["model"] == "tiny"
        assert (live["width"], live["height"]) == (64, 64) and all((e["w"], e["h"]) == (64, 64) for e in log)
        assert live["received"] >= FRAMES and live["fps"] > 0 and 0 < live["latency"] < 10_000
        assert _motion(log) > 1.0, "the animated frames do not change with the driving clip"
        status = _status(server)
        assert status["sessions"] == 1 and status["workers"] == 1

        # The limit (1 session): a second client is refused, and leaves nothing behind.
        refused = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const ws = new WebSocket(`ws://${location.host}/live/ws?client=second-client`);
            let text = null;
            ws.onmessage = (e) => { text = e.data; };
            ws.onclose = (e) => done({code: e.code, text});""")
        assert refused["code"] == 4001 and "too many live sessions" in json.loads(refused["text"])["message"]
        assert _status(server)["sessions"] == 1

        # Closing the page ends the session and its worker thread.
        driver.switch_to.default_content()
        driver.get("about:blank")
        status = _wait_server(server, lambda s: s["sessions"] == 0 and s["workers"] == 0, 30, "the session to end")
        assert status["started"] >= 1
    finally:
        driver.quit()
    assert server["proc"].poll() is None, server["log"].read_text()[-3000:]


def test_live_page_still_camera_gives_still_result_and_stop_frees_session(server, tmp_path):
    """A camera showing one still frame: the animation holds still (the change above comes from the clip)."""
    still = _y4m(CLIP, str(tmp_path / "still.y4m"), frames=30, still=True)
    driver = _browser(str(tmp_path / "profile"), still)
    try:
        driver.get(server["url"] + "live")
        _wait(driver, lambda d: d.find_elements("id", "start"), UI_TIMEOUT, "the live page")
        log = _run_camera(driver, 10)
        assert _motion(log) < 0.5, "a still camera should give a still animation"
        assert all((e["w"], e["h"]) == (64, 64) for e in log)
        _wait_server(server, lambda s: s["sessions"] == 1, 10, "the session")
        driver.find_element("id", "stop").click()
        _wait_server(server, lambda s: s["sessions"] == 0 and s["workers"] == 0, 30, "stop to end the session")
    finally:
        driver.quit()
