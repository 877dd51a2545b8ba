"""ONNX export of the keypoint detector and the generator: onnxruntime matches PyTorch (tiny config)."""
from __future__ import annotations

import os

import onnx
import pytest
import torch

from modules.export import check_onnx, export_onnx, main


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from modules import build_models
    from utils.weight_recipe import fill_models

    models = fill_models(build_models(os.path.join(os.path.dirname(__file__), "fixtures", "tiny.yaml")))
    for m in models.values():
        m.eval()
    out = tmp_path_factory.mktemp("onnx")
    return models, export_onnx(models, str(out), size=64)


def test_onnxruntime_matches_pytorch(exported):
    models, paths = exported
    for batch, inputs in ((1, "real"), (3, "real"), (2, "random")):  # the batch dimension is dynamic
        results = check_onnx(models, paths, size=64, batch=batch, repeats=1, seed=batch, inputs=inputs)
        assert set(results) == {"kp_detector", "generator"}
        for name, r in results.items():
            assert r["max_abs_diff"] < 1e-4, (name, batch, inputs, r)
            assert 0 < r["torch_spread"] < 1e-3, (name, batch, inputs, r)
            assert r["torch_s"] > 0 and r["onnx_s"] > 0
    with pytest.raises(ValueError, match="check inputs must be one of"):
        check_onnx(models, paths, size=64, inputs="noise")


def test_real_check_frames_are_distinct_video_frames():
    from modules.export import real_check_frames

    source, driving = real_check_frames(48, batch=3)
    assert source.shape == driving.shape == (3, 3, 48, 48)
    assert 0 <= float(driving.min()) and float(driving.max()) <= 1
    assert torch.equal(source[0], source[2])  # one source image, repeated
    assert (driving[0] - driving[1]).abs().mean() > 1e-3  # different driving frames
    assert (source[0] - driving[0]).abs().mean() > 1e-2  # from different clips


def test_tps_solve_exports_without_inverse(exported):
    _, paths = exported
    ops = {node.op_type for node in onnx.load(paths["generator"]).graph.node}
    assert "GridSample" in ops and ("Einsum" in ops or "MatMul" in ops)
    assert not ops & {"Inverse", "LinalgSolve", "ATen"}, ops & {"Inverse", "LinalgSolve", "ATen"}
    kp_inputs = [i.name for i in onnx.load(paths["kp_detector"]).graph.input]
    assert kp_inputs == ["image"]


def test_export_restores_the_default_solver(exported):
    from modules import geometry

    assert geometry._EXPORT_SOLVE.get() is False


def test_cli_exports_and_reports_errors(tmp_path, tiny_config_path, tiny_checkpoint, capsys):
    assert main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--format", "onnx",
                 "--out", str(tmp_path / "out")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["generator.onnx", "kp_detector.onnx"]
    assert main(["--config", tiny_config_path, "--format", "tflite", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --format must be one of onnx")
    assert main(["--config", tiny_config_path, "--checkpoint", str(tmp_path / "missing.pth.tar"),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.pth.tar" in err[0]
    assert main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2


def test_exported_graph_runs_a_real_animation_step(exported):
    """Relative keypoints from PyTorch, generator in onnxruntime: same frame as make_animation."""
    from modules.animation import make_animation
    from modules.export import onnx_session

    models, paths = exported
    g = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, 64, 64, generator=g)
    driving = torch.rand(2, 3, 64, 64, generator=g)
    want = make_animation(source, driving, models, mode="standard", batch_size=2)
    kp = onnx_session(paths["kp_detector"])
    gen = onnx_session(paths["generator"])
    kp_s = kp.run(None, {"image": source.numpy()})[0]
    kp_d = kp.run(None, {"image": driving.numpy()})[0]
    got = gen.run(None, {"source": source.expand(2, -1, -1, -1).contiguous().numpy(), "kp_driving": kp_d,
                         "kp_source": kp_s.repeat(2, axis=0)})[0]
    assert abs(torch.from_numpy(got) - want).max() < 1e-4
