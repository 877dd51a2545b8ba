"""The web page (app.py) end to end: a real server, driven by headless Chromium (Debian's chromium + chromedriver).

One server (a subprocess running `python app.py ...` with the tiny random-weight model) serves
every test in this file. Screenshots go to $TEST_OUTPUT_DIR/app/ when set, else to pytest's tmp folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from web.harness import chromium, external, http_ok, requested_urls, start_server, stop_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "web", "examples")
UPLOAD_LIMIT_MB = 1.0           # the server's --max_file_size in these tests
CLIP_FRAMES = 12                # the driving clip the browser uploads
SERVER_START_TIMEOUT = 300      # s; a slow, busy 2-core machine imports torch + gradio slowly
RUN_TIMEOUT = 300               # s; one animation of a few 64 px frames, queue included
UI_TIMEOUT = 90                 # s; page loads, uploads, messages


# ----------------------------------------------------------------------------- helpers
def _cut_clip(src: str, dst: str, frames: int) -> str:
    """The first `frames` frames of `src` (audio kept) as an H.264 mp4."""
    from utils.media import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", src, "-frames:v", str(frames), "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", dst], check=True, timeout=120)
    return dst


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory) -> str:
    folder = os.environ.get("TEST_OUTPUT_DIR")
    folder = os.path.join(folder, "app") if folder else str(tmp_path_factory.mktemp("app_output"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, tiny_config_path):
    """`python app.py` on a free port, offering the tiny model found by the checkpoints/ + config/ scan."""
    base = tmp_path_factory.mktemp("app_server")
    (base / "checkpoints").mkdir()
    (base / "config").mkdir()
    shutil.copy(tiny_checkpoint, base / "checkpoints" / "tiny.pth.tar")
    shutil.copy(tiny_config_path, base / "config" / "tiny-64.yaml")   # found by the <name>*.yaml rule
    # A checkpoint whose config asks for other shapes (5 TPS instead of 4): a message at run time.
    shutil.copy(tiny_checkpoint, base / "checkpoints" / "mismatch.pth.tar")
    text = open(tiny_config_path).read()
    assert "num_tps: 4" in text
    (base / "config" / "mismatch.yaml").write_text(text.replace("num_tps: 4", "num_tps: 5"))
    log_path = base / "server.log"
    with open(log_path, "w") as log:
        try:
            proc, url = start_server(["--device", "cpu", "--checkpoints_dir", str(base / "checkpoints"),
                                      "--config_dir", str(base / "config"), "--max_file_size", str(UPLOAD_LIMIT_MB)],
                                     log, env={"GRADIO_TEMP_DIR": str(base / "gradio"), "OMP_NUM_THREADS": "2"},
                                     timeout=SERVER_START_TIMEOUT)
        except RuntimeError as err:
            raise AssertionError(f"{err}:\n{log_path.read_text()[-3000:]}") from None
        try:
            yield {"url": url, "proc": proc, "log": log_path, "dir": base}
        finally:
            stop_server(proc)


@pytest.fixture()
def browser(tmp_path):
    """Headless Chromium through chromedriver (web/harness.py): offline flags, fresh profile, network log."""
    driver = chromium(str(tmp_path / "profile"), page_load_timeout=UI_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text[-1500:]
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; page text ends with:\n{body}") from None


def _open(driver, server) -> None:
    driver.get(server["url"])
    _wait(driver, lambda d: d.find_elements("css selector", "#source_image input[type=file]")
          and d.find_elements("css selector", "#driving_video input[type=file]"), UI_TIMEOUT, "the page to load")


def _upload(driver, component: str, path: str) -> None:
    driver.find_element("css selector", f"#{component} input[type=file]").send_keys(os.path.abspath(path))


def _choose_model(driver, label_start: str) -> None:
    """Open the model dropdown and click the option whose label starts with `label_start`."""
    driver.find_element("css selector", "#model input").click()
    options = _wait(driver, lambda d: [o for o in d.find_elements("css selector", "#model [role=option]")
                                       if (o.get_attribute("aria-label") or "").startswith(label_start)],
                    UI_TIMEOUT, f"option {label_start!r}")
    options[0].click()
    _wait(driver, lambda d: d.execute_script("return document.querySelector('#model input').value")
          .startswith(label_start), UI_TIMEOUT, f"model {label_start!r} selected")


def _page_has(driver, text: str, timeout: float = UI_TIMEOUT) -> None:
    _wait(driver, lambda d: text in d.find_element("tag name", "body").text, timeout, repr(text))


# ----------------------------------------------------------------------------- tests
def test_browser_upload_animate_and_download(server, browser, output_dir, tmp_path):
    """Upload the built-in photo and (the first frames of) a built-in video, animate, get the video back."""
    from utils.media import has_audio
    from utils.video import open_video

    clip = _cut_clip(os.path.join(EXAMPLES, "single_face.mp4"), str(tmp_path / "driving.mp4"), CLIP_FRAMES)
    assert open_video(clip).num_frames == CLIP_FRAMES
    _open(browser, server)
    _choose_model(browser, "tiny (")
    model = browser.execute_script("return document.querySelector('#model input').value")
    assert model.startswith("tiny (") and "tiny-64.yaml" in model  # the checkpoints/ + config/ scan found it
    _upload(browser, "source_image", os.path.join(EXAMPLES, "astronaut.png"))
    _page_has(browser, "astronaut.png: 256x256")
    _upload(browser, "driving_video", clip)
    _page_has(browser, f"driving.mp4: {CLIP_FRAMES} frames")
    browser.find_element("id", "animate_button").click()
    _page_has(browser, "Done in", RUN_TIMEOUT)
    _wait(browser, lambda d: d.execute_script(
        "const v = document.querySelector('#result_video video'); return v && v.readyState >= 2 && v.duration > 0"),
        UI_TIMEOUT, "the result video to be playable in the page")
    width, height = browser.execute_script(
        "const v = document.querySelector('#result_video video'); return [v.videoWidth, v.videoHeight]")
    assert (width, height) == (256, 256)  # paste-back 'auto': the 256 px photo is larger than the 64 px model
    assert browser.find_elements("css selector", "#side_by_side_video video")
    shot = os.path.join(output_dir, "app_result.png")
    assert browser.save_screenshot(shot) and os.path.getsize(shot) > 10_000

    # The result as a user downloads it: the driving clip's frame count and its audio track.
    src = browser.find_element("css selector", "#result_video video").get_attribute("src")
    assert urllib.parse.urlparse(src).hostname == "127.0.0.1"
    result = str(tmp_path / "result.mp4")
    urllib.request.urlretrieve(src, result)
    assert open_video(result).num_frames == CLIP_FRAMES
    assert has_audio(result)
    assert f"Result: {CLIP_FRAMES} frames" in browser.find_element("id", "status").text

    # Offline: the page asked nothing of any host but this server.
    outside = external(requested_urls(browser))
    assert not outside, f"the page requested outside URLs: {outside[:5]}"


def test_browser_large_photo_pasted_back(server, browser, output_dir, tmp_path):
    """A 1080x1350 photo (JPEG, made from the built-in one), face crop, paste-back left on 'auto': the page shows
    and serves the full-size result with the driving clip's frame count."""
    from PIL import Image

    from utils.media import probe

    frames = 6
    clip = _cut_clip(os.path.join(EXAMPLES, "single_face.mp4"), str(tmp_path / "nod.mp4"), frames)
    photo = Image.open(os.path.join(EXAMPLES, "astronaut.png")).convert("RGB").resize((1350, 1350), Image.BICUBIC)
    path = str(tmp_path / "large.jpg")
    photo.crop((135, 0, 135 + 1080, 1350)).save(path, quality=85)
    _open(browser, server)
    _choose_model(browser, "tiny (")
    _upload(browser, "source_image", path)
    _page_has(browser, "large.jpg: 1080x1350")
    _upload(browser, "driving_video", clip)
    _page_has(browser, f"nod.mp4: {frames} frames")
    browser.find_element("css selector", "#crop input[value=face]").click()
    assert browser.find_element("css selector", "#paste_back input[value=auto]").is_selected()
    browser.find_element("id", "animate_button").click()
    _page_has(browser, "Done in", RUN_TIMEOUT)
    _wait(browser, lambda d: d.execute_script(
        "const v = document.querySelector('#result_video video'); return v && v.readyState >= 2 && v.duration > 0"),
        UI_TIMEOUT, "the result video to be playable in the page")
    size = browser.execute_script(
        "const v = document.querySelector('#result_video video'); return [v.videoWidth, v.videoHeight]")
    assert size == [1080, 1350]
    assert "1080x1350 (the full photo" in browser.find_element("id", "status").text
    browser.save_screenshot(os.path.join(output_dir, "app_paste_back.png"))
    result = str(tmp_path / "result.mp4")
    urllib.request.urlretrieve(browser.find_element("css selector", "#result_video video").get_attribute("src"), result)
    info = probe(result)
    assert (info["width"], info["height"], info["num_frames"]) == (1080, 1350, frames)


def test_browser_bad_uploads_show_messages(server, browser, output_dir, tmp_path):
    """Not an image, an empty video, a damaged video, a file over the limit: a message each; the server lives on."""
    not_image = tmp_path / "holiday.png"
    not_image.write_text("this is text, not a picture\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(os.urandom(50_000))
    huge = tmp_path / "huge.png"
    huge.write_bytes(os.urandom(int(UPLOAD_LIMIT_MB * 1e6) + 200_000))

    _open(browser, server)
    _upload(browser, "source_image", str(not_image))
    _page_has(browser, "holiday.png is not an image this app can read")
    browser.save_screenshot(os.path.join(output_dir, "app_bad_upload.png"))
    _upload(browser, "driving_video", str(empty))
    _page_has(browser, "empty.mp4 is empty (0 bytes)")

    _open(browser, server)
    _upload(browser, "driving_video", str(damaged))
    _page_has(browser, "damaged.mp4 is not a video this app can read")

    _open(browser, server)
    _upload(browser, "source_image", str(huge))
    _page_has(browser, "exceed the maximum allowed size")

    # Animate with nothing uploaded: a message, not a crash.
    _open(browser, server)
    browser.find_element("id", "animate_button").click()
    _page_has(browser, "Please upload a source image")

    # A built-in example fills both inputs.
    browser.find_elements("css selector", "#examples tbody tr")[0].click()
    _wait(browser, lambda d: d.execute_script(
        "const i = document.querySelector('#source_image img'), v = document.querySelector('#driving_video video');"
        "return !!(i && i.src && v && v.src)"), UI_TIMEOUT, "the example to fill the inputs")

    assert server["proc"].poll() is None, server["log"].read_text()[-3000:]
    assert http_ok(server["url"])
    assert "Traceback" not in server["log"].read_text()


def test_two_users_at_once_both_get_their_results(server, tmp_path):
    """Two clients submit at the same moment: one waits in the queue while the other runs, both get their own video,
    and each sees the progress bar count its frames."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    from utils.video import open_video

    frames = {"a": 6, "b": 9}
    clips = {k: _cut_clip(os.path.join(EXAMPLES, "carphone.mp4"), str(tmp_path / f"{k}.mp4"), n) for k, n in frames.items()}
    jobs = {k: Client(server["url"], verbose=False).submit(
        handle_file(os.path.join(EXAMPLES, "astronaut.png")), handle_file(clips[k]), "tiny", "standard", "none",
        False, False, api_name="/animate") for k in frames}
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    progress: dict[str, set] = {k: set() for k in frames}
    deadline = time.time() + RUN_TIMEOUT
    while not all(job.done() for job in jobs.values()) and time.time() < deadline:
        for k, job in jobs.items():
            status = job.status()
            now = time.time()
            if status.code in (Status.PROCESSING, Status.PROGRESS):
                started.setdefault(k, now)
            if status.code == Status.FINISHED:
                finished.setdefault(k, now)
            for p in status.progress_data or []:
                progress[k].add((p.desc, p.length, p.unit))
        time.sleep(0.05)
    for k, job in jobs.items():
        result, side_by_side, status = job.result(timeout=RUN_TIMEOUT)
        assert open_video(result).num_frames == frames[k], status
        assert side_by_side is None
        assert f"{k}.mp4: {frames[k]} frames" in status
        assert ("Animating", frames[k], "frames") in progress[k], progress[k]
        finished.setdefault(k, time.time())
    first, second = sorted(frames, key=lambda k: started[k])
    assert started[second] >= finished[first] - 0.5, (started, finished)  # one at a time: the second waited


def test_bad_request_through_the_api_is_a_message(server, tmp_path):
    """The same checks guard the API: a text file as the source image, a checkpoint that does not fit its config."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    text = tmp_path / "photo.jpg"
    text.write_text("not a jpeg")
    client = Client(server["url"], verbose=False)
    with pytest.raises(AppError, match="photo.jpg is not an image"):
        client.predict(handle_file(str(text)), handle_file(os.path.join(EXAMPLES, "carphone.mp4")), "tiny",
                       "relative", "centre", False, True, api_name="/animate")
    with pytest.raises(AppError, match="Animation failed: checkpoint .*mismatch.pth.tar does not match the config"):
        client.predict(handle_file(os.path.join(EXAMPLES, "astronaut.png")),
                       handle_file(os.path.join(EXAMPLES, "carphone.mp4")), "mismatch",
                       "relative", "centre", False, True, api_name="/animate")
    assert server["proc"].poll() is None
    assert "Traceback" not in server["log"].read_text()  # known errors are messages, not crashes


# ----------------------------------------------------------------------------- model discovery, options
def test_find_models_matches_configs(tmp_path, tiny_checkpoint, tiny_config_path):
    import app
    import torch

    ckpts, configs = tmp_path / "checkpoints", tmp_path / "config"
    (ckpts / "fomm").mkdir(parents=True)
    (configs / "fomm").mkdir(parents=True)
    for name in ("vox", "demo", "fomm/vox-adv", "embedded", "orphan", "beside"):
        shutil.copy(tiny_checkpoint, ckpts / f"{name}.pth.tar")
    for name in ("vox-256", "vox-256-long", "demo", "fomm/vox-256", "fomm/vox-adv-256"):
        shutil.copy(tiny_config_path, configs / f"{name}.yaml")
    shutil.copy(tiny_config_path, ckpts / "beside.yaml")
    data = torch.load(tiny_checkpoint, weights_only=True)
    data["config"] = {"dataset_params": {"frame_shape": [64, 64, 3]}}
    torch.save(data, ckpts / "embedded.pth.tar")

    models = app.find_models(str(ckpts), str(configs))
    assert sorted(models) == ["beside", "demo", "embedded", "fomm/vox-adv", "vox"]
    assert models["vox"].config == str(configs / "vox-256.yaml")           # shortest <name>*.yaml
    assert models["demo"].config == str(configs / "demo.yaml")             # exact name first
    assert models["fomm/vox-adv"].config == str(configs / "fomm" / "vox-adv-256.yaml")  # same sub-folder
    assert models["beside"].config == str(ckpts / "beside.yaml")           # a yaml next to the checkpoint
    assert models["embedded"].config == data["config"]                     # stored in the checkpoint
    assert models["vox"].checkpoint == str(ckpts / "vox.pth.tar")
    assert app.find_models(str(tmp_path / "missing"), str(configs)) == {}


def test_the_page_opens_on_the_pretrained_model(tmp_path, tiny_checkpoint):
    """checkpoints/demo128.pth.tar (data/train_demo128.py's export) is found with config/demo128.yaml and
    selected when the page opens, before the small model `make demo` trains and the published ones."""
    import app

    assert app.default_model({"vox": 1, "demo": 2, "demo128": 3}) == "demo128"
    assert app.default_model({"vox": 1, "demo": 2}) == "demo"
    assert app.default_model({"vox": 1, "taichi": 2}) == "vox"
    assert app.default_model({}) is None
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for name in ("vox", "demo", "demo128"):  # any bytes: finding a model reads names, not weights
        shutil.copy(tiny_checkpoint, checkpoints / f"{name}.pth.tar")
    found = app.find_models(str(checkpoints), os.path.join(app.ROOT, "config"))
    assert app.default_model(found) == "demo128"
    assert found["demo128"].config == os.path.join(app.ROOT, "config", "demo128.yaml")
    assert found["vox"].config == os.path.join(app.ROOT, "config", "vox-256.yaml")


def test_command_line_options(tmp_path, capsys, tiny_checkpoint, tiny_config_path):
    import app

    assert app.parse_size("1") == 1_000_000 and app.parse_size("500kb") == 500_000
    assert app.parse_size("2gb") == 2_000_000_000 and app.parse_size("0") is None
    choice = app.parse_model_spec(f"mine={tiny_config_path}:{tiny_checkpoint}")
    assert (choice.name, choice.config, choice.checkpoint) == ("mine", tiny_config_path, tiny_checkpoint)
    assert app.parse_model_spec(f"{tiny_config_path}:{tiny_checkpoint}").name == "tiny"
    assert app.main(["--model", f"{tiny_config_path}:{tmp_path / 'nope.pth.tar'}"]) == 2
    assert "error: --model" in capsys.readouterr().err
    assert app.main(["--device", "tpu9"]) == 2
    assert "error:" in capsys.readouterr().err


def test_old_job_folders_are_removed(tmp_path):
    import app

    old, new, running = tmp_path / "old-job", tmp_path / "new-job", tmp_path / "old-running-job"
    for folder in (old, new, running):
        folder.mkdir()
        (folder / "result.mp4").write_bytes(b"x")
    past = time.time() - app.JOB_MAX_AGE_S - 60
    os.utime(old, (past, past))
    os.utime(running, (past, past))
    app._remove_old_jobs(str(tmp_path), max_age_s=app.JOB_MAX_AGE_S, keep={str(running)})
    assert not old.exists() and (new / "result.mp4").exists() and (running / "result.mp4").exists()
