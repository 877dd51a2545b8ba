"""MRAA networks against the published code's outputs (tests/fixtures/mraa_tiny_io.pt, recorded from
snap-research/articulated-animation @ 03f1968 on mraa_tiny.yaml; copied from the shared reference folder,
whose README gives the tolerances used here).

Tolerances: the fixture README's suggestions, 1e-5 for region params, heatmaps, motions, masks, flows and
occlusion, 5e-5 for the deformed sources, `deformed` and `prediction` (its measured spread: <= 1.5e-5).
The tiny checkpoint is built once per module from modules/mraa/weight_recipe.py in the published AVD-stage
layout (the fixture's mraa_tiny.pth.tar, 10 MB, is not committed).
"""
from __future__ import annotations

import os

import pytest
import torch

from modules import build_models, family_of_models, load_checkpoint, load_config
from modules.mraa.geometry import sparse_motions, symmetric_eig2x2
from modules.mraa.checkpoint import save_published_checkpoint
from modules.mraa.weight_recipe import fill_mraa_models

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
CONFIG = os.path.join(FIXTURES, "mraa_tiny.yaml")
TOL = 1e-5
TOL_WARPED = 5e-5  # deformed sources, deformed, prediction
FLOW_KEYS = ("heatmap_representation", "sparse_motion", "mask", "optical_flow", "occlusion_map", "flow_sign")
WARPED_KEYS = ("deformed_source", "deformed", "prediction")


@pytest.fixture(scope="module")
def io():
    return torch.load(os.path.join(FIXTURES, "mraa_tiny_io.pt"), weights_only=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("mraa") / "mraa_tiny.pth.tar"
    save_published_checkpoint(path, fill_mraa_models(build_models(CONFIG)), epoch_avd=29)
    return str(path)


@pytest.fixture(scope="module")
def models(checkpoint):
    models = build_models(CONFIG)
    rest = load_checkpoint(checkpoint, models)
    assert rest["epoch_avd"] == 29
    for m in models.values():
        m.eval()
    return models


def close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:g}"


def check_generator(out: dict, ref: dict, what: str) -> None:
    for key in FLOW_KEYS:
        close(out[key], ref[key], TOL, f"{what} {key}")
    for key in WARPED_KEYS:
        close(out[key], ref[key], TOL_WARPED, f"{what} {key}")


def test_config_is_mraa_and_builds_the_published_networks(models, io):
    assert load_config(CONFIG)["model_family"] == "mraa"
    assert family_of_models(models).name == "mraa"
    for name, shapes in io["checkpoint_state_dict_shapes"].items():
        own = {k: list(v.shape) for k, v in models[name].state_dict().items()}
        assert own == {k: list(v) for k, v in shapes.items()}, name


def test_published_layout_checkpoint(checkpoint, io):
    data = torch.load(checkpoint, weights_only=True)
    assert list(data) == io["meta"]["checkpoint_top_level_keys"]
    assert data["optimizer_avd"] == data["optimizer_reconstruction"]  # the AVD stage's optimizer under both
    group = data["optimizer_avd"]["param_groups"][0]
    assert group["initial_lr"] == 1e-3 and group["betas"] == (0.5, 0.999)
    assert group["params"] == list(range(sum(1 for _ in build_models(CONFIG)["avd_network"].parameters())))


def test_region_params_every_frame(io, models):
    region_predictor = models["region_predictor"]
    with torch.no_grad():
        source = region_predictor(io["inputs"]["source"])
        driving = region_predictor(io["inputs"]["driving"])  # the three frames in one batch
    ref_source = io["region_predictor"]["source"]
    assert list(source) == list(ref_source)  # shift, covar, affine, heatmap, u, d
    for key in ref_source:
        close(source[key], ref_source[key], TOL, f"source {key}")
    k = source["shift"].shape[1]
    for t, ref in enumerate(io["region_predictor"]["driving"]):
        for key in ("shift", "covar", "affine", "heatmap"):
            close(driving[key][t:t + 1], ref[key], TOL, f"driving {t} {key}")
        for key in ("u", "d"):  # (B*K, 2, 2), as published
            close(driving[key][t * k:(t + 1) * k], ref[key], TOL, f"driving {t} {key}")
    for key, value in io["region_predictor"]["driving_initial"].items():
        close(value, io["region_predictor"]["driving"][0][key], 0.0, f"initial {key}")


def test_region_predictor_intermediates(io, models):
    debug = io["debug"]["region_predictor_source"]
    region_predictor = models["region_predictor"]
    with torch.no_grad():
        down = region_predictor.downsample(io["inputs"]["source"])
        close(down, debug["downsampled_input"], TOL, "downsampled input")
        features = region_predictor.predictor(down)
        close(features, debug["hourglass_out"], TOL, "hourglass out")
        close(region_predictor.regions(features), debug["region_logits"], 1e-4, "region logits")
    u, s = symmetric_eig2x2(io["region_predictor"]["source"]["covar"].view(-1, 2, 2))
    close(u, debug["svd_of_covar"]["u"], TOL, "eigenvectors vs torch.svd")
    close(s, debug["svd_of_covar"]["s"], TOL, "eigenvalues vs torch.svd")


@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
def test_generator_every_output(io, models, mode):
    """The generator on the region params the published animation gave it (new_region_params per frame)."""
    source_image = io["inputs"]["source"]
    with torch.no_grad():
        source = models["region_predictor"](source_image)
        driving = models["region_predictor"](io["inputs"]["driving"])
        for t, ref in enumerate(io["animation"][mode]["frames"]):
            new = {key: ref["new_region_params"][key] for key in ("shift", "affine", "covar")}
            if mode == "standard":
                for key in new:
                    close(driving[key][t:t + 1], new[key], TOL, f"standard {t} {key}")
            out = models["generator"](source_image, driving_region_params=new, source_region_params=source)
            check_generator(out, ref, f"{mode}[{t}]")


def test_generator_batched_standard(io, models):
    """All driving frames in one batch, with the encoder and source-only terms computed once (as cached)."""
    source_image = io["inputs"]["source"]
    generator = models["generator"]
    flow = generator.pixelwise_flow_predictor
    with torch.no_grad():
        source = models["region_predictor"](source_image)
        driving = models["region_predictor"](io["inputs"]["driving"])
        source_down = flow.downsample(source_image)
        cached = dict(encoded=generator.encode(source_image), source_down=source_down,
                      source_heatmap=flow.region_heatmaps(source_down.shape[2:], source))
        out = generator(source_image, driving_region_params=driving, source_region_params=source, **cached)
    for t, ref in enumerate(io["animation"]["standard"]["frames"]):
        check_generator({k: v[t:t + 1] for k, v in out.items()}, ref, f"batched[{t}]")


def test_reconstruction_with_background(io, models):
    source_image = io["inputs"]["source"]
    with torch.no_grad():
        source = models["region_predictor"](source_image)
        for t, ref in enumerate(io["reconstruction"]["frames"]):
            frame = io["inputs"]["driving"][t:t + 1]
            bg_params = models["bg_predictor"](source_image, frame)
            close(bg_params, ref["bg_params"], TOL, f"bg params {t}")
            close(bg_params, io["bg_predictor"]["source_driving_t"][t], TOL, f"bg predictor {t}")
            out = models["generator"](source_image, driving_region_params=models["region_predictor"](frame),
                                      source_region_params=source, bg_params=bg_params)
            check_generator(out, ref, f"reconstruction[{t}]")


def test_generator_intermediates(io, models):
    """Every level of the generator on relative frame 2 (where a mismatch would start)."""
    debug = io["debug"]["generator_relative_frame2"]
    ref = io["animation"]["relative"]["frames"][2]
    generator = models["generator"]
    seen: dict[str, torch.Tensor] = {}

    def record(name, inputs=False):
        def hook(module, args, output):
            seen[name] = args[0] if inputs else output
        return hook

    handles = [generator.first.register_forward_hook(record("first_out")),
               generator.bottleneck.register_forward_hook(record("bottleneck_in", inputs=True)),
               generator.bottleneck.register_forward_hook(record("bottleneck_out")),
               generator.final.register_forward_hook(record("final_in", inputs=True)),
               generator.final.register_forward_hook(record("final_logits"))]
    for i, (down, up) in enumerate(zip(generator.down_blocks, generator.up_blocks)):
        handles += [down.register_forward_hook(record(f"down_block_{i}_out")),
                    up.register_forward_hook(record(f"up_block_{i}_in", inputs=True)),
                    up.register_forward_hook(record(f"up_block_{i}_out"))]
    try:
        with torch.no_grad():
            source = models["region_predictor"](io["inputs"]["source"])
            new = {key: ref["new_region_params"][key] for key in ("shift", "affine", "covar")}
            generator(io["inputs"]["source"], driving_region_params=new, source_region_params=source)
    finally:
        for handle in handles:
            handle.remove()
    names = [k for k, v in debug.items() if isinstance(v, torch.Tensor)]
    assert len(names) == 11
    for name in names:
        close(seen[name], debug[name], TOL_WARPED, name)


def test_avd_network(io, models):
    debug = io["debug"]["avd_frame1"]
    with torch.no_grad():
        source = models["region_predictor"](io["inputs"]["source"])
        driving = models["region_predictor"](io["inputs"]["driving"])
        out = models["avd_network"](source, driving)  # x_id batch 1 against three poses
        for t, ref in enumerate(io["avd_network"]["frames"]):
            for key in ("shift", "affine", "covar"):
                close(out[key][t:t + 1], ref[key], TOL, f"avd {t} {key}")
                close(out[key][t:t + 1], io["animation"]["avd"]["frames"][t]["new_region_params"][key], TOL,
                      f"avd mode {t} {key}")
        from modules.mraa.avd_network import id_sign
        from modules.mraa.geometry import region_params_to_vector
        pose = {k: v[1:2] for k, v in driving.items()}
        close(region_params_to_vector(pose), debug["pose_input"], TOL, "pose input")
        close(models["avd_network"].pose_encoder(debug["pose_input"]), debug["pose_emb"], TOL, "pose embedding")
        close(id_sign(source, pose), debug["id_sign"], 0.0, "id sign")
        close(models["avd_network"].id_encoder(debug["id_input"]), debug["id_emb"], TOL, "id embedding")


def test_axis_swap_probe(io, models):
    """revert_axis_swap undoes the sign flip of a whole affine and nothing else (README, 'SVD signs')."""
    probe = io["debug"]["axis_swap_probe"]
    with torch.no_grad():
        source = models["region_predictor"](io["inputs"]["source"])
        driving = models["region_predictor"](io["inputs"]["driving"][:1])
    flipped = probe["driving_region_params_flipped"]
    h, w = probe["sparse_motion"]["revert_axis_swap_True"]["original"].shape[2:4]
    for revert in (True, False):
        for name, params in (("original", driving), ("flipped", flipped)):
            motion, sign = sparse_motions((h, w), params, source, revert_axis_swap=revert)
            close(motion, probe["sparse_motion"][f"revert_axis_swap_{revert}"][name], TOL, f"{name} revert={revert}")
            close(sign, probe[f"flow_sign_{name}"], 0.0, f"{name} sign")
    with torch.no_grad():
        out = models["generator"](io["inputs"]["source"], driving_region_params=flipped, source_region_params=source)
        for key in ("optical_flow", "occlusion_map"):
            close(out[key], probe["generator_flipped"][key], TOL, f"flipped {key}")
        close(out["prediction"], probe["generator_flipped"]["prediction"], TOL_WARPED, "flipped prediction")
        pose = models["avd_network"](source, flipped)
        for key in ("shift", "affine", "covar"):
            close(pose[key], probe["avd_pose_flipped"]["flipped"][key], TOL, f"avd flipped {key}")


def test_weight_recipe_hash_check(io):
    filled = fill_mraa_models(build_models(CONFIG))
    for key, check in io["hash_check"].items():
        top, rest = key.split(".", 1)
        got = filled[top].state_dict()[rest].flatten()[:8]
        assert torch.equal(got, check["first8_value"]), key


def test_published_layout_loads_for_every_mode_and_with_an_empty_bg_predictor(checkpoint, tmp_path):
    """The animation loader (modules.loading) reads the released layout strictly; a bg_type 'zero' model
    (mgif256) has an empty bg_predictor entry that round-trips."""
    import yaml

    from modules.loading import load_models

    for mode in ("standard", "relative", "avd"):
        loaded = load_models(CONFIG, checkpoint, mode, torch.device("cpu"))
        assert set(loaded) == {"generator", "region_predictor"} | ({"avd_network"} if mode == "avd" else set())
        assert not any(m.training for m in loaded.values())
    with open(CONFIG, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    raw["model_params"]["bg_predictor_params"]["bg_type"] = "zero"
    models = fill_mraa_models(build_models(raw))
    assert len(models["bg_predictor"].state_dict()) == 0
    path = save_published_checkpoint(tmp_path / "zero.pth", models, epoch_avd=3)
    assert torch.load(path, weights_only=True)["bg_predictor"] == {}
    again = build_models(raw)
    assert load_checkpoint(path, again)["epoch_avd"] == 3
    frames = torch.rand(2, 3, 64, 64)
    assert torch.equal(again["bg_predictor"](frames, frames), torch.eye(3).expand(2, 3, 3))
