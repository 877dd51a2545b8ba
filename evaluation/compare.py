"""A markdown table of results across runs, to compare checkpoints.

    python -m evaluation.compare log/*                 # every run with a reconstruction
    python -m evaluation.compare log/a log/b --sort l1 --out results.md

Each argument is a run folder (with reconstruction/l1.json and, after `python -m
evaluation`, reconstruction/metrics.json), a reconstruction folder, or a metrics.json.
The `family` column (tpsmm, fomm, mraa: the run's `model_family`) puts the model families side by
side in one table. Rows whose detectors differ are flagged: their AKD/MKR/AED are not comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

COLUMNS = ("run", "family", "checkpoint", "epoch", "videos", "frames", "L1", "AKD", "MKR", "AED", "AKD frames",
           "detectors")
SORT_KEYS = {"l1": "L1", "akd": "AKD", "mkr": "MKR", "aed": "AED", "run": "run", "epoch": "epoch",
             "family": "family"}


def _load(path: str) -> Optional[dict]:
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    return None


def load_run(path: str) -> Optional[dict[str, Any]]:
    """{'l1': l1.json or None, 'metrics': metrics.json or None, 'name': ...} for one argument, None if empty."""
    path = os.path.normpath(path)
    if os.path.isfile(path):
        metrics, rec_dir = _load(path), os.path.dirname(path)
    else:
        rec_dir = os.path.join(path, "reconstruction") if os.path.isdir(os.path.join(path, "reconstruction")) else path
        metrics = _load(os.path.join(rec_dir, "metrics.json"))
    l1 = _load(os.path.join(rec_dir, "l1.json"))
    if l1 is None and metrics is None:
        return None
    name = os.path.dirname(rec_dir) if os.path.basename(rec_dir) == "reconstruction" else rec_dir
    return {"name": name or path, "l1": l1, "metrics": metrics}


def _detectors(metrics: Optional[dict]) -> str:
    if not metrics:
        return ""
    det = metrics.get("detectors", {})
    parts = [det.get("kind", "?")]
    if "keypoints" in det:
        parts.append(det["keypoints"]["version"])
    if "identity" in det:
        parts.append("AED " + det["identity"]["version"].split(",")[0] + " " + det["identity"]["distance"])
    return "; ".join(parts)


def row(run: dict[str, Any]) -> dict[str, Any]:
    l1, metrics = run["l1"] or {}, run["metrics"] or {}
    rec = metrics.get("reconstruction", {})
    checkpoint = l1.get("checkpoint") or rec.get("checkpoint")
    return {
        "run": run["name"],
        "family": l1.get("model_family", rec.get("model_family")),
        "checkpoint": os.path.basename(checkpoint) if checkpoint else "-",
        "epoch": l1.get("epoch", rec.get("epoch")),
        "videos": l1.get("num_videos", metrics.get("num_videos")),
        "frames": l1.get("frames", metrics.get("frames")),
        "L1": l1.get("l1", metrics.get("l1")),
        "AKD": metrics.get("akd"),
        "MKR": metrics.get("mkr"),
        "AED": metrics.get("aed"),
        "AKD frames": (f"{metrics['akd_frames']}/{metrics['frames']}" if "akd_frames" in metrics else None),
        "detectors": _detectors(run["metrics"]),
    }


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if key in ("L1", "MKR", "AED") else f"{value:.3f}"
    return str(value).replace("|", "/")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * len(COLUMNS)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(c, r[c]) for c in COLUMNS) + " |")
    detectors = {r["detectors"] for r in rows if r["detectors"]}
    if len(detectors) > 1:
        lines.append("")
        lines.append("Note: the runs used different detectors; their AKD/MKR/AED are not comparable.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.compare", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("runs", nargs="+", help="run folders, reconstruction folders or metrics.json files")
    parser.add_argument("--sort", choices=sorted(SORT_KEYS), help="sort rows by this column (ascending)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        try:
            run = load_run(path)
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: cannot read results of {path}: {err}", file=sys.stderr)
            return 2
        if run is None:
            print(f"skipped {path}: no reconstruction/l1.json or metrics.json", file=sys.stderr)
        else:
            runs.append(run)
    if not runs:
        print("error: no results in the given folders (run reconstruction.py / python -m evaluation first)",
              file=sys.stderr)
        return 2
    rows = [row(r) for r in runs]
    if args.sort:
        key = SORT_KEYS[args.sort]
        rows.sort(key=lambda r: (r[key] is None, r[key] if r[key] is not None else 0))
    table = markdown_table(rows)
    sys.stdout.write(table)
    if args.out:
        from utils.io import write_text

        write_text(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
