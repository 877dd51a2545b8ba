"""Before/after picture for docs/animation.md ("Full-frame results"): photo | blend region | pasted-back frame.

    .venv/bin/python docs/make_paste_figure.py [--config C --checkpoint P] [--out docs/paste_back.png]

Without --checkpoint it uses the tiny test config (tests/fixtures/tiny.yaml) with seeded
weights (utils/weight_recipe.py): the animated region is then a blur, not a face, and the
picture shows where and how the crop is pasted back, not animation quality. The photo is
scikit-image's astronaut enlarged to 1080x1350; the driving clip tests/data/single_face.mp4.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def seeded_tiny_checkpoint(folder: str) -> tuple[str, str]:
    from modules import build_models, save_checkpoint
    from utils.weight_recipe import fill_models

    config = os.path.join(ROOT, "tests", "fixtures", "tiny.yaml")
    path = os.path.join(folder, "tiny.pth.tar")
    save_checkpoint(path, fill_models(build_models(config)), epoch=0)
    return config, path


def panel(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    width = round(image.shape[1] * height / image.shape[0])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def main() -> None:
    from PIL import Image
    from skimage import data

    from animate import run_animation
    from utils.crop import image_box
    from utils.paste import FEATHER, PasteBack

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--frame", type=int, default=20, help="driving frame shown")
    parser.add_argument("--height", type=int, default=300, help="panel height in the picture")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "paste_back.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config, checkpoint = (args.config, args.checkpoint) if args.checkpoint else seeded_tiny_checkpoint(tmp)
        big = np.asarray(Image.fromarray(data.astronaut()).resize((1350, 1350), Image.BICUBIC))[:, 135:135 + 1080]
        photo_path = os.path.join(tmp, "photo.png")
        Image.fromarray(np.ascontiguousarray(big)).save(photo_path)
        info = run_animation(config, checkpoint, photo_path, os.path.join(ROOT, "tests", "data", "single_face.mp4"),
                             os.path.join(tmp, "frames"), crop="face", paste_back=True, device="cpu")
        frame = np.asarray(Image.open(os.path.join(tmp, "frames", f"{args.frame:06d}.png")).convert("RGB"))
        size = tuple(info["size"])
    mask = PasteBack(big, image_box(big, "face"), size, feather=FEATHER["face"]).full_mask()
    tint = (big * (0.45 + 0.55 * mask[..., None]) + [60, 0, 0] * mask[..., None] * (mask[..., None] < 1)).clip(0, 255)
    row = np.concatenate([panel(big, args.height), panel(tint.astype(np.uint8), args.height),
                          panel(frame, args.height)], axis=1)
    Image.fromarray(row).quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)  # small PNG
    print(f"wrote {args.out} ({row.shape[1]}x{row.shape[0]}); result frames {info['result_size']}")


if __name__ == "__main__":
    main()
