"""Live animation: a camera (the browser's, a V4L2 device or a stream URL) drives a photo in real time.

Two front ends on one frame path (`FrameAnimator`: crop the camera frame, animate it):

- the web page's live tab (`LiveSessions`, mounted on the app's server by `app.py`): the page
  (web/static/live.html) sends camera frames as JPEG over a WebSocket (`/live/ws`) and shows
  the animated frames it gets back, with frames/s and latency. One session per client (a
  second connection from the same client replaces the first), at most `max_sessions` at a
  time; a session's worker thread ends when its socket closes (stop, tab closed, reload).
- `animate.py --live` (`animate_live`): frames from `utils.live.LiveSource`, written to a
  window or a stream (`utils.live.open_live_sink`).

Real time: frames pass through a `utils.live.LatestFrameQueue` of one frame, so stale
camera frames are dropped instead of queueing up; the family's engine (`modules.animation.Animator`,
`FOMMAnimator`, `MRAAAnimator`) runs in the precision `utils.precision.resolve_precision` picks ('auto': bf16 on CPUs with AVX-512 BF16 /
AMX and CUDA 8.0+, fp16 on older CUDA, else fp32).
The first frame of a session (or the first after "reset") is the relative-mode anchor.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from utils.live import LatestFrameQueue, LiveError, LiveSource, OnlineBoxTracker, open_live_sink, run_live

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "static", "live.html")
DEFAULT_SOURCE = os.path.join(HERE, "examples", "astronaut.png")
DEFAULT_MAX_SESSIONS = 2
JPEG_QUALITY = 85
HEADER = struct.Struct("<d")  # client timestamp (ms), echoed in front of each result
REPLACED, TOO_MANY, FAILED = 4000, 4001, 4002  # WebSocket close codes


def live_precision(precision: str | None, device: Any) -> str:
    """`precision` (None: 'auto') decided for `device`; an emulated explicit bf16/fp16 warns on stderr (one line)."""
    import sys

    from utils.precision import resolve_precision

    try:
        choice = resolve_precision(precision or "auto", device)
    except ValueError as err:
        raise LiveError(str(err)) from None
    if choice.warning:
        print(f"warning: {choice.warning}", file=sys.stderr)
    return choice.name


def load_live_model(config: Any, checkpoint: str, mode: str, device: Any,
                    img_shape: tuple[int, int] | None = None) -> tuple[dict, tuple[int, int]]:
    """(models, (H, W)) through the command line's loader (`modules.loading.cached_models`)."""
    from modules.family import family_of, load_config
    from modules.loading import cached_models, resolve_device

    cfg = load_config(config)
    size = tuple(int(v) for v in (img_shape or cfg["dataset_params"]["frame_shape"][:2]))
    multiple = family_of(cfg).size_multiple(cfg)
    if size[0] % multiple or size[1] % multiple:
        raise LiveError(f"live size {size[0]}x{size[1]} does not fit this model: sides must be multiples of {multiple}")
    return cached_models(cfg, os.fspath(checkpoint), mode, resolve_device(device)), size


class FrameAnimator:
    """camera frame (H, W, 3) uint8, any size -> animated frame (h, w, 3) uint8 at the model's size.

    source: the photo (any size, uint8), cropped once by `crop`; camera frames are cropped by the
    same rule ('face' / 'person': an `OnlineBoxTracker`, detection every few frames, smoothed).
    The first frame after construction or `reset()` is the anchor of relative mode.
    """

    def __init__(self, models: dict, source: np.ndarray, size: tuple[int, int], mode: str = "relative",
                 crop: str = "centre", precision: str = "fp32", device: Any = "cpu", detect_every: int = 5):
        import torch

        from utils.crop import CROPS, FACE_SCALE, PERSON_SCALE, crop_resize, detector, image_box

        crop = "centre" if crop == "center" else crop
        if crop not in CROPS:
            raise LiveError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
        self.models, self.size, self.mode, self.crop, self.precision = models, tuple(size), mode, crop, precision
        self.device = torch.device(device)
        self.crop_resize = crop_resize
        self.tracker = None
        if crop in ("face", "person"):
            self.tracker = OnlineBoxTracker(detector(crop), FACE_SCALE if crop == "face" else PERSON_SCALE,
                                            every=detect_every)
        self.set_source(crop_resize(source, image_box(source, crop), self.size))
        self.frames = 0

    def set_source(self, cropped: np.ndarray) -> None:
        """A new photo (already at the model's size); the next frame is the new anchor."""
        self.source = self._tensor(cropped)
        self.reset()

    def reset(self) -> None:
        self.engine = None
        if self.tracker is not None:
            self.tracker.reset()

    def _tensor(self, frame: np.ndarray):
        import torch

        array = np.array(frame, dtype=np.uint8)[None]  # 1 x H x W x 3 (a writable copy)
        return torch.from_numpy(array).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)  # 1 x 3 x H x W

    def crop_frame(self, frame: np.ndarray) -> np.ndarray:
        from utils.crop import centre_box, full_box

        height, width = frame.shape[:2]
        if self.tracker is not None:
            box = self.tracker.update(frame)
        else:
            box = (centre_box if self.crop == "centre" else full_box)(height, width)
        return self.crop_resize(frame, box, self.size)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import torch

        from modules.family import family_of_models

        driving = self._tensor(self.crop_frame(frame))
        with torch.inference_mode():
            if self.engine is None:  # the family's engine (Animator, FOMMAnimator, MRAAAnimator): this frame anchors
                engine = family_of_models(self.models).animator_class()
                self.engine = engine(self.models, self.source, mode=self.mode, precision=self.precision)
            out = self.engine(driving)
        self.frames += 1
        return out[0].float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def animate_live(config: Any, checkpoint: str, source_image: str, driving: str, result: str | None,
                 mode: str = "relative", crop: str = "centre", device: str = "auto", precision: str | None = None,
                 max_frames: int | None = None, max_seconds: float | None = None, window: bool | None = None,
                 img_shape: tuple[int, int] | None = None, realtime_file: bool = True) -> dict:
    """`animate.py --live`: animate `source_image` from a camera / stream (or a file, paced as a camera).

    result: a video file or stream URL; None shows a window (when there is a display).
    Stops at `max_frames`, after `max_seconds`, at the end of the stream, or on Ctrl-C (the output is kept).
    Returns `utils.live.run_live`'s summary plus 'result_video', 'size', 'precision', 'device'.
    """
    from modules.loading import resolve_device
    from utils.media import read_photo

    dev = resolve_device(device)
    precision = live_precision(precision, dev)
    models, size = load_live_model(config, checkpoint, mode, dev, img_shape)
    photo = read_photo(os.fspath(source_image))
    frames = FrameAnimator(models, photo, size, mode=mode, crop=crop, precision=precision, device=dev)
    source = LiveSource(driving, capacity=1, realtime=realtime_file and os.path.isfile(driving))
    try:
        sink = open_live_sink(result, fps=source.fps, size=size, window=window)
        try:
            info = run_live(source, frames, sink, max_frames=max_frames, max_seconds=max_seconds)
        finally:
            sink.close()
    finally:
        source.close()
    return {**info, "result_video": getattr(sink, "path", None), "size": list(size), "precision": precision,
            "device": str(dev)}


# ----------------------------------------------------------------------------- the web page's sessions

@dataclass
class LiveSession:
    """One client's live animation: its socket's frames in `queue`, animated by `thread`."""

    client: str
    model: str
    crop: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    queue: LatestFrameQueue = field(default_factory=lambda: LatestFrameQueue(1))
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    control: list = field(default_factory=list)  # ('reset', None) / ('source', image) for the worker
    frames: int = 0


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def _encode(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _data_url_image(text: str) -> np.ndarray:
    import base64

    return _decode(base64.b64decode(text.split(",", 1)[-1]))


class LiveSessions:
    """The live tab's server side: one session per client, at most `max_sessions`, none left after a close.

    models: {name: object with .config and .checkpoint} (app.ModelChoice); default: the model the page
    uses unless it asks for another. device: where the engines run; precision None: 'auto' (`live_precision`).
    """

    def __init__(self, models: Mapping[str, Any], default: str | None, device: str = "cpu",
                 max_sessions: int = DEFAULT_MAX_SESSIONS, precision: str | None = None, mode: str = "relative"):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.models, self.default, self.device, self.mode = dict(models), default, device, mode
        self.max_sessions = max_sessions
        self.precision = live_precision(precision, device)
        self.sessions: dict[str, LiveSession] = {}
        self.lock = threading.Lock()
        self.started = 0

    # -- bookkeeping
    def open(self, client: str, model: str, crop: str) -> tuple[LiveSession | None, LiveSession | None]:
        """(new session or None when the limit is reached, the same client's previous session to close)."""
        with self.lock:
            previous = self.sessions.pop(client, None)
            if len(self.sessions) >= self.max_sessions:
                if previous is not None:
                    self.sessions[client] = previous
                return None, None
            session = LiveSession(client=client, model=model, crop=crop)
            self.sessions[client] = session
            self.started += 1
            return session, previous

    def close(self, session: LiveSession) -> None:
        session.stop.set()
        session.queue.close()
        with self.lock:
            if self.sessions.get(session.client) is session:
                del self.sessions[session.client]

    def status(self) -> dict:
        with self.lock:
            sessions = list(self.sessions.values())
        workers = [t for t in threading.enumerate() if t.name.startswith("live-session-")]
        return {"sessions": len(sessions), "max_sessions": self.max_sessions, "workers": len(workers),
                "started": self.started, "precision": self.precision, "device": str(self.device),
                "frames": {s.id: s.frames for s in sessions}}

    # -- the worker
    def _animator(self, session: LiveSession) -> FrameAnimator:
        from utils.media import read_photo

        choice = self.models[session.model]
        models, size = load_live_model(choice.config, choice.checkpoint, self.mode, self.device)
        return FrameAnimator(models, read_photo(DEFAULT_SOURCE), size, mode=self.mode, crop=session.crop,
                             precision=self.precision, device=self.device)

    def _work(self, session: LiveSession, send: Callable[[bytes | str], None]) -> None:
        """Animate the newest frame, send it back; until the session stops (runs in its own thread)."""
        from utils.crop import crop_resize, image_box

        try:
            frames = self._animator(session)
            send(json.dumps({"type": "ready", "size": list(frames.size), "model": session.model,
                             "precision": self.precision, "device": str(self.device), "session": session.id}))
            while not session.stop.is_set():
                while session.control:
                    kind, value = session.control.pop(0)
                    if kind == "source":
                        frames.set_source(crop_resize(value, image_box(value, session.crop), frames.size))
                    else:
                        frames.reset()
                item = session.queue.get(timeout=0.5)
                if item is None:
                    continue
                stamp, data = item
                out = frames(_decode(data))
                session.frames += 1
                send(HEADER.pack(stamp) + _encode(out))
        except Exception as err:  # a bad frame, a model that fails to load, a socket gone
            if not session.stop.is_set():
                message = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
                try:
                    send(json.dumps({"type": "error", "message": message}))
                except Exception:
                    pass
        finally:
            session.stop.set()
            session.queue.close()

    def start(self, session: LiveSession, send: Callable[[bytes | str], None]) -> None:
        session.thread = threading.Thread(target=self._work, args=(session, send), daemon=True,
                                          name=f"live-session-{session.id}")
        session.thread.start()

    # -- the socket
    async def serve(self, websocket) -> None:
        """One WebSocket: `?client=ID&model=NAME&crop=CROP`; binary frames in (8-byte timestamp + JPEG),
        results out (the same timestamp + JPEG); text {"type": "reset"} or {"type": "source", "image": data URL}."""
        from starlette.websockets import WebSocketDisconnect

        query = websocket.query_params
        client = query.get("client") or f"{websocket.client.host}:{websocket.client.port}"
        model = query.get("model") or self.default
        crop = query.get("crop") or "centre"
        await websocket.accept()
        if model not in self.models:
            await websocket.send_text(json.dumps({"type": "error", "message": f"unknown model {model!r}"}))
            await websocket.close(code=FAILED)
            return
        session, previous = self.open(client, model, crop)
        if session is None:
            await websocket.send_text(json.dumps({"type": "error", "message": "too many live sessions on this "
                                                  f"server (limit {self.max_sessions}); try again later"}))
            await websocket.close(code=TOO_MANY)
            return
        if previous is not None:
            self.close(previous)
        loop = asyncio.get_running_loop()

        def send(message: bytes | str) -> None:
            if session.stop.is_set():
                raise ConnectionError("session closed")
            call = websocket.send_bytes(message) if isinstance(message, bytes) else websocket.send_text(message)
            asyncio.run_coroutine_threadsafe(call, loop).result(timeout=10)

        self.start(session, send)
        try:
            while not session.stop.is_set():
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes"):
                    data = message["bytes"]
                    if len(data) > HEADER.size:
                        session.queue.put((HEADER.unpack(data[:HEADER.size])[0], data[HEADER.size:]))
                elif message.get("text"):
                    self._control(session, message["text"])
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.close(session)
            if session.thread is not None:
                await asyncio.to_thread(session.thread.join, 30)
            try:
                await websocket.close(code=REPLACED if session.client in self.sessions else 1000)
            except Exception:
                pass

    def _control(self, session: LiveSession, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            return
        if request.get("type") == "reset":
            session.control.append(("reset", None))
        elif request.get("type") == "source" and isinstance(request.get("image"), str):
            try:
                session.control.append(("source", _data_url_image(request["image"])))
            except Exception:
                pass

    def mount(self, app) -> None:
        """Add /live (the page), /live/ws (the socket), /live/status (JSON) and /live/photo to `app` (Starlette)."""
        from starlette.responses import FileResponse, HTMLResponse, JSONResponse
        from starlette.routing import Route, WebSocketRoute

        def page(request):
            html = open(PAGE, encoding="utf-8").read()
            config = {"models": list(self.models), "default": self.default, "max_sessions": self.max_sessions}
            return HTMLResponse(html.replace("/*LIVE_CONFIG*/{}", json.dumps(config)))

        routes = [Route("/live", page), Route("/live/status", lambda request: JSONResponse(self.status())),
                  Route("/live/photo", lambda request: FileResponse(DEFAULT_SOURCE)),
                  WebSocketRoute("/live/ws", self.serve)]
        for route in reversed(routes):  # ahead of the app's own catch-all routes
            app.router.routes.insert(0, route)


def live_tab(sessions: LiveSessions) -> None:
    """The page's "Live (webcam)" tab: the live page (served at /live) in a frame. Call inside gr.Blocks."""
    import gradio as gr

    with gr.Tab("Live (webcam)", elem_id="live_tab"):
        gr.Markdown("The camera drives the photo in real time (allow camera access). The first camera "
                    "frame is the anchor; **reset** takes the current one. "
                    f"At most {sessions.max_sessions} live session(s) at a time on this server.")
        gr.HTML('<iframe id="live_frame" src="/live" allow="camera; autoplay" '
                'style="width:100%;height:560px;border:0"></iframe>')
