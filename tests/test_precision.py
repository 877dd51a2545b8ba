"""`precision: auto` and the warning for emulated bf16/fp16: one function decides (utils.precision), tested by
faking the CPU's flags and the CUDA capability in both directions (this test machine's own flags do not matter)."""
from __future__ import annotations

import pytest
import torch

from utils import precision as up
from utils.precision import cpu_flags, native_precisions, resolve_precision

AVX2 = ("fpu", "sse4_2", "avx", "avx2", "fma")  # the EPYC: no AVX-512, no AMX
AVX512_BF16 = AVX2 + ("avx512f", "avx512_bf16")
AMX = AVX2 + ("amx_tile", "amx_bf16", "amx_int8")


def test_cpu_auto_follows_the_flags_both_ways():
    plain = resolve_precision("auto", "cpu", flags=AVX2)
    assert (plain.name, plain.warning) == ("fp32", None) and "no AVX-512 BF16 or AMX" in plain.why
    for flags, named in ((AVX512_BF16, "avx512_bf16"), (AMX, "amx_bf16")):
        chosen = resolve_precision("auto", "cpu", flags=flags)
        assert (chosen.name, chosen.warning) == ("bf16", None) and named in chosen.why
    assert resolve_precision("auto", "cpu", supported=("fp32",), flags=AMX).name == "fp32"  # an fp32-only engine


def test_explicit_emulated_precision_runs_with_a_one_line_warning():
    bf16 = resolve_precision("bf16", "cpu", flags=AVX2)
    assert bf16.name == "bf16" and bf16.warning is not None and "\n" not in bf16.warning
    assert "emulated" in bf16.warning and "5-7x" in bf16.warning and "auto picks fp32" in bf16.warning
    assert resolve_precision("bf16", "cpu", flags=AVX512_BF16).warning is None  # native: no warning
    assert "emulated" in resolve_precision("fp16", "cpu", flags=AMX).warning
    assert resolve_precision("fp32", "cpu", flags=AVX2).warning is None
    assert resolve_precision("fp32", "cpu", flags=AVX2).why == "asked"
    assert resolve_precision("fp32", "cpu", flags=AMX).why.startswith("asked; auto would pick bf16")
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", "cpu", flags=AVX2)


def test_cuda_auto_is_bf16_from_ampere_and_fp16_before():
    assert resolve_precision("auto", "cuda:0", capability=(9, 0)).name == "bf16"
    assert resolve_precision("auto", "cuda", capability=(8, 0)).name == "bf16"
    older = resolve_precision("auto", "cuda", capability=(7, 5))
    assert older.name == "fp16" and "7.5" in older.why
    assert "emulated" in resolve_precision("bf16", "cuda", capability=(7, 5)).warning
    assert native_precisions("cuda", capability=(6, 1)) == ("fp32", "fp16")
    assert resolve_precision("auto", "mps").name == "fp32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("flags,expected", [(AVX2, "fp32"), (AMX, "bf16")])
def test_engines_and_make_animation_resolve_auto(flags, expected, monkeypatch, tiny_models):
    """The animators and the Python API take 'auto' and resolve it through the same function."""
    from modules.animation import Animator, make_animation

    monkeypatch.setattr(up, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    source = torch.rand(1, 3, 64, 64)
    driving = torch.rand(3, 3, 64, 64)
    assert Animator(tiny_models, source, precision="auto").precision == expected
    out = make_animation(source, driving, tiny_models, precision="auto")
    exact = make_animation(source, driving, tiny_models, precision=expected)
    assert torch.equal(out, exact)


def test_training_precision_auto_is_decided_and_logged(monkeypatch):
    from train import make_autocast, train_precision

    monkeypatch.setattr(up, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(AVX2))
    notes: list[str] = []
    assert train_precision("auto", torch.device("cpu"), notes) == "fp32"
    assert notes == ["train_params.precision fp32 (auto: this CPU has no AVX-512 BF16 or AMX)"]
    notes.clear()
    assert train_precision("bf16", torch.device("cpu"), notes) == "bf16"
    assert len(notes) == 1 and notes[0].startswith("warning: train_params.bf16 is emulated on this CPU")
    monkeypatch.setattr(up, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(AMX))
    assert train_precision("auto", torch.device("cpu"), None) == "bf16"
    assert make_autocast("bf16", torch.device("cpu")) is not None


@pytest.mark.parametrize("flags,asked,words", [
    (AVX2, "auto", "precision fp32 (auto: this CPU has no AVX-512 BF16 or AMX)"),
    (AMX, "auto", "precision bf16 (auto: this CPU has amx_bf16"),
    (AVX2, "bf16", "warning: bf16 is emulated on this CPU"),
])
def test_demo_and_reconstruction_take_auto(flags, asked, words, tmp_path, tiny_config_path, tiny_checkpoint, capsys,
                                           monkeypatch):
    """demo.py (default fp32: the reference's output) and reconstruction.py (default fp32: the L1) accept auto."""
    import os

    import demo
    import reconstruction

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    clip = os.path.join(root, "data", "demo", "test", "carphone#003.png")
    monkeypatch.setattr(up, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    assert demo.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image",
                      os.path.join(root, "data", "demo", "source.png"), "--driving_video", clip, "--cpu",
                      "--img_shape", "64,64", "--result_video", str(tmp_path / "r.mp4"), "--precision", asked]) == 0
    assert words in capsys.readouterr().err
    assert reconstruction.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--log_dir",
                                str(tmp_path / "log"), "--dataset_root", os.path.join(root, "data", "demo"),
                                "--max_videos", "1", "--no_mp4", "--quiet", "--device", "cpu",
                                "--precision", asked]) == 0
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("flags,expected", [(AVX2, "fp32"), (AVX512_BF16, "bf16")])
def test_every_registered_familys_animator_resolves_auto(flags, expected, monkeypatch):
    """TPSMM, FOMM and MRAA animators (and any family built on modules.animation.engine_precision)."""
    from modules import build_models
    from modules.family import family_of_models

    monkeypatch.setattr(up, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    configs = {"tpsmm": os.path.join(root, "tests", "fixtures", "tiny.yaml"),
               "fomm": os.path.join(root, "tests", "fixtures", "fomm_tiny.yaml"),
               "mraa": os.path.join(root, "tests", "fixtures", "mraa_tiny.yaml")}
    for name, config in configs.items():
        if not os.path.exists(config):
            pytest.fail(f"missing fixture {config}")
        models = {k: m.eval() for k, m in build_models(config).items()}
        family = family_of_models(models)
        animator = family.animator_class()(models, torch.rand(1, 3, 64, 64), precision="auto")
        assert animator.precision == expected, name
