"""Code written for the reference demo runs unchanged: client-style tests, frames checked against the fixtures.

Each test is shaped like a real client of the published TPSMM / FOMM code (a Flask or
FastAPI handler, a Colab notebook, a cog predictor) and compares what `demo.py` returns
with the reference outputs recorded in tests/fixtures (1e-4 on TPSMM frames, 1e-5 on FOMM
frames; 1 grey level once frames went through `img_as_ubyte` and a file).
"""
from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
FOMM_CONFIG = os.path.join(FIXTURES, "fomm_tiny.yaml")
FOMM_CHECKPOINT = os.path.join(FIXTURES, "fomm_tiny.pth.tar")
TPSMM_TOL = 1e-4
FOMM_TOL = 1e-5


@pytest.fixture(scope="module")
def fomm_io():
    return torch.load(os.path.join(FIXTURES, "fomm_tiny_io.pt"), weights_only=True)


def hwc(x: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) tensor -> (T, H, W, 3) float32 numpy."""
    return x.permute(0, 2, 3, 1).numpy().astype(np.float32)


def reference_frames(tiny_io, mode: str) -> np.ndarray:
    return hwc(torch.cat([r["prediction"] for r in tiny_io[mode]]))


def fomm_reference(fomm_io, setting: str) -> np.ndarray:
    return hwc(torch.cat([f["prediction"] for f in fomm_io["animation"][setting]["frames"]]))


def assert_frames(frames, expected: np.ndarray, tol: float) -> None:
    assert isinstance(frames, list) and len(frames) == len(expected)
    for f in frames:
        assert isinstance(f, np.ndarray) and f.dtype == np.float32 and f.shape == expected.shape[1:]
    err = float(np.abs(np.stack(frames) - expected).max())
    assert err <= tol, f"max abs diff {err:.3g} > {tol}"


def tiny_inputs(tiny_io):
    source = hwc(tiny_io["source"])[0]  # H x W x 3 in [0, 1]
    driving = list(hwc(tiny_io["driving"]))
    return source, driving


# ----------------------------------------------------------------------------- Colab-style notebook


@pytest.mark.parametrize("mode", ["relative", "standard"])
def test_colab_sequence(tmp_path, tiny_io, tiny_config_path, tiny_checkpoint, mode):
    import imageio
    from skimage import img_as_ubyte

    from demo import load_checkpoints, make_animation

    inpainting, kp_detector, dense_motion_network, avd_network = load_checkpoints(
        config_path=tiny_config_path, checkpoint_path=tiny_checkpoint, device="cpu")
    assert not kp_detector.training and not inpainting.training
    source_image, driving_video = tiny_inputs(tiny_io)
    predictions = make_animation(source_image, driving_video, inpainting, kp_detector, dense_motion_network,
                                 avd_network, device="cpu", mode=mode)
    expected = reference_frames(tiny_io, mode)
    assert_frames(predictions, expected, TPSMM_TOL)
    out = str(tmp_path / "generated.tif")  # lossless, so the written frames can be checked too
    imageio.mimsave(out, [img_as_ubyte(frame) for frame in predictions])
    written = np.stack(imageio.mimread(out))
    assert written.shape == (3, 64, 64, 3)
    assert np.abs(written.astype(int) - img_as_ubyte(np.clip(expected, 0, 1)).astype(int)).max() <= 1


def test_relative_kp_and_positional_device(tiny_io, tiny_config_path, tiny_checkpoint):
    from demo import load_checkpoints, make_animation, relative_kp

    nets = load_checkpoints(tiny_config_path, tiny_checkpoint, torch.device("cpu"))
    kp_detector = nets[1]
    with torch.no_grad():
        kp_source = kp_detector(tiny_io["source"])
        kp_initial = kp_detector(tiny_io["driving"][:1])
        for t, ref in enumerate(tiny_io["relative"]):
            kp_norm = relative_kp(kp_source=kp_source, kp_driving=kp_detector(tiny_io["driving"][t:t + 1]),
                                  kp_driving_initial=kp_initial)
            assert (kp_norm["fg_kp"] - ref["kp_norm"]).abs().max() <= TPSMM_TOL
    source, driving = tiny_inputs(tiny_io)
    frames = make_animation(source, np.stack(driving), *nets, "cpu", "relative")  # driving as one array
    assert_frames(frames, reference_frames(tiny_io, "relative"), TPSMM_TOL)


# ----------------------------------------------------------------------------- Flask / FastAPI handlers


class FlaskLikeApp:
    """What the Flask wrappers do: load once at start, then one handler per request with numpy images."""

    def __init__(self, config_path: str, checkpoint_path: str):
        from demo import load_checkpoints

        self.networks = load_checkpoints(config_path, checkpoint_path, "cpu")

    def animate(self, request: dict) -> dict:
        from skimage import img_as_ubyte

        from demo import make_animation

        frames = make_animation(request["source"], request["driving"], *self.networks, device="cpu",
                                mode=request.get("mode", "relative"))
        return {"status": 200, "frames": [img_as_ubyte(np.clip(f, 0, 1)) for f in frames], "raw": frames}


def test_flask_like_handler(tiny_io, tiny_config_path, tiny_checkpoint):
    app = FlaskLikeApp(tiny_config_path, tiny_checkpoint)
    source, driving = tiny_inputs(tiny_io)
    for mode in ("relative", "standard"):
        response = app.animate({"source": source, "driving": driving, "mode": mode})
        assert response["status"] == 200
        expected = reference_frames(tiny_io, mode)
        assert_frames(response["raw"], expected, TPSMM_TOL)
        ubyte = np.stack(response["frames"])
        assert ubyte.dtype == np.uint8
        assert np.abs(ubyte.astype(int) - np.round(np.clip(expected, 0, 1) * 255).astype(int)).max() <= 1


def test_fastapi_like_async_endpoint(tiny_io, tiny_config_path, tiny_checkpoint):
    """An `async def` endpoint that runs the blocking call in a worker thread, as FastAPI wrappers do."""
    from demo import load_checkpoints, make_animation

    state = {"models": load_checkpoints(config_path=tiny_config_path, checkpoint_path=tiny_checkpoint,
                                        device=torch.device("cpu"))}

    async def predict(source: np.ndarray, driving: list[np.ndarray]) -> list[np.ndarray]:
        inpainting, kp, dense, avd = state["models"]
        return await asyncio.to_thread(make_animation, source, driving, inpainting_network=inpainting,
                                       kp_detector=kp, dense_motion_network=dense, avd_network=avd,
                                       device="cpu", mode="relative")

    async def two_requests():
        source, driving = tiny_inputs(tiny_io)
        return await asyncio.gather(predict(source, driving), predict(source, driving[:2]))

    full, short = asyncio.run(two_requests())
    expected = reference_frames(tiny_io, "relative")
    assert_frames(full, expected, TPSMM_TOL)
    assert_frames(short, expected[:2], TPSMM_TOL)


# ----------------------------------------------------------------------------- cog-style predictor


class Predictor:
    """Shaped like the Replicate predictors of TPSMM: setup() loads the four datasets' models, predict() animates."""

    def __init__(self, configs: dict[str, str], checkpoints: dict[str, str]):
        self.configs, self.checkpoints = configs, checkpoints

    def setup(self) -> None:
        from demo import load_checkpoints

        self.models = {name: load_checkpoints(self.configs[name], self.checkpoints[name], device="cpu")
                       for name in self.configs}

    def predict(self, source_image: np.ndarray, driving_video: list[np.ndarray], dataset_name: str) -> list:
        from skimage.transform import resize

        from demo import frame_size, make_animation

        size = frame_size(self.configs[dataset_name])  # ted: 384
        source = resize(source_image, size)[..., :3]
        driving = [resize(frame, size)[..., :3] for frame in driving_video]
        return make_animation(source, driving, *self.models[dataset_name], device="cpu", mode="relative")


def _narrow_copy(published: str, tiny_config_path: str, folder) -> str:
    """The published config under its own name, with tiny.yaml's widths (no published weights offline)."""
    with open(published) as f:
        config = yaml.safe_load(f)
    with open(tiny_config_path) as f:
        config["model_params"] = yaml.safe_load(f)["model_params"]
    path = os.path.join(folder, os.path.basename(published))
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def test_cog_style_predictor_four_datasets(tmp_path, tiny_io, tiny_config_path, tiny_checkpoint):
    names = {"vox": "vox-256.yaml", "taichi": "taichi-256.yaml", "ted": "ted-384.yaml", "mgif": "mgif-256.yaml"}
    configs = {k: _narrow_copy(os.path.join(ROOT, "config", v), tiny_config_path, tmp_path) for k, v in names.items()}
    for path in configs.values():
        with open(path) as f:
            assert yaml.safe_load(f)["dataset_params"]["frame_shape"] is None  # as published
    configs["tiny"] = tiny_config_path
    predictor = Predictor(configs, {k: tiny_checkpoint for k in configs})
    predictor.setup()
    source, driving = tiny_inputs(tiny_io)
    # at the fixture's own size the predictor returns the reference's frames
    assert_frames(predictor.predict(source, driving, "tiny"), reference_frames(tiny_io, "relative"), TPSMM_TOL)
    for name, side in (("vox", 256), ("taichi", 256), ("mgif", 256), ("ted", 384)):
        frames = predictor.predict(source, driving[:2], name)
        assert len(frames) == 2 and frames[0].shape == (side, side, 3), (name, frames[0].shape)
        assert np.isfinite(np.stack(frames)).all() and 0 <= np.stack(frames).min() <= np.stack(frames).max() <= 1


# ----------------------------------------------------------------------------- FOMM clients


@pytest.mark.parametrize("relative,adapt,setting", [
    (True, True, "relative_adapt"), (True, False, "relative_noadapt"), (False, True, "absolute")])
def test_fomm_cpu_client(fomm_io, relative, adapt, setting):
    from demo import load_checkpoints, make_animation

    generator, kp_detector = load_checkpoints(config_path=FOMM_CONFIG, checkpoint_path=FOMM_CHECKPOINT, cpu=True)
    assert not generator.training and not kp_detector.training
    source_image = fomm_io["inputs"]["source_hwc"].numpy()
    driving_video = list(fomm_io["inputs"]["driving_hwc"].numpy())
    predictions = make_animation(source_image, driving_video, generator, kp_detector, relative=relative,
                                 adapt_movement_scale=adapt, cpu=True)
    assert_frames(predictions, fomm_reference(fomm_io, setting), FOMM_TOL)


def test_fomm_positional_calls_and_normalize_kp(fomm_io):
    from animate import normalize_kp
    from demo import load_checkpoints, make_animation

    generator, kp_detector = load_checkpoints(FOMM_CONFIG, FOMM_CHECKPOINT, True)  # positional cpu
    source_image = fomm_io["inputs"]["source_hwc"].numpy()
    driving_video = list(fomm_io["inputs"]["driving_hwc"].numpy())
    frames = make_animation(source_image, driving_video, generator, kp_detector, True, False, True)
    assert_frames(frames, fomm_reference(fomm_io, "relative_noadapt"), FOMM_TOL)
    with torch.no_grad():
        kp_source = kp_detector(fomm_io["inputs"]["source"])
        kp_initial = kp_detector(fomm_io["inputs"]["driving"][:1])
        ref = fomm_io["animation"]["relative_adapt"]["frames"][2]
        kp_norm = normalize_kp(kp_source=kp_source, kp_driving=kp_detector(fomm_io["inputs"]["driving"][2:3]),
                               kp_driving_initial=kp_initial, use_relative_movement=True,
                               use_relative_jacobian=True, adapt_movement_scale=True)
    assert (kp_norm["value"] - ref["kp_norm"]["value"]).abs().max() <= FOMM_TOL
    assert (kp_norm["jacobian"] - ref["kp_norm"]["jacobian"]).abs().max() <= FOMM_TOL


# ----------------------------------------------------------------------------- reference constructors


def test_reference_config_splat_constructors(tiny_config_path):
    from modules import build_models
    from modules.avd_network import AVDNetwork
    from modules.dense_motion import DenseMotionNetwork
    from modules.inpainting_network import InpaintingNetwork
    from modules.keypoint_detector import KPDetector

    with open(tiny_config_path) as f:
        mp = yaml.safe_load(f)["model_params"]
    common = mp["common_params"]
    built = {"inpainting_network": InpaintingNetwork(**mp["generator_params"], **common),
             "kp_detector": KPDetector(**common),
             "dense_motion_network": DenseMotionNetwork(**common, **mp["dense_motion_params"]),
             "avd_network": AVDNetwork(num_tps=common["num_tps"], **mp["avd_network_params"])}
    ours = build_models(tiny_config_path)
    for name, net in built.items():
        assert {k: v.shape for k, v in net.state_dict().items()} == \
            {k: v.shape for k, v in ours[name].state_dict().items()}, name
    with pytest.raises(TypeError):
        KPDetector(**common, num_tsp=3)  # a misspelt key is an error, not silently dropped


def test_fomm_reference_config_splat_constructors():
    from modules import build_models
    from modules.fomm.discriminator import MultiScaleDiscriminator
    from modules.fomm.generator import OcclusionAwareGenerator
    from modules.fomm.keypoint_detector import KPDetector

    with open(FOMM_CONFIG) as f:
        mp = yaml.safe_load(f)["model_params"]
    common = mp["common_params"]
    built = {"generator": OcclusionAwareGenerator(**mp["generator_params"], **common),
             "kp_detector": KPDetector(**mp["kp_detector_params"], **common),
             "discriminator": MultiScaleDiscriminator(**mp["discriminator_params"], **common)}
    ours = build_models(FOMM_CONFIG)
    for name, net in built.items():
        assert {k: v.shape for k, v in net.state_dict().items()} == \
            {k: v.shape for k, v in ours[name].state_dict().items()}, name
    with pytest.raises(TypeError):
        OcclusionAwareGenerator(**mp["generator_params"], **common, num_kps=3)


def test_fomm_checkpoint_with_the_fomm_reference_config_path(tmp_path, fomm_io, tiny_config_path, capsys):
    """FOMM's README passes config/vox-256.yaml, here TPSMM's: the checkpoint picks config/fomm/vox-256.yaml."""
    import shutil

    from demo import load_checkpoints, make_animation, resolve_config

    assert resolve_config(os.path.join(ROOT, "config", "vox-256.yaml"), FOMM_CHECKPOINT) == \
        os.path.join(ROOT, "config", "fomm", "vox-256.yaml")
    assert resolve_config(os.path.join(ROOT, "config", "vox-256.yaml"), str(tmp_path / "absent.pth.tar")) == \
        os.path.join(ROOT, "config", "vox-256.yaml")
    os.makedirs(tmp_path / "config" / "fomm")
    shutil.copy(tiny_config_path, tmp_path / "config" / "tiny.yaml")  # TPSMM config under the shared name
    shutil.copy(FOMM_CONFIG, tmp_path / "config" / "fomm" / "tiny.yaml")
    generator, kp_detector = load_checkpoints(str(tmp_path / "config" / "tiny.yaml"), FOMM_CHECKPOINT, cpu=True)
    assert "FOMM checkpoint" in capsys.readouterr().err
    frames = make_animation(fomm_io["inputs"]["source_hwc"].numpy(), list(fomm_io["inputs"]["driving_hwc"].numpy()),
                            generator, kp_detector, relative=True, adapt_movement_scale=True, cpu=True)
    assert_frames(frames, fomm_reference(fomm_io, "relative_adapt"), FOMM_TOL)
