"""Published TPSMM and FOMM checkpoints, one command away: download, resume, check against the config.

    python -m modules.download vox                 # -> checkpoints/vox.pth.tar, checked against config/vox-256.yaml
    python -m modules.download vox taichi ted mgif fomm-vox
    python -m modules.download all                 # every file below
    python -m modules.download --list

A progress bar shows the transfer; an interrupted download leaves `<file>.part` and the
next run resumes it (HTTP Range), unless it does not start like a checkpoint (an HTML error
page, say): then it is removed and the file fetched again. The folder (`--dir`) is created
only once a server answers, and removed again when a failure leaves it empty, so an offline
run leaves nothing behind. The finished file must load into the networks of its
config (keys and shapes, `modules.load_checkpoint`) before it is renamed into place.
Without network access the command stops with one line naming the URL and where to put
the file by hand.

URLs: TPSMM, the authors' Tsinghua Cloud files (the links of the reference README's
"Pre-trained models" folder, as used by its Colab notebook); FOMM, the release files of
`graphemecluster/first-order-model-demo`, the Colab demo the FOMM README links (the FOMM
README's own Google Drive / Yandex folders need a browser); MRAA, the git-LFS files of
snap-research/articulated-animation at commit 451f7da (its README's Google Drive folder needs a
browser; that GitHub still serves the LFS objects is unconfirmed). `--url` downloads from a mirror.
"""
from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 1 << 16


@dataclass(frozen=True)
class Published:
    filename: str  # name under checkpoints/
    config: str  # config it must load against, relative to the repository
    url: str


_TSINGHUA = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"
_FOMM = "https://github.com/graphemecluster/first-order-model-demo/releases/download/checkpoints/{}"
_MRAA = "https://github.com/snap-research/articulated-animation/raw/451f7dae807cb9bda35af35581216d348caecc21/checkpoints/{}"

PUBLISHED: dict[str, Published] = {
    "vox": Published("vox.pth.tar", "config/vox-256.yaml", _TSINGHUA.format("da8d61d012014b12a9e4")),
    "taichi": Published("taichi.pth.tar", "config/taichi-256.yaml", _TSINGHUA.format("9ec01fa4aaef423c8c02")),
    "ted": Published("ted.pth.tar", "config/ted-384.yaml", _TSINGHUA.format("483ef53650b14ac7ae70")),
    "mgif": Published("mgif.pth.tar", "config/mgif-256.yaml", _TSINGHUA.format("cd411b334a2e49cdb1e2")),
    **{f"fomm-{name}": Published(f"{name}-cpk.pth.tar", f"config/fomm/{name}-256.yaml", _FOMM.format(f"{name}-cpk.pth.tar"))
       for name in ("vox", "vox-adv", "taichi", "taichi-adv", "mgif", "fashion", "nemo", "bair")},
    **{f"mraa-{key}": Published(f"mraa/{name}.pth", f"config/mraa/{name}.yaml", _MRAA.format(f"{name}.pth"))
       for key, name in (("vox", "vox256"), ("taichi", "taichi256"), ("ted", "ted384"),
                         ("ted-youtube", "ted-youtube384"), ("mgif", "mgif256"))},
}


class DownloadError(RuntimeError):
    """A download that could not finish or a file that does not load (one-line message)."""


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "tpsmm-download/1",
                                                   **({"Range": f"bytes={offset}-"} if offset else {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the partial file is complete
            return None
        raise


def fetch(url: str, partial: str, progress: bool = True, timeout: float = 30.0) -> int:
    """Download `url` into `partial`, resuming from its current size; return the final size.

    Raises DownloadError when the server cannot be reached or the transfer stops early
    (the partial file stays, for the next run to resume).
    """
    from tqdm import tqdm

    offset = os.path.getsize(partial) if os.path.exists(partial) else 0
    try:
        response = _open(url, offset, timeout)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {url} ({reason})") from None
    if response is None:
        return offset
    with response:
        if offset and response.status != 206:  # the server ignored the Range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        os.makedirs(os.path.dirname(os.path.abspath(partial)), exist_ok=True)  # only once the server answers
        with open(partial, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=os.path.basename(partial)[:-len(".part")], disable=not progress, file=sys.stderr) as bar:
            try:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as err:
                raise DownloadError(f"download of {url} stopped at {out.tell()} bytes ({err}); "
                                    f"run the command again to resume") from None
            size = out.tell()
    if total is not None and size < total:
        raise DownloadError(f"download of {url} stopped at {size} of {total} bytes; run the command again to resume")
    return size


def check_loads(path: str, config: str) -> None:
    """The file loads into the networks of `config` (keys and shapes); CheckpointError otherwise."""
    from modules import build_models, load_checkpoint

    models = build_models(config)
    if "discriminator" in models:  # a FOMM checkpoint without its discriminator still animates
        models.pop("discriminator")
    load_checkpoint(path, models, strict=False)


def _missing_folders(path: str, top: str) -> list[str]:
    """The folders from `path` up to `top` (inclusive) that do not exist yet, deepest first."""
    top = os.path.abspath(top)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        if path == top or os.path.dirname(path) == path:
            break
        path = os.path.dirname(path)
    return missing


def _drop_foreign_partial(partial: str) -> None:
    """Remove a `.part` that cannot be the start of a checkpoint (say, an HTML error page saved by an earlier
    try), so the next transfer starts over instead of appending the checkpoint's tail to it."""
    from modules.checkpoint import not_a_checkpoint

    if os.path.isfile(partial) and os.path.getsize(partial) > 0:
        what = not_a_checkpoint(partial)
        if what is not None:
            os.remove(partial)
            print(f"removed {partial}: not the start of a checkpoint ({what}); downloading again", file=sys.stderr)


def download(name: str, folder: str = os.path.join(ROOT, "checkpoints"), url: str | None = None,
             config: str | None = None, progress: bool = True, timeout: float = 30.0) -> str:
    """Download the published checkpoint `name` into `folder`, check it against its config; return its path.

    A file already there that loads is kept. `url` / `config` override the published ones (mirrors, tests).
    """
    from modules import CheckpointError

    if name not in PUBLISHED:
        raise DownloadError(f"unknown checkpoint {name!r}; one of: {', '.join(PUBLISHED)}")
    entry = PUBLISHED[name]
    url = url or entry.url
    config = config or os.path.join(ROOT, entry.config)
    target = os.path.join(folder, entry.filename)
    if os.path.exists(target):
        check_loads(target, config)
        return target
    partial = target + ".part"
    _drop_foreign_partial(partial)
    # folders fetch creates once a server answers (removed again below if a failure leaves them empty)
    created = _missing_folders(os.path.dirname(os.path.abspath(target)), folder)
    try:
        try:
            fetch(url, partial, progress=progress, timeout=timeout)
        except DownloadError as err:
            raise DownloadError(f"{err}. Offline? Download {url} by hand and put it at {target}") from None
        try:
            check_loads(partial, config)
        except CheckpointError as err:
            os.remove(partial)  # complete by the server's count, yet not a checkpoint of this config
            raise DownloadError(f"{url} does not load against {config}: {err}") from None
    except BaseException:
        for made in created:  # deepest first; one holding a .part to resume from stays
            if os.path.isdir(made) and not os.listdir(made):
                os.rmdir(made)
        raise
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"checkpoints to fetch ({', '.join(PUBLISHED)}, or all)")
    parser.add_argument("--dir", default=os.path.join(ROOT, "checkpoints"), help="where to put them")
    parser.add_argument("--url", default=None, help="download from this URL instead (one name only)")
    parser.add_argument("--list", action="store_true", help="list the published checkpoints and their URLs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, entry in PUBLISHED.items():
            print(f"{name:<18} {entry.filename:<24} {entry.config:<30} {entry.url}")
        return 0
    names = list(PUBLISHED) if args.names == ["all"] else args.names
    if args.url and len(names) != 1:
        print("error: --url needs exactly one name", file=sys.stderr)
        return 2
    from modules import CheckpointError

    for name in names:
        try:
            path = download(name, args.dir, url=args.url, progress=not args.quiet)
        except (DownloadError, CheckpointError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{name}: {path} (loads against {PUBLISHED[name].config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
