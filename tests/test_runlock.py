"""The run folder's lock (utils/runlock.py): one holder, refused while it lives, taken over when it is dead."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from utils.runlock import LOCK_NAME, RunLock, RunLockedError, process_start


def test_second_lock_is_refused_naming_the_holder_and_released_on_exit(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {holder.pid} {process_start(holder.pid)}\n")
        with pytest.raises(RunLockedError, match=f"another run \\(pid {holder.pid} on {socket.gethostname()}\\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path, heartbeat_s=0) as lock:  # its holder is dead now: taken over, and said so
        assert lock.took_over == f"pid {holder.pid} on {socket.gethostname()}"
        assert (tmp_path / LOCK_NAME).read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
    assert not (tmp_path / LOCK_NAME).exists()


def test_recycled_pid_is_not_the_holder(tmp_path):
    """Same host, a live pid that started at another time than the one in the lock: the holder is dead."""
    (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {os.getppid()} 1\n")  # our parent, another start
    if not process_start(os.getppid()):
        pytest.skip("no /proc/<pid>/stat here")
    lock = RunLock(tmp_path, heartbeat_s=0).acquire()
    assert lock.took_over is not None
    lock.release()


def test_another_hosts_lock_is_stale_only_when_not_refreshed(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text("other-node 4242 99\n")
    with pytest.raises(RunLockedError, match="pid 4242 on other-node"):
        RunLock(tmp_path, stale_after_s=600).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))  # not refreshed for an hour: its node is gone
    lock = RunLock(tmp_path, heartbeat_s=0, stale_after_s=600).acquire()
    assert lock.took_over == "pid 4242 on other-node"
    lock.release()


def test_heartbeat_refreshes_the_lock(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0.05).acquire()
    path = tmp_path / LOCK_NAME
    old = time.time() - 3600
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - os.path.getmtime(path) < 60
    lock.release()
    assert not path.exists()


@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_a_folder_that_cannot_be_made_is_one_line(where, tmp_path):
    from utils.errors import UserError

    (tmp_path / "blocker").write_text("x")
    folder = tmp_path / "blocker" if where == "is a file" else tmp_path / "blocker" / "run"
    with pytest.raises(UserError, match=f"cannot (create|write into) the run folder {folder}"):
        RunLock(folder).acquire()
