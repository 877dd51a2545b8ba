"""`python -m evaluation`: L1, AKD, MKR and AED of generated videos against their ground truth.

    # after `reconstruction.py --log_dir log/vox` (reads its PNGs, dataset and config):
    python -m evaluation --log_dir log/vox [--face_backend face-alignment]
    # any two folders of videos, matched by name:
    python -m evaluation --generated out/png --ground_truth data/vox/test --kind face --out metrics.json

Writes metrics.json (overall, per video, detectors and versions) and metrics.csv (per video).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any, Mapping, Optional

from evaluation.metrics import KINDS, default_cache_dir, evaluate, format_summary, guess_kind
from modules.family import load_config
from utils.detectors import BODY_BACKENDS, FACE_BACKENDS
from utils.errors import UserError
from utils.io import write_text
from utils.video import MediaError

CSV_COLUMNS = ("frames", "l1", "akd", "akd_euclidean", "mkr", "aed", "akd_frames", "frames_no_gt_detection",
               "frames_no_generated_detection", "aed_frames")


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, text)


def write_results(result: Mapping[str, Any], json_path: str) -> str:
    """metrics.json (everything) and metrics.csv beside it (one row per video + ALL); returns the csv path."""
    _atomic_write(json_path, json.dumps(result, indent=2) + "\n")
    columns = [c for c in CSV_COLUMNS if c in result]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", *columns])
    cell = (lambda v: "" if v is None else (f"{v:.8f}" if isinstance(v, float) else v))
    for name, row in result["videos"].items():
        writer.writerow([name, *[cell(row.get(c)) for c in columns]])
    writer.writerow(["ALL", *[cell(result.get(c)) for c in columns]])
    csv_path = os.path.splitext(json_path)[0] + ".csv"
    _atomic_write(csv_path, buffer.getvalue())
    return csv_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n")[0].split(": ", 1)[-1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("--log_dir", help="a run folder with reconstruction/ (png/, l1.json, config.yaml)")
    parser.add_argument("--generated", help="folder of generated videos (frame folders, strips or files)")
    parser.add_argument("--ground_truth", help="folder of ground-truth videos with the same names")
    parser.add_argument("--out", help="metrics.json path (default: <log_dir>/reconstruction/metrics.json, "
                                      "or metrics.json beside --generated)")
    parser.add_argument("--config", help="YAML config whose evaluation_params give the defaults "
                                         "(default: <log_dir>/reconstruction/config.yaml)")
    parser.add_argument("--kind", choices=("auto",) + KINDS, help="face (AKD, MKR, AED), body (AKD, MKR), none (L1); "
                                                                   "auto: from the dataset name")
    parser.add_argument("--face_backend", choices=FACE_BACKENDS, help="face landmark detector")
    parser.add_argument("--body_backend", choices=BODY_BACKENDS, help="body keypoint detector")
    parser.add_argument("--device", default="cpu", help="device for face-alignment (cpu, cuda)")
    parser.add_argument("--batch_size", type=int, help="frames read at a time")
    parser.add_argument("--max_videos", type=int, help="only the first N videos")
    parser.add_argument("--cache_dir", help="keep ground-truth detections here between runs "
                                            "(default $XDG_CACHE_HOME/tpsmm-eval or ~/.cache/tpsmm-eval)")
    parser.add_argument("--no_cache", action="store_true", help="run the detectors on the ground truth every time")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.config:
        load_config(args.config)  # a bad config is reported before anything is read or written
    recon: dict[str, Any] = {}
    if args.log_dir:
        rec_dir = os.path.join(args.log_dir, "reconstruction")
        l1_json = os.path.join(rec_dir, "l1.json")
        if not os.path.isfile(l1_json):
            raise MediaError(f"no reconstruction in {args.log_dir} (missing {l1_json}); run reconstruction first")
        with open(l1_json, encoding="utf-8") as handle:
            recon = json.load(handle)
        generated = args.generated or os.path.join(rec_dir, "png")
        ground_truth = args.ground_truth or os.path.join(recon["dataset_root"], "test")
        out = args.out or os.path.join(rec_dir, "metrics.json")
        saved = os.path.join(rec_dir, "config.yaml")
        config_path = args.config or (saved if os.path.isfile(saved) else None)
        dataset_name = recon.get("dataset_root", ground_truth)
    else:
        if not (args.generated and args.ground_truth):
            raise UserError("give --log_dir, or both --generated and --ground_truth")
        generated, ground_truth = args.generated, args.ground_truth
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(generated.rstrip("/"))), "metrics.json")
        config_path = args.config
        gt = os.path.abspath(ground_truth.rstrip("/"))
        dataset_name = os.path.dirname(gt) if os.path.basename(gt) in ("test", "train") else gt
    for folder in (generated, ground_truth):
        if not os.path.isdir(folder):
            raise MediaError(f"folder not found: {folder}")
    config = load_config(config_path if config_path else {})
    params = config["evaluation_params"]
    kind = args.kind or params["kind"]
    if kind == "auto":
        kind = guess_kind(dataset_name)
        print(f"kind: {kind} (guessed from {os.path.basename(os.path.normpath(dataset_name))!r}; "
              f"set --kind to change)", file=sys.stderr)
    result = evaluate(generated, ground_truth, kind=kind,
                      face_backend=args.face_backend or params["face_backend"],
                      body_backend=args.body_backend or params["body_backend"], device=args.device,
                      batch_size=args.batch_size or params["batch_size"], max_videos=args.max_videos,
                      progress=not args.quiet,
                      cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()))
    if recon:
        result["reconstruction"] = {k: recon.get(k) for k in ("checkpoint", "epoch", "l1", "l1_png", "frames",
                                                              "model_family", "frame_shape")}
    csv_path = write_results(result, out)
    print(format_summary(result))
    print(f"wrote {out} and {csv_path}")
    return result


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
