"""Check everything before writing anything, never damage a run, clean up after a crash (the README's promises).

Every case asserts the exit code, a one-line `error:` as the last line, no traceback (the
entry points are called in-process: a traceback would fail the test), and that nothing was
created or changed.
"""
from __future__ import annotations

import errno
import functools
import http.server
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "data", "demo")
PHOTO = os.path.join(DEMO, "source.png")
CLIP = os.path.join(DEMO, "test", "carphone#003.png")


def snapshot(folder) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = handle.read()
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    assert err[-1].startswith("error: "), err[-1]
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def tiny_config(tmp_path, name: str = "c.yaml", **train_params) -> str:
    raw = yaml.safe_load(open(os.path.join(ROOT, "tests", "fixtures", "tiny.yaml"), encoding="utf-8"))
    raw["dataset_params"]["root_dir"] = DEMO
    raw["train_params"].update({"num_epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1, "num_repeats": 1,
                                "perceptual_backbone": "random_vgg19", "dropout_epoch": 0, "bg_start": 0,
                                **train_params})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def _entry(name: str):
    import animate
    import demo
    import reconstruction
    import run
    from evaluation import cli
    from modules import export

    return {"run": run.main, "animate": animate.main, "reconstruction": reconstruction.main, "demo": demo.main,
            "evaluation": cli.main, "export": export.main}[name]


def _argv(name: str, config: str, checkpoint: str, out) -> list[str]:
    return {
        "run": ["--config", config, "--log_dir", str(out)],
        "train_avd": ["--config", config, "--mode", "train_avd", "--checkpoint", checkpoint, "--log_dir", str(out)],
        "animate": ["--config", config, "--checkpoint", checkpoint, "--source_image", PHOTO, "--driving_video", CLIP,
                    "--result_video", str(out / "r.mp4"), "--cpu", "--quiet"],
        "reconstruction": ["--config", config, "--checkpoint", checkpoint, "--log_dir", str(out)],
        "demo": ["--config", config, "--checkpoint", checkpoint, "--source_image", PHOTO, "--driving_video", CLIP,
                 "--result_video", str(out / "r.mp4"), "--cpu"],
        "evaluation": ["--log_dir", str(out), "--config", config],
        "export": ["--config", config, "--checkpoint", checkpoint, "--out", str(out)],
    }[name]


def _bad_config(tmp_path, section: str, key: str, value) -> str:
    raw = yaml.safe_load(open(os.path.join(ROOT, "tests", "fixtures", "tiny.yaml"), encoding="utf-8"))
    node = raw
    for part in section.split("."):
        node = node[part]
    node[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


BAD_VALUES = [("model_params.common_params", "num_tps", "ten", "must be an integer, got 'ten'"),
              ("train_params", "num_epochs", -3, "must be >= 1, got -3")]
ENTRY_POINTS = ["run", "train_avd", "animate", "reconstruction", "demo", "evaluation", "export"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("section,key,value,words", BAD_VALUES, ids=["wrong type", "out of range"])
def test_bad_config_value_is_refused_before_anything_is_written(entry, section, key, value, words, tmp_path,
                                                                tiny_checkpoint, capsys):
    config = _bad_config(tmp_path, section, key, value)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    main = _entry("run" if entry == "train_avd" else entry)
    assert main(_argv(entry, config, tiny_checkpoint, out)) == 2
    line = one_line_error(capsys)
    assert f"'{section}.{key}' {words}" in line and config in line
    assert snapshot(tmp_path) == before and not out.exists()


def test_blocked_output_folder_and_huge_size_are_refused_first(tmp_path, tiny_config_path, tiny_checkpoint, capsys):
    import animate

    (tmp_path / "blocker").write_text("a file where a folder is needed")
    before = snapshot(tmp_path)
    args = ["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
            "--driving_video", CLIP, "--cpu", "--quiet"]
    assert animate.main(args + ["--result_video", str(tmp_path / "blocker" / "r.mp4")]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert animate.main(args + ["--result_video", str(tmp_path / "r.mp4"), "--img_shape", "100000,100000"]) == 2
    line = one_line_error(capsys)
    assert "animating at 100000x100000 needs at least" in line and "GiB" in line
    assert snapshot(tmp_path) == before


def _train(tmp_path, config: str, *extra: str) -> int:
    import run

    return run.main(["--config", config, "--log_dir", str(tmp_path / "log"), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def one_epoch_log(tmp_path_factory):
    """`<log>/<run>/` of one finished 1-epoch run of tiny_config (trained once for the tests that start from it)."""
    tmp_path = tmp_path_factory.mktemp("one_epoch")
    assert _train(tmp_path, tiny_config(tmp_path, "one.yaml", num_epochs=1)) == 0
    return tmp_path / "log"


def _trained(tmp_path, one_epoch_log) -> str:
    """A copy of the 1-epoch run as `tmp_path/log/<run>` (as `_train(tmp_path, one.yaml)` leaves it); its folder."""
    shutil.copytree(one_epoch_log, tmp_path / "log")
    (run_dir,) = (tmp_path / "log").iterdir()
    return run_dir


def test_failed_resume_leaves_the_run_folder_byte_for_byte(tmp_path, capsys, one_epoch_log):
    config = tiny_config(tmp_path)
    run_dir = _trained(tmp_path, one_epoch_log)
    checkpoint = run_dir / "checkpoint.pth.tar"
    before = snapshot(run_dir)
    assert "config.yaml" in before and any(k.startswith("tensorboard") for k in before)

    bad = tiny_config(tmp_path, "bad.yaml", lr_generator="fast")  # a config that fails
    assert _train(tmp_path, bad, "--checkpoint", str(checkpoint)) == 2
    assert "'train_params.lr_generator' must be a number" in one_line_error(capsys)
    truncated = run_dir / "truncated.pth.tar"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    before = snapshot(run_dir)
    assert _train(tmp_path, config, "--checkpoint", str(truncated)) == 2
    assert "truncated or not a PyTorch checkpoint" in one_line_error(capsys)
    assert snapshot(run_dir) == before


def test_resume_after_kill_9_during_a_checkpoint_write(tmp_path, capsys, one_epoch_log):
    run_dir = _trained(tmp_path, one_epoch_log)
    checkpoint = run_dir / "checkpoint.pth.tar"
    config = tiny_config(tmp_path, "two.yaml", num_epochs=2)
    # a process killed with SIGKILL in the middle of writing the checkpoint's temporary
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        f"f = open({str(checkpoint)!r} + '.tmp.' + str(os.getpid()), 'wb')\n"
        "f.write(b'x' * 100000); f.flush(); print('written', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "written"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    stale = f"{checkpoint}.tmp.{writer.pid}"
    assert os.path.exists(stale)
    capsys.readouterr()
    assert _train(tmp_path, config, "--checkpoint", str(checkpoint)) == 0
    assert not os.path.exists(stale) and not [f for f in os.listdir(run_dir) if ".tmp." in f]
    assert f"removed {stale}" in capsys.readouterr().err
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1  # the resumed run trained its second epoch


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch,
                                                                             one_epoch_log):
    run_dir = _trained(tmp_path, one_epoch_log)
    checkpoint = run_dir / "checkpoint.pth.tar"
    previous = checkpoint.read_bytes()

    def full(obj, f, *args, **kwargs):  # the fault injected at the write: the filesystem is full
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    capsys.readouterr()
    assert _train(tmp_path, tiny_config(tmp_path, "two.yaml", num_epochs=2), "--checkpoint", str(checkpoint)) == 2
    line = one_line_error(capsys)
    assert f"cannot write checkpoint {checkpoint}: No space left on device" in line
    assert checkpoint.read_bytes() == previous
    assert not [f for f in os.listdir(run_dir) if ".tmp." in f]


def test_auto_resume_in_the_folder_above_a_run_refuses_naming_the_run(tmp_path, capsys):
    """Issue 25 item 3: `--log_dir runs --checkpoint auto` after a run into runs/C_<time>/ used to start over in runs/."""
    config = tiny_config(tmp_path, dataloader_workers=0)
    assert _train(tmp_path, config) == 0
    (run_dir,) = (tmp_path / "log").iterdir()
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert _train(tmp_path, config, "--checkpoint", "auto") == 2
    line = one_line_error(capsys)
    assert f"did you mean --log_dir {run_dir}?" in line, line
    assert snapshot(tmp_path) == before


def test_auto_resume_past_a_truncated_checkpoint_says_why(tmp_path, capsys):
    """Issue 25 item 8: resuming from an older checkpoint because the newest does not read says so."""
    assert _train(tmp_path, tiny_config(tmp_path, "one.yaml", num_epochs=2, checkpoint_freq=1, dataloader_workers=0)) == 0
    (run_dir,) = (tmp_path / "log").iterdir()
    newest = run_dir / "checkpoint.pth.tar"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut by a full disk or a copy that stopped
    capsys.readouterr()
    import run

    assert run.main(["--config", tiny_config(tmp_path, "two.yaml", num_epochs=3, checkpoint_freq=1,
                                                dataloader_workers=0), "--log_dir",
                     str(run_dir), "--device", "cpu", "--checkpoint", "auto"]) == 0
    err = capsys.readouterr().err
    assert (f"resuming from {run_dir / '00000001-checkpoint.pth.tar'} (passed over newer: {newest}: "
            f"cannot read checkpoint: truncated or not a PyTorch checkpoint") in err, err
    assert torch.load(newest, weights_only=True)["epoch"] == 2


def test_second_run_in_a_locked_run_folder_exits_2_and_the_first_finishes(tmp_path, capsys):
    """Issue 25 item 5: two runs in one run folder used to overwrite each other's checkpoints and log."""
    config = tiny_config(tmp_path, num_epochs=2, dataloader_workers=0)
    run_dir, go = tmp_path / "run", tmp_path / "go"
    argv = ["--config", config, "--log_dir", str(run_dir), "--device", "cpu", "--checkpoint", "auto"]
    first = subprocess.Popen([sys.executable, "-c", (  # the first run waits for `go` before its first epoch
        "import os, sys, time\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "import run, train\n"
        "epoch = train._Run.epoch\n"
        "def held(self, *args, **kwargs):\n"
        f"    while not os.path.exists({str(go)!r}):\n"
        "        time.sleep(0.05)\n"
        "    return epoch(self, *args, **kwargs)\n"
        "train._Run.epoch = held\n"
        f"sys.exit(run.main({argv!r}))\n")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "run.lock").exists():
            assert first.poll() is None and time.time() < deadline, first.stdout.read() if first.poll() else "no lock"
            time.sleep(0.1)
        import run

        assert run.main(argv) == 2
        line = one_line_error(capsys)
        assert f"another run (pid {first.pid} on " in line and f"is writing into {run_dir}" in line, line
    finally:
        go.write_text("go")
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert torch.load(run_dir / "checkpoint.pth.tar", weights_only=True)["epoch"] == 1
    log = (run_dir / "log.txt").read_text().splitlines()
    assert [line[:10] for line in log] == ["00000000) ", "00000001) "], log
    assert not (run_dir / "run.lock").exists()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range requests, as web servers serve them (ffmpeg seeks to an mp4's index)."""

    def log_message(self, *args):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not os.path.isfile(path) or not match:
            return super().send_head()
        size = os.path.getsize(path)
        first, last = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
        with open(path, "rb") as handle:
            handle.seek(first)
            body = handle.read(last - first + 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def test_a_video_url_is_animated_frame_by_frame_and_live_drops_saying_so(tmp_path, tiny_config_path,
                                                                          tiny_checkpoint, capsys):
    """Issue 25 item 1: `--driving_video http://HOST/clip.mp4` wrote 2 frames of 118 ("116 stale frames dropped")."""
    import threading

    import animate
    from utils.media import open_writer

    frames = 16
    served = tmp_path / "served"
    served.mkdir()
    with open_writer(str(served / "clip.mp4"), fps=25) as writer:  # a face-free pattern that moves
        grid = np.arange(96)[None, :] + np.arange(96)[:, None]  # 96 x 96
        writer.write_batch(np.stack([np.repeat(((grid + 6 * t) % 48 * 5).astype(np.uint8)[..., None], 3, axis=2)
                                     for t in range(frames)]))  # T x 96 x 96 x 3
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
    args = ["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
            "--driving_video", url, "--cpu", "--quiet"]
    try:
        capsys.readouterr()
        assert animate.main(args + ["--result_video", str(tmp_path / "every")]) == 0
        out = capsys.readouterr().out
        assert len(os.listdir(tmp_path / "every")) == frames, out  # a PNG per frame of the clip
        assert f"({frames} frames, every frame read from the stream, none dropped" in out, out
        assert animate.main(args + ["--live", "--result_video", str(tmp_path / "live.mp4")]) == 0
        out = capsys.readouterr().out
    finally:
        server.shutdown()
        server.server_close()
    shown, dropped = (int(v) for v in re.search(r"live: (\d+) frames .* (\d+) stale frames dropped", out).groups())
    assert dropped > 0 and shown + dropped == frames, out  # real time: the newest frame first, the rest dropped


@pytest.mark.parametrize("flags,asked,words", [
    (("avx2", "fma"), "auto", "fp32 (auto: this CPU has no AVX-512 BF16 or AMX)"),
    (("avx2", "avx512f", "avx512_bf16"), "auto", "bf16 (auto: this CPU has avx512_bf16)"),
    (("avx2", "fma"), "bf16", "warning: bf16 is emulated on this CPU"),
], ids=["auto without native bf16", "auto with native bf16", "emulated bf16 warns"])
def test_precision_auto_fits_the_cpu_and_emulated_bf16_warns(flags, asked, words, tmp_path, tiny_config_path,
                                                             tiny_checkpoint, capsys, monkeypatch):
    """Issue 25 item 2: --precision bf16 on an AVX2 CPU ran 5-7x slower than fp32 without a word, and nothing
    but --live chose a precision from the hardware. The CPU's flags are faked (this machine has its own)."""
    import animate
    from utils import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    assert animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                         "--driving_video", CLIP, "--result_video", str(tmp_path / "r.mp4"), "--cpu", "--quiet",
                         "--precision", asked]) == 0
    out, err = capsys.readouterr()
    assert words in (err if words.startswith("warning") else out), (out, err)
    assert "Traceback" not in err and len([line for line in err.splitlines() if "emulated" in line]) <= 1


def test_pickled_code_is_refused_with_what_it_is_and_how_to_convert(tmp_path, tiny_config_path, tiny_checkpoint,
                                                                   capsys):
    import animate
    from modules.checkpoint import main as convert

    legacy = _legacy_checkpoint(tmp_path, tiny_checkpoint)
    args = ["--config", tiny_config_path, "--checkpoint", str(legacy), "--source_image", PHOTO,
            "--driving_video", CLIP, "--result_video", str(tmp_path / "r.mp4"), "--cpu", "--quiet"]
    assert animate.main(args) == 2
    line = one_line_error(capsys)
    assert "holds pickled Python objects" in line and "time.struct_time" in line
    assert "--convert" in line and "weights_only=False" not in line
    assert not (tmp_path / "r.mp4").exists()

    clean = tmp_path / "clean.pth.tar"
    assert convert(["--convert", str(legacy), "--out", str(clean)]) == 2  # no consent, nothing written
    assert "--trust-this-file" in one_line_error(capsys) and not clean.exists()
    assert convert(["--convert", str(legacy), "--out", str(clean), "--trust-this-file"]) == 0
    assert "dropped 1 object(s): extra (time.struct_time)" in capsys.readouterr().out
    args[3] = str(clean)
    assert animate.main(args) == 0 and (tmp_path / "r.mp4").is_file()


def test_stale_partial_outputs_of_dead_processes_are_removed_live_ones_kept(tmp_path, tiny_config_path,
                                                                           tiny_checkpoint, capsys):
    import animate

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".r.partial-{dead.pid}.mp4"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".r.partial-{os.getppid()}.mp4"  # our parent runs: its partial output is not ours to remove
    live.write_bytes(b"y")
    assert animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                         "--driving_video", CLIP, "--result_video", str(tmp_path / "r.mp4"), "--cpu",
                         "--quiet"]) == 0
    assert not stale.exists() and live.exists() and (tmp_path / "r.mp4").is_file()
    assert "unfinished output(s) of interrupted runs" in capsys.readouterr().err


PREPARE_CASES = [
    ("blocked output", lambda t: t / "blocker" / "dataset", [], "is a file, not a folder"),
    ("output is a file", lambda t: t / "blocker", [], "it is a file"),
    ("huge size", lambda t: t / "dataset", ["--image_shape", "100000,100000"],
     "cutting clips at 100000x100000 needs at least"),
    ("missing input", lambda t: t / "dataset", ["--input", "no-such-video.mp4"], "no-such-video.mp4"),
]


@pytest.mark.parametrize("output,extra,words", [c[1:] for c in PREPARE_CASES], ids=[c[0] for c in PREPARE_CASES])
def test_dataset_preparation_refuses_before_writing(output, extra, words, tmp_path, capsys):
    from datasets import prepare

    (tmp_path / "blocker").write_text("a file where a folder is needed")
    video = os.path.join(ROOT, "data", "demo128", "test", "carphone-heldout#000.mp4")
    argv = ["--output", str(output(tmp_path)), "--quiet", *extra]
    if "--input" not in extra:
        argv += ["--input", video]
    before = snapshot(tmp_path)
    assert prepare.main(argv) == 2
    assert words in one_line_error(capsys)
    assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["blocker"]


def _legacy_checkpoint(tmp_path, checkpoint: str) -> str:
    """A copy of `checkpoint` with a pickled Python object in it (what older tools saved)."""
    data = torch.load(checkpoint, weights_only=True)
    data["extra"] = time.struct_time((2026, 1, 1, 0, 0, 0, 0, 1, 0))
    path = tmp_path / "legacy.pth.tar"
    torch.save(data, path)
    return str(path)


APP_CASES = [
    ("wrong type", lambda t, c, k: (_bad_config(t, "model_params.common_params", "num_tps", "ten"), k),
     "'model_params.common_params.num_tps' must be an integer, got 'ten'"),
    ("out of range", lambda t, c, k: (_bad_config(t, "train_params", "num_epochs", -3), k),
     "'train_params.num_epochs' must be >= 1, got -3"),
    ("truncated checkpoint", lambda t, c, k: (c, _truncated(t, k)), "truncated or not a PyTorch checkpoint"),
    ("pickled code", lambda t, c, k: (c, _legacy_checkpoint(t, k)), "holds pickled Python objects"),
]


def _truncated(tmp_path, checkpoint: str) -> str:
    path = tmp_path / "truncated.pth.tar"
    path.write_bytes(open(checkpoint, "rb").read()[:1000])
    return str(path)


@pytest.mark.parametrize("make,words", [c[1:] for c in APP_CASES], ids=[c[0] for c in APP_CASES])
def test_web_page_refuses_a_bad_model_before_it_starts(make, words, tmp_path, tiny_config_path, tiny_checkpoint,
                                                       capsys, monkeypatch):
    import app

    monkeypatch.setattr(app, "create_app", lambda **kwargs: pytest.fail("the page started"))
    config, checkpoint = make(tmp_path, tiny_config_path, tiny_checkpoint)
    empty = tmp_path / "no-models"
    empty.mkdir()
    before = snapshot(tmp_path)
    argv = ["--checkpoints_dir", str(empty), "--model", f"mine={config}:{checkpoint}", "--device", "cpu"]
    assert app.main(argv) == 2
    assert words in one_line_error(capsys)
    assert app.main(["--checkpoints_dir", str(empty), "--max_file_size", "lots"]) == 2
    assert "--max_file_size expects a size" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- issue 25, items 4, 6, 7, 8

META_HEADER = "video_id,start,end,bbox,fps,width,height,partition,person_id\n"
METADATA_CASES = [  # a metadata table from someone else: every field is hostile
    ("person_id traversal", META_HEADER + "vid1,0,4,0-0-64-64,25,64,64,train,../../../victim\n",
     "m.csv:2: person_id '../../../victim' is not an id"),
    ("video_id traversal", META_HEADER + "../src/vid1,0,4,0-0-64-64,25,64,64,train,id1\n",
     "m.csv:2: video_id '../src/vid1' is not an id"),
    ("absolute video_id", META_HEADER + "/tmp/vid1,0,4,0-0-64-64,25,64,64,train,id1\n",
     "m.csv:2: video_id '/tmp/vid1' is not an id"),
    ("short row", META_HEADER + "vid1,0,4,0-0-64-64,25,64,64,train,id1\nvid1,0,4\n",
     "m.csv:3: the row has 3 field(s), the header 9"),
    ("not UTF-8", (META_HEADER + "vid1,0,4,0-0-64-64,25,64,64,train,id1\nvid1,0,4,0-0-64-64,25,64,64,train,"
                   "caf\xe9\n").encode("latin-1"), "m.csv:3: not UTF-8 text"),
]


@pytest.mark.parametrize("table,words", [c[1:] for c in METADATA_CASES], ids=[c[0] for c in METADATA_CASES])
def test_metadata_fields_are_data_not_paths(table, words, tmp_path, capsys):
    """Issue 25 items 4 and 6: ids from the csv went into file paths unchecked (a person_id of ../../../victim
    wrote three folders above --output); a short row or non-UTF-8 bytes were tracebacks."""
    from datasets import prepare
    from utils.media import open_writer

    base = tmp_path / "a" / "b"
    for folder in ("youtube", "src"):  # the source video is there, so nothing but the check stops the cut
        (base / folder).mkdir(parents=True)
        with open_writer(str(base / folder / "vid1.mp4"), fps=25) as writer:
            writer.write_batch(np.full((8, 64, 64, 3), 128, np.uint8))
    meta = tmp_path / "m.csv"
    meta.write_bytes(table if isinstance(table, bytes) else table.encode("utf-8"))
    output = base / "out"
    before = snapshot(tmp_path)
    assert prepare.main(["--metadata", str(meta), "--source_dir", str(base / "youtube"), "--output", str(output),
                         "--format", "png", "--image_shape", "64,64", "--quiet"]) == 2
    assert words in one_line_error(capsys)
    assert snapshot(tmp_path) == before and not output.exists()


CHECKPOINT_FILE_CASES = [  # what a failed download leaves where a checkpoint should be
    ("text file", b"hello world\n", "is not a PyTorch checkpoint: it is a text file (starts 'hello world')"),
    ("HTML page", b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n",
     "is not a PyTorch checkpoint: it is an HTML page"),
]


@pytest.mark.parametrize("content,words", [c[1:] for c in CHECKPOINT_FILE_CASES],
                         ids=[c[0] for c in CHECKPOINT_FILE_CASES])
def test_a_text_or_html_file_given_as_checkpoint_is_called_what_it_is(content, words, tmp_path, tiny_config_path,
                                                                       capsys):
    """Issue 25 items 6 and 8: a text file was `KeyError: 101`; an HTML page was 'pickled Python objects' with
    advice to pass --trust-this-file."""
    import animate

    checkpoint = tmp_path / "vox.pth.tar"
    checkpoint.write_bytes(content)
    before = snapshot(tmp_path)
    assert animate.main(["--config", tiny_config_path, "--checkpoint", str(checkpoint), "--source_image", PHOTO,
                         "--driving_video", CLIP, "--result_video", str(tmp_path / "r.mp4"), "--cpu", "--quiet"]) == 2
    line = one_line_error(capsys)
    assert words in line and "pickled" not in line and "--trust-this-file" not in line, line
    assert snapshot(tmp_path) == before


def _checkpoint_server(files: dict[str, bytes]):
    from test_download import Server  # the loopback server with HTTP Range of tests/test_download.py

    return Server(files)


def test_download_of_an_html_page_leaves_nothing_to_resume_from(tmp_path, capsys):
    """Issue 25 item 6: `modules.download --url` of a page that is not a checkpoint was a traceback and left a
    `.part` the next run resumed from; a `.part` holding such a page is not resumed."""
    from modules import download

    fixture = os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.pth.tar")
    data = open(fixture, "rb").read()
    page = b"<!DOCTYPE html><html><body>quota exceeded</body></html>"
    server = _checkpoint_server({"/page": page, "/vox-cpk.pth.tar": data})
    try:
        folder = tmp_path / "new"
        assert download.main(["fomm-vox", "--dir", str(folder), "--url", server.url + "/page", "--quiet"]) == 2
        assert "is not a PyTorch checkpoint: it is an HTML page" in one_line_error(capsys)
        assert not folder.exists()  # no .part to resume from, and not even the folder
        folder.mkdir()
        (folder / "vox-cpk.pth.tar.part").write_bytes(page)  # what an older version left behind
        path = download.download("fomm-vox", str(folder), url=server.url + "/vox-cpk.pth.tar",
                                 config=os.path.join(ROOT, "tests", "fixtures", "fomm_tiny.yaml"), progress=False)
        assert open(path, "rb").read() == data and os.listdir(folder) == ["vox-cpk.pth.tar"]
        assert "not the start of a checkpoint (it is an HTML page" in capsys.readouterr().err
    finally:
        server.close()


def test_offline_download_creates_no_folder(tmp_path, capsys):
    """Issue 25 item 7: an offline `modules.download all --dir NEW` left an empty NEW."""
    import socket

    from modules import download

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    folder = tmp_path / "new" / "checkpoints"
    assert download.main(["vox", "--dir", str(folder), "--url", f"http://127.0.0.1:{port}/vox.pth.tar", "--quiet"]) == 2
    assert "cannot download" in one_line_error(capsys)
    assert os.listdir(tmp_path) == []


def test_disk_full_in_torch_zip_writer_is_one_line(tmp_path, capsys, monkeypatch, one_epoch_log):
    """Issue 25 item 6: torch's zip writer reports a full disk as RuntimeError, which was a traceback."""
    run_dir = _trained(tmp_path, one_epoch_log)
    checkpoint = run_dir / "checkpoint.pth.tar"
    previous = checkpoint.read_bytes()

    def full(obj, f, *args, **kwargs):  # what torch.save raises when the filesystem fills up mid-archive
        with open(f, "wb") as handle:
            handle.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/12: file write failed")

    monkeypatch.setattr(torch, "save", full)
    capsys.readouterr()
    assert _train(tmp_path, tiny_config(tmp_path, "two.yaml", num_epochs=2), "--checkpoint", str(checkpoint)) == 2
    line = one_line_error(capsys)
    assert f"cannot write checkpoint {checkpoint}: " in line and "PytorchStreamWriter failed writing file" in line
    assert checkpoint.read_bytes() == previous and not [f for f in os.listdir(run_dir) if ".tmp." in f]


_UNDER_ULIMIT = (  # animate.py with RLIMIT_AS set to what it uses once torch is loaded plus `headroom` bytes
    "import os, resource, sys\n"
    f"sys.path.insert(0, {ROOT!r})\n"
    "import animate\n"
    "used = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
    "resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]), resource.RLIM_INFINITY))\n"
    "sys.exit(animate.main(sys.argv[2:]))\n")
ULIMIT_CASES = [
    ("large --img_shape", [], ["--img_shape", "2048,2048"], "animating at 2048x2048 needs at least"),
    ("huge photo, --max_size 0", ["photo"], ["--paste_back", "--max_size", "0"],
     "pasting back into the 4000x4000 photo (--max_size to shrink it) needs at least"),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("make,extra,words", [c[1:] for c in ULIMIT_CASES], ids=[c[0] for c in ULIMIT_CASES])
def test_address_space_limit_is_a_one_line_refusal(make, extra, words, tmp_path, tiny_config_path, tiny_checkpoint):
    """Issue 25 item 6: under `ulimit -v` the memory check read the machine's free memory, not what the
    process may still map, and the run died with MemoryError / can't allocate memory."""
    from PIL import Image

    photo = PHOTO
    if make:
        photo = str(tmp_path / "huge.png")
        Image.new("RGB", (4000, 4000), (120, 100, 90)).save(photo)
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-c", _UNDER_ULIMIT, str(512 << 20), "--config", tiny_config_path,
                           "--checkpoint", tiny_checkpoint, "--source_image", photo, "--driving_video", CLIP,
                           "--result_video", str(tmp_path / "r.mp4"), "--cpu", "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert words in err[-1] and "left under this process's address-space limit (ulimit -v)" in err[-1], err[-1]
    assert snapshot(tmp_path) == before


def test_stale_temporaries_of_every_checkpoint_are_removed_on_resume(tmp_path, capsys, one_epoch_log):
    """Issue 25 item 7: a kill -9 during an epoch checkpoint left `NNNNNNNN-checkpoint.pth.tar.tmp.PID` for
    ever (the clean-up looked only at the checkpoint being written)."""
    run_dir = _trained(tmp_path, one_epoch_log)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = run_dir / f"00000000-checkpoint.pth.tar.tmp.{dead.pid}"
    stale.write_bytes(b"x" * 100000)
    live = run_dir / f"00000007-checkpoint.pth.tar.tmp.{os.getppid()}"  # a live process's: not ours to remove
    live.write_bytes(b"y")
    capsys.readouterr()
    assert _train(tmp_path, tiny_config(tmp_path, "two.yaml", num_epochs=2),
                  "--checkpoint", str(run_dir / "checkpoint.pth.tar")) == 0
    assert not stale.exists() and live.exists()
    assert f"removed {stale}" in capsys.readouterr().err


def test_partial_outputs_of_dead_runs_are_swept_from_the_output_folder(tmp_path, tiny_config_path, tiny_checkpoint,
                                                                      capsys):
    """Issue 25 item 7: `.<name>.partial-PID.mp4` of an animate.py killed with kill -9 stayed until a later
    run wrote to that same name."""
    import animate

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_video = tmp_path / f".other.partial-{dead.pid}.mp4"
    stale_video.write_bytes(b"x" * 1000)
    stale_frames = tmp_path / f".frames.partial-{dead.pid}"
    stale_frames.mkdir()
    (stale_frames / "000000.png").write_bytes(b"x")
    live = tmp_path / f".other.partial-{os.getppid()}.mp4"
    live.write_bytes(b"y")
    assert animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                         "--driving_video", CLIP, "--result_video", str(tmp_path / "r.mp4"), "--cpu",
                         "--quiet"]) == 0
    assert not stale_video.exists() and not stale_frames.exists() and live.exists()
    assert "removed 2 unfinished output(s) of interrupted runs" in capsys.readouterr().err


def test_reconstruction_of_an_empty_frame_folder_creates_nothing(tmp_path, tiny_config_path, capsys):
    """Issue 25 item 7: an empty test frame folder left reconstruction/{png,mp4,config.yaml} behind."""
    import reconstruction

    (tmp_path / "data" / "test" / "empty").mkdir(parents=True)
    (tmp_path / "data" / "train").mkdir()
    before = snapshot(tmp_path)
    assert reconstruction.main(["--config", tiny_config_path, "--log_dir", str(tmp_path / "log"), "--dataset_root",
                                str(tmp_path / "data"), "--device", "cpu", "--quiet"]) == 2
    assert "no frames" in one_line_error(capsys)
    assert snapshot(tmp_path) == before and not (tmp_path / "log").exists()


def test_sigterm_exits_143_and_leaves_no_output(tmp_path, tiny_config_path, tiny_checkpoint, capsys, monkeypatch):
    """Issue 25 item 8: animate.py exited 130 on SIGTERM; 143 (128 + 15) is what ARCHITECTURE.md documents."""
    import animate

    animate_frames = animate._animate_frames

    def killed(*args, **kwargs):  # the scheduler's SIGTERM arrives while frames are animated
        os.kill(os.getpid(), signal.SIGTERM)
        return animate_frames(*args, **kwargs)

    monkeypatch.setattr(animate, "_animate_frames", killed)
    assert animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                         "--driving_video", CLIP, "--result_video", str(tmp_path / "r.mp4"), "--cpu",
                         "--quiet"]) == 143
    assert "terminated (SIGTERM); no output written" in one_line_error(capsys)
    assert os.listdir(tmp_path) == []


def test_sigterm_before_a_live_session_runs_exits_143(tmp_path, tiny_config_path, tiny_checkpoint, capsys,
                                                     monkeypatch):
    """Issue 25 item 8, the --live path: a SIGTERM while the session is being set up was a traceback."""
    import animate
    from web import live

    def setting_up(*args, **kwargs):  # the SIGTERM arrives while the models load
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the set-up")

    monkeypatch.setattr(live, "animate_live", setting_up)
    assert animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                         "--driving_video", CLIP, "--live", "--live_frames", "3", "--cpu"]) == 143
    assert "terminated (SIGTERM)" in one_line_error(capsys)


def test_two_faces_say_which_one_is_animated(tmp_path, tiny_config_path, tiny_checkpoint, capsys, monkeypatch):
    """Issue 25 item 8: with two faces in the photo nothing said which one was animated."""
    import animate
    from utils import crop

    def two_faces(kind):  # the detector finds two faces (largest first) in every frame
        return lambda frame: [np.array([16.0, 12.0, 48.0, 52.0]), np.array([2.0, 2.0, 12.0, 12.0])]

    monkeypatch.setattr(crop, "detector", two_faces)
    assert animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", PHOTO,
                         "--driving_video", CLIP, "--result_video", str(tmp_path / "r.mp4"), "--crop", "face",
                         "--cpu", "--quiet"]) == 0
    assert ("note: 2 faces found in the source image; animating the largest at x=16, y=12, w=32, h=40 (pixels)"
            in capsys.readouterr().err)


def test_paste_back_without_crop_warns_about_the_stretch(tmp_path, tiny_config_path, tiny_checkpoint, capsys):
    """Issue 25 item 8: `--paste_back --crop none` stretched the model's square over a wide photo without a word."""
    import animate
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.open(PHOTO).convert("RGB").resize((96, 64)).save(wide)
    args = ["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--driving_video", CLIP, "--crop", "none",
            "--paste_back", "--cpu", "--quiet"]
    assert animate.main(args + ["--source_image", str(wide), "--result_video", str(tmp_path / "r.mp4")]) == 0
    assert ("warning: --paste_back with --crop none squeezes the whole 96x64 photo into the model's 64x64 input"
            in capsys.readouterr().err)
    assert animate.main(args + ["--source_image", PHOTO, "--result_video", str(tmp_path / "s.mp4")]) == 0
    assert "squeezes" not in capsys.readouterr().err  # a photo of the model's shape is not stretched
