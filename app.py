"""A local web page for animating a photo (Gradio), on the same code path as `animate.py`.

    python app.py                       # http://127.0.0.1:7860, models from checkpoints/ + config/
    python app.py --model config/vox-256.yaml:checkpoints/vox.pth.tar --max_file_size 200

Upload a source image and a driving video (or click a built-in example), pick the model,
the animation mode (standard / relative / avd, TPSMM Sec. 3.4 and the AVD network of
MRAA), the crop and `find_best_frame`, and press Animate. Every request goes through
`animate.run_animation(...)` (the command line's code path); requests are queued, one
animation at a time by default. Nothing is fetched from the internet: Gradio's analytics
are off and its page (scripts, styles, fonts) is served from the installed package.
"""
from __future__ import annotations

import os

# Before gradio is imported: no analytics, no version check, no hub look-ups.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import glob
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import gradio as gr

import animate as animate_cli  # the command line's code path: run_animation, MODES, resolve_device
from utils.precision import CHOICES as PRECISION_CHOICES, resolve_precision
from utils.crop import CROPS
from utils.errors import UserError as InputError  # the framework's user-facing errors (UserError here is gradio's)
from web.live import LiveSessions, live_tab

ROOT = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(ROOT, "web", "examples")
MODES = tuple(animate_cli.MODES)  # standard, relative, avd
CHECKPOINT_SUFFIX = ".pth.tar"
# ".pth": the published MRAA checkpoints' name (vox256.pth, ...), found beside the framework's own files
CHECKPOINT_SUFFIXES = (CHECKPOINT_SUFFIX, ".pth")


def _checkpoint_name(path: str) -> str:
    """A checkpoint's file name without its suffix (.pth.tar or .pth)."""
    base = os.path.basename(path)
    for suffix in CHECKPOINT_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return os.path.splitext(base)[0]
DEFAULT_MAX_FILE_SIZE_MB = 100.0
PASTE_CHOICES = ("auto", "on", "off")  # auto: on when the photo is larger than the model's frames
JOB_MAX_AGE_S = 15 * 60          # our job folders; Gradio keeps its copies of the results for CACHE_MAX_AGE_S
CACHE_MAX_AGE_S = 24 * 3600
# The page's default model: the pretrained one (checkpoints/demo128.pth.tar) when present, else the small one `make demo` trains
# (docs/demo.md and docs/web.md).
DEFAULT_MODELS = ("demo128", "demo")


@dataclass(frozen=True)
class ModelChoice:
    """One model offered in the page: a config (YAML path, or the dict stored in the checkpoint) and weights."""

    name: str
    config: Any  # str path or dict
    checkpoint: str

    @property
    def label(self) -> str:
        where = self.config if isinstance(self.config, str) else "config stored in the checkpoint"
        return f"{self.name} ({_short(where)})"


def _short(path: str) -> str:
    """A path relative to the working directory when it is inside it (for labels)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _stored_config(checkpoint: str) -> dict | None:
    """The 'config' entry of a checkpoint (k-diffusion style self-describing checkpoints), or None."""
    import torch

    try:  # mmap: only the pickled header is read, not the weights
        data = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            data = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception:
            return None
    config = data.get("config") if isinstance(data, dict) else None
    return config if isinstance(config, dict) else None


def matching_config(checkpoint: str, checkpoints_dir: str, config_dir: str) -> str | dict | None:
    """The config of `<checkpoints_dir>/<sub>/<name>.pth.tar` (or `<name>.pth`).

    Looked up in order: `<name>.yaml` next to the checkpoint; `<config_dir>/<sub>/<name>.yaml`;
    `<config_dir>/<sub>/<name>*.yaml` (the shortest such name, e.g. vox -> vox-256.yaml);
    the `config` entry stored in the checkpoint.
    """
    name = _checkpoint_name(checkpoint)
    sub = os.path.relpath(os.path.dirname(checkpoint), checkpoints_dir)
    sub = "" if sub == "." else sub
    beside = os.path.join(os.path.dirname(checkpoint), name + ".yaml")
    if os.path.isfile(beside):
        return beside
    folder = os.path.join(config_dir, sub)
    exact = os.path.join(folder, name + ".yaml")
    if os.path.isfile(exact):
        return exact
    prefixed = sorted(glob.glob(os.path.join(glob.escape(folder), glob.escape(name) + "*.yaml")), key=lambda p: (len(p), p))
    if prefixed:
        return prefixed[0]
    return _stored_config(checkpoint)


def find_models(checkpoints_dir: str = "checkpoints", config_dir: str = "config") -> dict[str, ModelChoice]:
    """Every `*.pth.tar` (and `*.pth`) under `checkpoints_dir` whose config can be found (see `matching_config`).

    The demo model (`checkpoints/demo.pth.tar` + `config/demo.yaml`, written by `make demo`)
    is found by the same rule. Checkpoints without a config are skipped with a note on stderr.
    """
    models: dict[str, ModelChoice] = {}
    if not os.path.isdir(checkpoints_dir):
        return models
    paths = sorted(path for suffix in CHECKPOINT_SUFFIXES
                   for path in glob.glob(os.path.join(glob.escape(checkpoints_dir), "**", "*" + suffix), recursive=True))
    for path in paths:
        config = matching_config(path, checkpoints_dir, config_dir)
        name = os.path.join(os.path.relpath(os.path.dirname(path), checkpoints_dir), _checkpoint_name(path))
        name = os.path.normpath(name)
        if config is None:
            print(f"note: no config found for {path} (expected {config_dir}/{name}*.yaml); not offered", file=sys.stderr)
            continue
        models[name] = ModelChoice(name=name, config=config, checkpoint=path)
    return models


def parse_model_spec(spec: str) -> ModelChoice:
    """`CONFIG:CHECKPOINT` (or `NAME=CONFIG:CHECKPOINT`) from the command line."""
    name = None
    if "=" in spec:
        name, spec = spec.split("=", 1)
    if ":" not in spec:
        raise InputError(f"--model expects CONFIG:CHECKPOINT, got {spec!r}")
    config, checkpoint = spec.rsplit(":", 1)
    for path in (config, checkpoint):
        if not os.path.isfile(path):
            raise InputError(f"--model {spec}: file not found: {path}")
    if name is None:
        name = _checkpoint_name(checkpoint)
    return ModelChoice(name=name, config=config, checkpoint=checkpoint)


def check_model(choice: ModelChoice, device: str) -> None:
    """Refuse a model the page could not animate with: its config (types, ranges) and its checkpoint
    (readable, every network the family animates with, key names and shapes), as a one-line `InputError`.
    Loaded as an animation loads it (`cached_models`), so the first animation with it reuses the networks."""
    from modules.family import load_config
    from modules.loading import cached_models

    cached_models(load_config(choice.config), choice.checkpoint, "relative", animate_cli.resolve_device(device))


def default_model(models: Mapping[str, Any]) -> str | None:
    """The model selected when the page opens: the first of DEFAULT_MODELS offered, else the first listed."""
    for name in DEFAULT_MODELS:
        if name in models:
            return name
    return next(iter(models), None)


def default_examples() -> list[list[str]]:
    """Built-in (source image, driving video) pairs shipped in web/examples/."""
    image = os.path.join(EXAMPLES_DIR, "astronaut.png")
    videos = [os.path.join(EXAMPLES_DIR, n) for n in ("single_face.mp4", "carphone.mp4")]
    return [[image, v] for v in videos if os.path.isfile(image) and os.path.isfile(v)]


def wants_paste_back(choice: str, photo_path: str, config: Any) -> bool:
    """The page's paste-back choice: 'on', 'off', or 'auto' = on when the (upright) photo is larger than
    the model's frame_shape on either side (docs/animation.md, "Full-frame results")."""
    if choice in ("on", "off"):
        return choice == "on"
    from modules.family import load_config
    from utils.media import read_photo

    frame_shape = load_config(config)["dataset_params"]["frame_shape"]
    height, width = read_photo(photo_path).shape[:2]
    return height > int(frame_shape[0]) or width > int(frame_shape[1])


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes < 1e9 else f"{num_bytes / 1e9:.2f} GB"


class UserError(gr.Error):
    """A message for the person using the page: stays on screen until closed, no traceback in the log."""

    def __init__(self, message: str):
        super().__init__(message, duration=None, print_exception=False)


class UploadChecker:
    """Checks an uploaded file (Gradio FileData dict) and returns its path, or raises gr.Error.

    Messages name the file as the user called it, never the server's temporary path.
    """

    def __init__(self, max_file_size: int | None):
        self.max_file_size = max_file_size

    @staticmethod
    def _path_and_name(payload: Any, what: str) -> tuple[str, str]:
        if payload is None:
            raise UserError(f"Please upload a {what} (or click an example).")
        if isinstance(payload, str):
            return payload, os.path.basename(payload)
        path = payload.get("path") if isinstance(payload, Mapping) else None
        if isinstance(payload, Mapping) and isinstance(payload.get("video"), Mapping):  # older Video payloads
            path = payload["video"].get("path")
            payload = payload["video"]
        if not path:
            raise UserError(f"Please upload a {what} (or click an example).")
        return path, payload.get("orig_name") or os.path.basename(path)

    def _check_size(self, path: str, name: str) -> None:
        if not os.path.isfile(path):
            raise UserError(f"The upload of {name} is missing on the server; please upload it again.")
        size = os.path.getsize(path)
        if size == 0:
            raise UserError(f"{name} is empty (0 bytes).")
        if self.max_file_size is not None and size > self.max_file_size:
            raise UserError(f"{name} is {_mb(size)}, over this server's limit of {_mb(self.max_file_size)}.")

    def image(self, payload: Any) -> tuple[str, str]:
        """The source image: readable as an image."""
        from utils.video import MediaError, read_image

        path, name = self._path_and_name(payload, "source image")
        self._check_size(path, name)
        try:
            image = read_image(path)
        except MediaError:
            raise UserError(f"{name} is not an image this app can read (use PNG, JPEG, BMP, WebP or TIFF).") from None
        return path, f"{name}: {image.shape[1]}x{image.shape[0]}"

    def video(self, payload: Any) -> tuple[str, str]:
        """The driving video: a video file with at least one decodable frame."""
        from utils.video import VIDEO_EXTENSIONS, MediaError, open_video

        path, name = self._path_and_name(payload, "driving video")
        self._check_size(path, name)
        if not path.lower().endswith(VIDEO_EXTENSIONS):
            raise UserError(f"{name} is not a video file (use {', '.join(e[1:] for e in VIDEO_EXTENSIONS)}).")
        try:
            reader = open_video(path)
            num_frames = len(reader)
            if num_frames > 0:
                reader.get_frames([0])
        except MediaError:
            raise UserError(f"{name} is not a video this app can read.") from None
        except Exception as err:  # decoders raise many types for damaged files
            raise UserError(f"{name} is not a video this app can read ({type(err).__name__}).") from None
        if num_frames == 0:
            raise UserError(f"{name} has no frames.")
        return path, f"{name}: {num_frames} frames, {reader.fps:.2f} fps, {reader.width}x{reader.height}"


def _bind_upload_checks(checker: "UploadChecker", source: Any, driving: Any, status: Any) -> None:
    """Check each upload as it arrives and say what is wrong with it in the status line.

    preprocess=False: the handlers get the uploaded file's path and check it themselves, so a bad
    upload gives a message about the file instead of a component error. The checks are quick and
    never wait behind an animation (their own unlimited concurrency group).
    """
    source.upload(lambda payload: checker.image(payload)[1], inputs=source, outputs=status, preprocess=False,
                  concurrency_limit=None, concurrency_id="check", show_progress="hidden")
    driving.upload(lambda payload: checker.video(payload)[1], inputs=driving, outputs=status, preprocess=False,
                   concurrency_limit=None, concurrency_id="check", show_progress="hidden")


def _animate_handler(models: dict, checker: "UploadChecker", run: Callable[..., dict], work_dir: str,
                     running: set[str], device: str, precision: str = "auto") -> Callable[..., tuple]:
    """The Animate button's handler: checks the request, runs one animation job, returns (result, both, status)."""

    def animate(source_payload: Any, driving_payload: Any, model_name: str, mode: str, crop: str,
                find_best: bool, side_by_side: bool, paste_back: str = "auto", colour_match: bool = False,
                progress: gr.Progress = gr.Progress()) -> tuple:
        if not models:
            raise UserError("No model is installed: put a checkpoint in checkpoints/ (see the README) "
                            "or run `make demo`.")
        if model_name not in models:
            raise UserError(f"Unknown model {model_name!r}; reload the page.")
        if mode not in MODES:
            raise UserError(f"Unknown mode {mode!r}.")
        if crop not in CROPS:
            raise UserError(f"Unknown crop {crop!r}.")
        if paste_back not in PASTE_CHOICES:
            raise UserError(f"Unknown paste-back choice {paste_back!r} (use {', '.join(PASTE_CHOICES)}).")
        source, source_info = checker.image(source_payload)
        driving, driving_info = checker.video(driving_payload)
        choice = models[model_name]
        _remove_old_jobs(work_dir, max_age_s=JOB_MAX_AGE_S, keep=running)
        job = os.path.join(work_dir, time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8])
        os.makedirs(job)
        running.add(job)
        result = os.path.join(job, "result.mp4")
        both = os.path.join(job, "side_by_side.mp4") if side_by_side else None
        progress(0.0, desc="Loading the model")

        def report(done: int, total: int) -> None:
            progress((done, total), desc="Animating", unit="frames")

        started = time.perf_counter()
        try:
            paste = wants_paste_back(paste_back, source, choice.config)
            info = run(choice.config, choice.checkpoint, source, driving, result, mode=mode, crop=crop,
                       find_best_frame=bool(find_best), audio=True, side_by_side=both, device=device,
                       progress=report, paste_back=paste, colour_match=bool(colour_match), precision=precision)
        except gr.Error:  # UserError included
            raise
        except Exception as err:  # known user errors carry one-line messages; others are logged in full
            known = _known_errors()
            if not isinstance(err, known):
                traceback.print_exc()
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            for path, name in ((source, _orig_name(source_payload)), (driving, _orig_name(driving_payload))):
                if name:
                    message = message.replace(path, name)
            raise UserError(f"Animation failed: {message}") from None
        finally:
            running.discard(job)
        info = dict(info or {})
        result = info.get("result_video") or result
        both = info.get("side_by_side") or both
        both_out = both if both and os.path.isfile(both) else None
        status = _status(info, time.perf_counter() - started, choice.name, mode, crop, source_info, driving_info, device)
        return result, both_out, status

    return animate


def _status(info: dict, seconds: float, model: str, mode: str, crop: str, source_info: str, driving_info: str,
            device: str) -> str:
    """The status text under the result (markdown)."""
    lines = [f"**Done** in {seconds:.1f} s: model `{model}`, mode `{mode}`, crop `{crop}`.",
             f"Source: {source_info}. Driving: {driving_info}."]
    if "num_frames" in info:
        size = "x".join(str(v) for v in reversed(info.get("result_size") or info.get("size") or [])) or "?"
        if info.get("paste_back"):
            size += " (the full photo, animated region pasted back)"
        lines.append(f"Result: {info['num_frames']} frames at {info.get('fps', 0):.2f} fps, {size} px, "
                     f"audio {'kept' if info.get('audio') else 'none'}, anchor frame {info.get('anchor_frame', 0)}, "
                     f"{info.get('frames_per_second', 0):.1f} frames/s on {info.get('device', device)}.")
    return "\n\n".join(lines)


def create_app(models: Mapping[str, ModelChoice | tuple[Any, str]] | None = None,
               examples: Sequence[Sequence[str]] | None = None, max_file_size: int | None = int(100e6),
               device: str = "cpu", work_dir: str | None = None,
               animate_fn: Callable[..., dict] | None = None, live_sessions: int = 2,
               precision: str = "auto") -> gr.Blocks:
    """The page as a gr.Blocks (not launched; see `launch`).

    models: {name: ModelChoice or (config, checkpoint)}; None scans checkpoints/ (see `find_models`).
    examples: [[image, video], ...] shown under the inputs; None uses web/examples/.
    max_file_size: bytes per upload (also pass it to `launch`); None for no limit.
    animate_fn: `animate.run_animation` unless given (tests may wrap it).
    live_sessions: live (webcam) sessions at a time, in the "Live (webcam)" tab (web/live.py).
    precision: of both tabs' engines: 'auto' (bf16 where the device runs it natively, fp16 on older CUDA,
    else fp32: `utils.precision`) or fp32 / bf16 / fp16.
    """
    if models is None:
        models = find_models()
    models = {name: m if isinstance(m, ModelChoice) else ModelChoice(name=name, config=m[0], checkpoint=m[1])
              for name, m in models.items()}
    examples = default_examples() if examples is None else [list(e) for e in examples]
    work_dir = work_dir or tempfile.mkdtemp(prefix="tpsmm-app-")
    checker = UploadChecker(max_file_size)
    run = animate_fn or animate_cli.run_animation
    running: set[str] = set()  # job folders in use (never cleaned up while running)

    animate = _animate_handler(models, checker, run, work_dir, running, device, precision)

    labels = [(m.label, name) for name, m in models.items()]
    default = default_model(models)
    with gr.Blocks(title="Image animation", analytics_enabled=False,
                   delete_cache=(3600, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown("## Animate a photo with a driving video\n"
                    "Thin-Plate Spline Motion Model (TPSMM, CVPR 2022). Upload a photo and a video, "
                    "or click an example, then press **Animate**. Runs on this machine, offline.")
        with gr.Row():
            with gr.Column():
                source = gr.Image(label="Source image", type="filepath", sources=["upload", "clipboard"],
                                  elem_id="source_image", height=240)
                driving = gr.Video(label="Driving video", sources=["upload"], elem_id="driving_video",
                                   include_audio=True, height=240)
                model = gr.Dropdown(choices=labels, value=default, label="Model",
                                    elem_id="model", interactive=True,
                                    info=None if labels else "No model found in checkpoints/ (see the README).")
                mode = gr.Radio(list(MODES), value="relative", label="Mode", elem_id="mode",
                                info="relative: motion relative to the first driving frame; standard: absolute "
                                     "keypoints; avd: the AVD network (needs a checkpoint trained with it)")
                crop = gr.Radio(list(CROPS), value="centre", label="Crop", elem_id="crop",
                                info="centre square; none (resize); face / person: detected and tracked")
                find_best = gr.Checkbox(value=False, label="find_best_frame: start from the driving frame "
                                        "whose face pose is closest to the photo", elem_id="find_best_frame")
                paste = gr.Radio(list(PASTE_CHOICES), value="auto", label="Paste back into the full photo",
                                 elem_id="paste_back",
                                 info="the result is the whole photo at its size (up to 1920 px) with the animated "
                                      "face/person blended in; auto: on when the photo is larger than the model's size")
                colour = gr.Checkbox(value=False, label="Match the animated region's colours to the photo "
                                     "(with paste-back)", elem_id="colour_match")
                side_by_side = gr.Checkbox(value=True, label="Also make a side-by-side video "
                                           "(source | driving | result)", elem_id="make_side_by_side")
            with gr.Column():
                button = gr.Button("Animate", variant="primary", elem_id="animate_button")
                result = gr.Video(label="Result (with the driving video's audio)", elem_id="result_video",
                                  interactive=False, buttons=["download"], height=300)
                both = gr.Video(label="Side by side", elem_id="side_by_side_video", interactive=False,
                                buttons=["download"], height=200)
                status = gr.Markdown(elem_id="status")
        if examples:
            gr.Examples(examples=examples, inputs=[source, driving], label="Built-in examples (click one)",
                        elem_id="examples")
        _bind_upload_checks(checker, source, driving, status)
        button.click(animate, inputs=[source, driving, model, mode, crop, find_best, side_by_side, paste, colour],
                     outputs=[result, both, status], preprocess=False, concurrency_id="animate",
                     show_progress_on=[result])
        live = LiveSessions(models, default, device=device, max_sessions=live_sessions, precision=precision)
        live_tab(live)
    demo.tpsmm_work_dir = work_dir  # for clean-up by the caller
    demo.tpsmm_live = live  # its routes are mounted by `launch`
    return demo


def _remove_old_jobs(work_dir: str, max_age_s: float, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """Delete finished jobs' folders (Gradio serves its own copies of the results from its cache)."""
    now = time.time()
    for entry in os.scandir(work_dir):
        try:
            if entry.is_dir() and entry.path not in keep and now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass


def _orig_name(payload: Any) -> str | None:
    return payload.get("orig_name") if isinstance(payload, Mapping) else None


def _known_errors() -> tuple[type, ...]:
    """Errors whose one-line message is meant for the user (no traceback needed)."""
    return (InputError, FileNotFoundError)


def parse_size(text: str) -> int | None:
    """'100' (MB), '100mb', '2gb', '500kb' -> bytes; '0' or 'none' -> no limit."""
    text = str(text).strip().lower()
    if text in ("0", "none", "inf", ""):
        return None
    units = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "b": 1}
    number, factor = text, 1e6
    for unit, scale in units.items():
        if text.endswith(unit):
            number, factor = text[: -len(unit)], scale
            break
    try:
        return int(float(number) * factor)
    except ValueError:
        raise InputError(f"--max_file_size expects a size such as 100, 500kb or 2gb, got {text!r}") from None


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, max_file_size: int | None = int(100e6),
           concurrency: int = 1, queue_size: int = 16, block: bool = True) -> tuple:
    """Queue the requests (`concurrency` animations at a time, up to `queue_size` waiting) and serve."""
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    served = demo.launch(server_name=host, server_port=port, max_file_size=max_file_size, share=False,
                         inbrowser=False, show_error=True, prevent_thread_lock=True,
                         footer_links=["api", "settings"], allowed_paths=[EXAMPLES_DIR])
    if getattr(demo, "tpsmm_live", None) is not None:
        demo.tpsmm_live.mount(demo.server_app)  # the live tab's page and socket (web/live.py)
    if block:
        demo.block_thread()
    return served


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local web page for animating a photo (docs/web.md).")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--checkpoints_dir", default="checkpoints", help="folder scanned for *.pth.tar")
    parser.add_argument("--config_dir", default="config", help="folder with the configs matching the checkpoints")
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]CONFIG:CHECKPOINT",
                        help="offer this model too (repeatable)")
    parser.add_argument("--max_file_size", default=str(DEFAULT_MAX_FILE_SIZE_MB),
                        help="largest upload, in MB or with a unit (500kb, 2gb); 0 for no limit (default 100)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--concurrency", type=int, default=1, help="animations run at the same time")
    parser.add_argument("--queue_size", type=int, default=16, help="requests that may wait in the queue")
    parser.add_argument("--live_sessions", type=int, default=2, help="live (webcam) sessions at a time")
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="compute precision of both tabs: auto (default) = bf16 where the device runs it "
                             "natively (CPUs with AVX-512 BF16 or AMX, CUDA 8.0+), fp16 on older CUDA, else fp32")
    args = parser.parse_args(argv)
    try:
        models = find_models(args.checkpoints_dir, args.config_dir)
        max_file_size = parse_size(args.max_file_size)
        if args.concurrency < 1 or args.queue_size < 1 or args.live_sessions < 1:
            raise InputError("--concurrency, --queue_size and --live_sessions must be at least 1")
        device = str(animate_cli.resolve_device(args.device))
        chosen = resolve_precision(args.precision, device)
        for spec in args.model:  # named on the command line: checked before the page starts
            choice = parse_model_spec(spec)
            check_model(choice, device)
            models[choice.name] = choice
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not models:
        print(f"note: no model found in {args.checkpoints_dir}/ (run `make demo`, or see the README); "
              "the page starts and says so", file=sys.stderr)
    if chosen.warning:
        print(f"warning: {chosen.warning}", file=sys.stderr)
    demo = create_app(models=models, max_file_size=max_file_size, device=device, live_sessions=args.live_sessions,
                      precision=chosen.name)
    print(f"models: {', '.join(models) or 'none'}; device: {device}; {chosen.line()}; "
          f"upload limit: {_mb(max_file_size) if max_file_size else 'none'}", flush=True)
    try:
        launch(demo, host=args.host, port=args.port, max_file_size=max_file_size,
               concurrency=args.concurrency, queue_size=args.queue_size)
    except OSError as err:  # e.g. the port is taken
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(demo.tpsmm_work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
