"""One writer per run folder: an advisory lock file naming the host and process that trains into it.

`RunLock(folder).acquire()` creates `<folder>/run.lock` atomically (O_CREAT | O_EXCL) holding
`host pid start` (start: the process's start time on Linux, so a recycled pid is not taken for
the holder). A second run finds the file and stops with a one-line `RunLockedError` naming the
holder, unless the holder is dead:

- same host: its pid is gone (or now belongs to a process started at another time);
- another host (a shared filesystem): the holder refreshes the file's time every
  `HEARTBEAT_S` seconds, and a lock not refreshed for `STALE_AFTER_S` is taken as dead.

A dead holder's lock is taken over (the new run says so). `release()` removes the file if it is
still ours; the lock is released on every normal exit, exception and Ctrl-C (`with RunLock(...)`),
and after kill -9 the next run takes it over. Advisory: only runs of this trainer look at it.
Under torchrun only rank 0 holds it (`train.py`); the other ranks learn the outcome by broadcast.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from utils.errors import UserError
from utils.io import pid_alive

LOCK_NAME = "run.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class RunLockedError(UserError):
    """Another live run writes into this run folder."""


def process_start(pid: int) -> str:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), '' where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()  # the fields after the command name, from field 3 (state)
    return fields[19] if len(fields) > 19 else ""  # field 22: starttime


def _read(path: str) -> tuple[str, int, str] | None:
    """(host, pid, start) of a lock file, or None when it is gone or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            parts = handle.read().split()
    except OSError:
        return None
    if len(parts) < 2 or not parts[1].isdigit():
        return ("?", 0, "")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


class RunLock:
    """The lock of run folder `folder` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.held = False
        self.took_over: str | None = None  # 'host pid' of a dead holder whose lock this run took over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _holder_dead(self, holder: tuple[str, int, str]) -> bool:
        host, pid, start = holder
        if host == self.host:
            if pid == self.pid:
                return False  # this process already holds it (a second RunLock of the same run)
            return not pid_alive(pid) or (bool(start) and process_start(pid) not in ("", start))
        try:
            age = time.time() - os.path.getmtime(self.path)
        except OSError:
            return True
        return age > self.stale_after_s

    def acquire(self) -> "RunLock":
        """Take the lock (creating the folder), or raise RunLockedError naming the live holder."""
        content = f"{self.host} {self.pid} {process_start(self.pid)}\n".encode()
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as err:  # a file where the folder should be, a read-only filesystem
            raise UserError(f"cannot create the run folder {self.folder}: {err.strerror or err}") from None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if holder is None:
                    continue  # released between our open and read: try again
                if not self._holder_dead(holder):
                    host, pid, _ = holder
                    raise RunLockedError(
                        f"another run (pid {pid} on {host}) is writing into {self.folder}; wait for it to end, or "
                        f"if it is no longer running, remove {self.path}") from None
                self.took_over = f"pid {holder[1]} on {holder[0]}"
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as err:  # a read-only or full filesystem, a file where the folder should be
                raise UserError(f"cannot write into the run folder {self.folder}: "
                                f"{err.strerror or err} ({self.path})") from None
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            self.held = True
            self._start_heartbeat()
            return self
        raise RunLockedError(f"cannot take the lock {self.path}: another run keeps taking it")

    def _start_heartbeat(self) -> None:
        if self.heartbeat_s <= 0:
            return

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except OSError:
                    pass

        self._thread = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if not self.held:
            return
        self.held = False
        self._stop.set()
        holder = _read(self.path)
        if holder is not None and holder[:2] == (self.host, self.pid):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire() if not self.held else self

    def __exit__(self, *exc) -> None:
        self.release()
