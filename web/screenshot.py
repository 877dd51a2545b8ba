"""The screenshot of the web page in docs/web.md: start app.py, click a built-in example, animate, save a PNG.

    .venv/bin/python web/screenshot.py                       # models from checkpoints/ (the demo model first)
    .venv/bin/python web/screenshot.py --out docs/app.png -- --model config/vox-256.yaml:checkpoints/vox.pth.tar

Arguments after `--` go to app.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from web.harness import chromium, external, requested_urls, start_server, stop_server  # noqa: E402


def take(url: str, out: str, example: int = 0, width: int = 960, timeout: float = 600.0) -> list[str]:
    """Drive the page at `url`; write the PNG (scaled to `width`); return the outside URLs it requested."""
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as profile:
        driver = chromium(profile, 1280, 1500)
        try:
            wait = WebDriverWait(driver, timeout, poll_frequency=0.5)
            driver.get(url)
            wait.until(lambda d: d.find_elements("css selector", "#examples tbody tr"))
            driver.find_elements("css selector", "#examples tbody tr")[example].click()
            wait.until(lambda d: d.execute_script("return !!document.querySelector('#driving_video video')"))
            driver.find_element("id", "animate_button").click()
            wait.until(lambda d: "Done in" in d.find_element("id", "status").text
                       or "Animation failed" in d.find_element("tag name", "body").text)
            if "Done in" not in driver.find_element("id", "status").text:
                raise RuntimeError(driver.find_element("tag name", "body").text[-500:])
            wait.until(lambda d: d.execute_script(
                "const v = document.querySelector('#result_video video'); return v && v.readyState >= 2"))
            driver.execute_script("for (const v of document.querySelectorAll('video')) v.currentTime = v.duration / 2;"
                                  "window.scrollTo(0, 0);")
            time.sleep(2.0)
            raw = out + ".full.png"
            driver.save_screenshot(raw)
            outside = external(requested_urls(driver))
        finally:
            driver.quit()
    import numpy as np

    image = Image.open(raw).convert("RGB")
    os.remove(raw)
    rows = np.where((np.asarray(image) < 250).any(axis=(1, 2)))[0]  # drop the empty space under the page
    image = image.crop((0, 0, image.width, min(image.height, int(rows.max()) + 20)))
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    return outside


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/app.png")
    parser.add_argument("--example", type=int, default=0, help="which built-in example to click")
    parser.add_argument("--width", type=int, default=960, help="width of the saved PNG")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as log:
        try:
            proc, url = start_server(app_args, log)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            outside = take(url, args.out, example=args.example, width=args.width)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        finally:
            stop_server(proc)
    print(f"wrote {args.out}" + (f"; the page requested outside URLs: {outside}" if outside else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
