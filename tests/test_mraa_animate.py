"""MRAA animation against the published code's outputs (tests/fixtures/mraa_tiny_io.pt, `animation.*`).

Modes standard, relative and avd through the engine (`MRAAAnimator`, the three driving frames in one
batch), through the published demo API (`demo.load_checkpoints` / `demo.make_animation`), through the
plain reference-style loop, and end to end through `animate.py` and `demo.py`'s command line.
Tolerances from the fixture's README: 1e-5 for region params, heatmaps, motions, masks, flows and
occlusion; 5e-5 for deformed sources, `deformed` and `prediction`.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from modules import build_models, load_checkpoint
from modules.mraa.animation import MRAAAnimator, animate_mraa_plain, make_mraa_animation, movement_scale

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
CONFIG = os.path.join(FIXTURES, "mraa_tiny.yaml")
MODES = ("standard", "relative", "avd")
TOL = 1e-5
TOL_IMAGE = 5e-5  # deformed sources, deformed, prediction
EXACT_KEYS = ("heatmap_representation", "sparse_motion", "mask", "optical_flow", "occlusion_map")
IMAGE_KEYS = ("deformed_source", "deformed", "prediction")


@pytest.fixture(scope="module")
def io():
    return torch.load(os.path.join(FIXTURES, "mraa_tiny_io.pt"), weights_only=True)


@pytest.fixture(scope="module")
def mraa_checkpoint(tmp_path_factory):
    """mraa_tiny.yaml's checkpoint in the published AVD-stage layout (both optimizer entries, epoch_avd), from
    the weight recipe, as the fixture's own mraa_tiny.pth.tar (not committed) was built."""
    from modules.mraa.checkpoint import save_published_checkpoint
    from modules.mraa.weight_recipe import fill_mraa_models

    models = fill_mraa_models(build_models(CONFIG))
    path = tmp_path_factory.mktemp("mraa") / "mraa_tiny.pth.tar"
    save_published_checkpoint(path, models, epoch_avd=29)
    return str(path)


@pytest.fixture(scope="module")
def models(mraa_checkpoint):
    models = build_models(CONFIG)
    load_checkpoint(mraa_checkpoint, models)
    for m in models.values():
        m.eval()
    return models


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:g}"


def check_frame(out: dict, t: int, ref: dict, what: str) -> None:
    """Frame t of an engine / generator output against one fixture frame."""
    for key in ("shift", "affine", "covar"):
        close(out["region_params"][key][t:t + 1], ref["new_region_params"][key], TOL, f"{what}: new {key}")
    for key in EXACT_KEYS:
        close(out[key][t:t + 1], ref[key], TOL, f"{what}: {key}")
    for key in IMAGE_KEYS:
        close(out[key][t:t + 1], ref[key], TOL_IMAGE, f"{what}: {key}")
    assert torch.equal(out["flow_sign"][t:t + 1], ref["flow_sign"]), f"{what}: flow_sign"


@pytest.mark.parametrize("mode", MODES)
def test_engine_matches_the_published_outputs(io, models, mode):
    """The three driving frames in one batch through the engine: every output of every frame."""
    animator = MRAAAnimator(models, io["inputs"]["source"], mode=mode)
    out = animator.generate(io["inputs"]["driving"])
    for t, ref in enumerate(io["animation"][mode]["frames"]):
        check_frame(out, t, ref, f"{mode} frame {t}")


@pytest.mark.parametrize("mode", MODES)
def test_engine_streamed_in_batches_of_one(io, models, mode):
    """Frame by frame, the first frame seen stays the relative anchor; an explicit anchor gives the same."""
    source, driving = io["inputs"]["source"], io["inputs"]["driving"]
    animator = MRAAAnimator(models, source, mode=mode)
    anchored = MRAAAnimator(models, source, mode=mode, anchor=driving[:1])
    for t, ref in enumerate(io["animation"][mode]["frames"]):
        close(animator(driving[t:t + 1]), ref["prediction"], TOL_IMAGE, f"{mode} frame {t}")
        close(anchored(driving[t:t + 1]), ref["prediction"], TOL_IMAGE, f"{mode} anchored frame {t}")


def test_relative_movement_scale(io, models):
    """sqrt of the hull areas of the source and first-frame shifts (float64, batch element 0), as published."""
    info = io["animation"]["relative"]["movement_scale_info"]
    with torch.no_grad():
        source = models["region_predictor"](io["inputs"]["source"])
        initial = models["region_predictor"](io["inputs"]["driving"][:1])
    scale = movement_scale(source, initial)
    assert abs(scale - info["movement_scale"]) <= 1e-6
    assert abs(scale - 1.0) > 0.1  # the fixture's scale is not the identity: the test can tell
    animator = MRAAAnimator(models, io["inputs"]["source"], mode="relative")
    animator(io["inputs"]["driving"])
    assert abs(animator._scale - info["movement_scale"]) <= 1e-6  # (its copy folds the UpBlocks: 1e-7 apart)


def test_movement_scale_of_a_degenerate_hull_is_one():
    """Two regions (or centres on a line) have no hull area: scale 1 instead of inf / NaN shifts."""
    line = {"shift": torch.tensor([[[0.0, 0.0], [0.5, 0.5], [-0.5, -0.5]]])}
    triangle = {"shift": torch.tensor([[[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]]])}
    assert movement_scale(triangle, line) == 1.0 and movement_scale(line, triangle) == 1.0
    half = {"shift": triangle["shift"] * 0.5}
    assert movement_scale(half, triangle) == pytest.approx(0.5, abs=1e-12)


def test_relative_keeps_the_driving_covariance(io, models):
    """Only shift and affine are transferred: covar (hence the driving Gaussians) stays the driving frame's."""
    out = MRAAAnimator(models, io["inputs"]["source"], mode="relative").generate(io["inputs"]["driving"])
    for t, ref in enumerate(io["region_predictor"]["driving"]):
        close(out["region_params"]["covar"][t:t + 1], ref["covar"], TOL, f"frame {t} covar")
        assert (out["region_params"]["shift"][t:t + 1] - ref["shift"]).abs().max() > 1e-3  # shift was moved


@pytest.mark.parametrize("mode", MODES)
def test_plain_loop_matches_the_published_outputs_and_the_engine(io, models, mode):
    source, driving = io["inputs"]["source"], io["inputs"]["driving"]
    plain = animate_mraa_plain(source, driving, models, mode=mode)
    for t, ref in enumerate(io["animation"][mode]["frames"]):
        close(plain[t:t + 1], ref["prediction"], TOL_IMAGE, f"plain {mode} frame {t}")
    close(make_mraa_animation(source, driving, models, mode=mode, batch_size=2), plain, TOL, f"engine vs plain {mode}")


def test_background_reconstruction(io, models):
    """background=True (reconstruction): the bg predictor's matrix moves the background channel."""
    animator = MRAAAnimator(models, io["inputs"]["source"], mode="standard", background=True)
    out = animator.generate(io["inputs"]["driving"])
    for t, ref in enumerate(io["reconstruction"]["frames"]):
        close(out["bg_params"][t:t + 1], ref["bg_params"], TOL, f"frame {t} bg_params")
        for key in EXACT_KEYS:
            close(out[key][t:t + 1], ref[key], TOL, f"reconstruction frame {t}: {key}")
        for key in IMAGE_KEYS:
            close(out[key][t:t + 1], ref[key], TOL_IMAGE, f"reconstruction frame {t}: {key}")
    no_bg = MRAAAnimator(models, io["inputs"]["source"], mode="standard")(io["inputs"]["driving"])
    assert (no_bg - out["prediction"]).abs().max() > 1e-4  # the background term is not a no-op here


def test_bad_modes_and_missing_networks(io, models):
    source = io["inputs"]["source"]
    with pytest.raises(ValueError, match="mode must be one of"):
        MRAAAnimator(models, source, mode="sideways")
    without_avd = {k: v for k, v in models.items() if k != "avd_network"}
    with pytest.raises(ValueError, match="avd_network"):
        MRAAAnimator(without_avd, source, mode="avd")
    with pytest.raises(ValueError, match="bg_predictor"):
        MRAAAnimator({k: v for k, v in models.items() if k != "bg_predictor"}, source, background=True)


@pytest.mark.parametrize("precision", ["bf16"])
def test_reduced_precision_stays_close(io, models, precision):
    """bf16 convolutions (flow hourglass, bottleneck, decoder); region params, grids and sampling fp32."""
    source, driving = io["inputs"]["source"], io["inputs"]["driving"]
    exact = MRAAAnimator(models, source, mode="relative")(driving)
    animator = MRAAAnimator(models, source, mode="relative", precision=precision)
    reduced = animator.generate(driving)
    assert reduced["prediction"].dtype == torch.float32
    mse = (reduced["prediction"] - exact).pow(2).mean().item()
    psnr = 10 * np.log10(1.0 / max(mse, 1e-20))
    assert 30 < psnr < 200, psnr  # close, and not the fp32 path itself
    close(reduced["region_params"]["shift"], MRAAAnimator(models, source, mode="relative").generate(driving)
          ["region_params"]["shift"], TOL, "region params stay fp32")


# ----------------------------------------------------------------------------- demo.py: the published API


def _hwc(frames: torch.Tensor) -> list[np.ndarray]:
    return list(frames.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("mode", MODES)
def test_demo_api(io, mraa_checkpoint, mode):
    """load_checkpoints -> (generator, region_predictor, avd_network); make_animation's published call forms."""
    from demo import load_checkpoints, make_animation

    generator, region_predictor, avd_network = load_checkpoints(CONFIG, mraa_checkpoint, cpu=True)
    assert not generator.training and not region_predictor.training and not avd_network.training
    source = io["inputs"]["source_hwc"].numpy()
    driving = list(io["inputs"]["driving_hwc"].numpy())
    keyword = make_animation(source, driving, generator, region_predictor, avd_network, animation_mode=mode, cpu=True)
    positional = make_animation(source, driving, generator, region_predictor, avd_network, mode, True)
    assert len(keyword) == 3 and keyword[0].shape == (64, 64, 3) and keyword[0].dtype == np.float32
    for t, ref in enumerate(io["animation"][mode]["frames"]):
        expected = ref["prediction"][0].permute(1, 2, 0).numpy()
        assert np.abs(keyword[t] - expected).max() <= TOL_IMAGE, (mode, t)
        assert np.array_equal(keyword[t], positional[t])
    if mode == "standard":  # the published default
        default = make_animation(source, driving, generator, region_predictor, avd_network, cpu=True)
        assert all(np.array_equal(a, b) for a, b in zip(default, keyword))


def test_demo_load_checkpoints_honours_revert_axis_swap(tmp_path, mraa_checkpoint):
    """The published loader built the generator without the config's revert_axis_swap; ours reads it."""
    import yaml

    from demo import load_checkpoints

    with open(CONFIG) as f:
        raw = yaml.safe_load(f)
    raw["model_params"]["revert_axis_swap"] = False
    config = tmp_path / "no_swap.yaml"
    config.write_text(yaml.safe_dump(raw))
    generator, _, _ = load_checkpoints(str(config), mraa_checkpoint, cpu=True)
    assert generator.pixelwise_flow_predictor.revert_axis_swap is False
    generator, _, _ = load_checkpoints(CONFIG, mraa_checkpoint, cpu=True)
    assert generator.pixelwise_flow_predictor.revert_axis_swap is True


def test_demo_load_checkpoints_without_avd_warns(tmp_path, mraa_checkpoint):
    from demo import load_checkpoints

    data = torch.load(mraa_checkpoint, weights_only=True)
    data.pop("avd_network")
    path = tmp_path / "no_avd.pth.tar"
    torch.save(data, path)
    with pytest.warns(UserWarning, match="no avd_network"):
        nets = load_checkpoints(CONFIG, str(path), cpu=True)
    assert len(nets) == 3


# ----------------------------------------------------------------------------- command lines, end to end


def _write_frames(folder, frames: torch.Tensor) -> None:
    """(T, 3, H, W) floats -> PNG frames 000.png, ... (uint8, as a user's video would be)."""
    from PIL import Image

    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")


def _read_frames(folder) -> np.ndarray:
    from PIL import Image

    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    return np.stack([np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names])


def _uint8_inputs(io) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixture's inputs as the PNG files hold them (rounded to uint8)."""
    source = (io["inputs"]["source"] * 255).round() / 255
    driving = (io["inputs"]["driving"] * 255).round() / 255
    return source, driving


@pytest.mark.parametrize("mode", MODES)
def test_animate_py_end_to_end(tmp_path, io, models, mraa_checkpoint, mode):
    """`animate.py` with the tiny MRAA model: every frame written, equal to the engine's (within 1/255)."""
    import animate

    source, driving = _uint8_inputs(io)
    _write_frames(tmp_path / "source", source)
    _write_frames(tmp_path / "driving", driving)
    out = tmp_path / "result"
    code = animate.main(["--config", CONFIG, "--checkpoint", mraa_checkpoint, "--source_image",
                         str(tmp_path / "source" / "000.png"), "--driving_video", str(tmp_path / "driving"),
                         "--result_video", str(out), "--mode", mode, "--cpu", "--batch_size", "2", "--quiet"])
    assert code == 0
    got = _read_frames(out)
    assert got.shape == (3, 64, 64, 3)
    with torch.no_grad():
        expected = make_mraa_animation(source, driving, models, mode=mode)
    expected = (expected.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("mode", ["relative", None])
def test_demo_cli(tmp_path, io, mraa_checkpoint, mode):
    """`python demo.py --config <mraa> ...`: the published flags; no --mode means the published 'avd'."""
    from demo import load_checkpoints, main, make_animation

    source, driving = _uint8_inputs(io)
    _write_frames(tmp_path / "source", source)
    _write_frames(tmp_path / "driving", driving)
    out = tmp_path / "result"
    argv = ["--config", CONFIG, "--checkpoint", mraa_checkpoint, "--source_image", str(tmp_path / "source" / "000.png"),
            "--driving_video", str(tmp_path / "driving"), "--result_video", str(out), "--img_shape", "64,64", "--cpu"]
    assert main(argv + (["--mode", mode] if mode else [])) == 0
    got = _read_frames(out)
    nets = load_checkpoints(CONFIG, mraa_checkpoint, cpu=True)
    frames = make_animation(_hwc(source)[0], _hwc(driving), *nets, animation_mode=mode or "avd", cpu=True)
    expected = np.stack([(np.clip(f, 0, 1) * 255).round().astype(np.uint8) for f in frames])
    assert got.shape == (3, 64, 64, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_demo_cli_avd_without_avd_network_is_one_line(tmp_path, io, mraa_checkpoint, capsys):
    from demo import main

    data = torch.load(mraa_checkpoint, weights_only=True)
    data.pop("avd_network")
    checkpoint = tmp_path / "no_avd.pth.tar"
    torch.save(data, checkpoint)
    source, driving = _uint8_inputs(io)
    _write_frames(tmp_path / "source", source)
    _write_frames(tmp_path / "driving", driving)
    code = main(["--config", CONFIG, "--checkpoint", str(checkpoint), "--source_image",
                 str(tmp_path / "source" / "000.png"), "--driving_video", str(tmp_path / "driving"),
                 "--result_video", str(tmp_path / "result"), "--cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --mode avd needs") and "avd_network" in err[0]
    assert not (tmp_path / "result").exists()


def test_paste_back_end_to_end(tmp_path, io, mraa_checkpoint):
    """`--paste_back` with an MRAA model: frames at the photo's size, the photo itself outside the crop,
    animated inside it."""
    from PIL import Image

    import animate

    source, driving = _uint8_inputs(io)
    square = (source[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # 64 x 64 x 3
    photo = np.concatenate([np.full((64, 32, 3), 40, np.uint8), square, np.full((64, 32, 3), 200, np.uint8)], axis=1)
    Image.fromarray(photo).save(tmp_path / "photo.png")  # 64 x 128: the centre crop is the fixture's source
    _write_frames(tmp_path / "driving", driving)
    info = animate.run_animation(CONFIG, mraa_checkpoint, str(tmp_path / "photo.png"), str(tmp_path / "driving"),
                                 str(tmp_path / "result"), mode="relative", paste_back=True, device="cpu")
    got = _read_frames(tmp_path / "result")
    assert info["paste_back"] and got.shape == (3, 64, 128, 3)
    assert np.array_equal(got[:, :, :28], np.broadcast_to(photo[:, :28], got[:, :, :28].shape))  # outside the crop
    assert np.array_equal(got[:, :, 100:], np.broadcast_to(photo[:, 100:], got[:, :, 100:].shape))
    inside = got[:, 16:48, 48:80].astype(int)
    assert np.abs(inside - photo[16:48, 48:80].astype(int)).max() > 10  # animated, not the photo
    assert np.abs(inside[0] - inside[2]).max() > 10  # and moving


def test_web_page_offers_and_checks_an_mraa_model(tmp_path, mraa_checkpoint):
    """The web page finds a published-style `checkpoints/mraa/<name>.pth` beside `config/mraa/<name>.yaml`
    and checks it (typed config, every network it animates with) before serving."""
    import shutil

    import app

    (tmp_path / "checkpoints" / "mraa").mkdir(parents=True)
    (tmp_path / "config" / "mraa").mkdir(parents=True)
    shutil.copy(mraa_checkpoint, tmp_path / "checkpoints" / "mraa" / "tiny.pth")
    shutil.copy(CONFIG, tmp_path / "config" / "mraa" / "tiny.yaml")
    models = app.find_models(str(tmp_path / "checkpoints"), str(tmp_path / "config"))
    assert list(models) == ["mraa/tiny"]
    assert models["mraa/tiny"].config == str(tmp_path / "config" / "mraa" / "tiny.yaml")
    app.check_model(models["mraa/tiny"], "cpu")  # raises a one-line InputError on a bad model


def test_live_frames_through_the_mraa_engine(io, models):
    """Live animation (`web.live.FrameAnimator`): the first camera frame anchors relative mode, every
    later frame goes through the same engine as a file would."""
    from web.live import FrameAnimator

    source, driving = _uint8_inputs(io)
    to_uint8 = lambda x: (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    frames = FrameAnimator(models, to_uint8(source[0]), (64, 64), mode="relative", precision="fp32")
    got = np.stack([frames(to_uint8(frame)) for frame in driving])
    with torch.no_grad():
        expected = make_mraa_animation(source, driving, models, mode="relative")
    expected = (expected.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_onnx_export_matches_pytorch(tmp_path, io, models):
    """`python -m modules.export` with an MRAA config: region_predictor.onnx and generator.onnx under
    onnxruntime equal PyTorch (dynamic batch), with no inverse / SVD op left in the graphs; the exported
    generator on the fixture's relative-mode params reproduces the published prediction."""
    import onnx

    from modules.export import check_onnx, export_onnx, onnx_session

    paths = export_onnx(models, str(tmp_path), size=64)
    assert sorted(paths) == ["generator", "region_predictor"]
    ops = {name: {node.op_type for node in onnx.load(path).graph.node} for name, path in paths.items()}
    assert not (ops["region_predictor"] | ops["generator"]) & {"Inverse", "SVD"}
    assert "GridSample" in ops["generator"] and "Softmax" in ops["region_predictor"]
    for batch, inputs in ((1, "real"), (3, "random")):
        results = check_onnx(models, paths, size=64, batch=batch, repeats=1, seed=batch, inputs=inputs)
        for name, r in results.items():
            assert r["max_abs_diff"] < 1e-4, (name, batch, inputs, r)
            assert 0 < r["torch_spread"] < 1e-2, (name, batch, inputs, r)
    ref = io["animation"]["relative"]["frames"][2]
    source = io["region_predictor"]["source"]
    feeds = {"source": io["inputs"]["source"], **{f"driving_{k}": ref["new_region_params"][k] for k in
                                                  ("shift", "affine", "covar")},
             **{f"source_{k}": source[k] for k in ("shift", "affine", "covar")}}
    got = onnx_session(paths["generator"]).run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    close(torch.from_numpy(got), ref["prediction"], TOL_IMAGE, "onnx relative frame 2")
