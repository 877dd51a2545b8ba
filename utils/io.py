"""Atomic file writes: a temporary file in the target's folder, renamed over the target when complete.

A crash (or kill -9) never leaves a half-written target; it may leave a temporary
named `<target>.tmp.<pid>`, which `stale_temporaries` recognises by its owner's pid.
"""
from __future__ import annotations

import contextlib
import glob
import os
from typing import IO, Iterator


def temporary_path(path: str | os.PathLike) -> str:
    """The temporary name of `path` for this process: `<path>.tmp.<pid>`."""
    return f"{os.fspath(path)}.tmp.{os.getpid()}"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """`with atomic_write(p) as f: f.write(...)`: `p` appears only when the block completes.

    The data is flushed and fsynced before the rename; on any error the temporary is removed.
    """
    path = os.fspath(path)
    tmp = temporary_path(path)
    kwargs = {"encoding": encoding, "newline": ""} if "b" not in mode else {}
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_write(path) as handle:
        handle.write(text)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Temporaries `<path>.tmp.<pid>` of `path` whose process is gone (safe to remove)."""
    out = []
    for tmp in glob.glob(glob.escape(os.fspath(path)) + ".tmp.*"):
        suffix = tmp.rsplit(".", 1)[-1]
        if suffix.isdigit() and int(suffix) != os.getpid() and not pid_alive(int(suffix)):
            out.append(tmp)
    return sorted(out)


def stale_temporaries_in(folder: str | os.PathLike) -> list[str]:
    """Every temporary `<name>.tmp.<pid>` directly in `folder` whose process is gone: the writes of any file
    there cut by kill -9 or power loss (a run folder's numbered checkpoints too, not only the one being written)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    out = []
    for name in os.listdir(folder):
        stem, dot, suffix = name.rpartition(".")
        if not (dot and stem.endswith(".tmp") and suffix.isdigit()):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path) and int(suffix) != os.getpid() and not pid_alive(int(suffix)):
            out.append(path)
    return sorted(out)


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Raise `UserError` unless `path` can be created (or replaced): every existing ancestor is a writable
    folder and `path` itself is not a folder blocking a file (or the reverse). Creates nothing."""
    from utils.errors import UserError

    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        if os.path.lexists(parent):  # a dangling link
            raise UserError(f"cannot create the {what} {path}: {parent} is a broken link")
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"cannot create the {what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create the {what} {path}: the folder {parent} is not writable")
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the {what} {path}: it is a folder that is not writable")
