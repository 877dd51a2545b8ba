"""Run by tests/test_elastic.py under torchrun: rank 1 dies right after joining the group in each of the
first `--deaths` attempts; the attempt after them all-reduces and prints 'attempt N sum S'."""
from __future__ import annotations

import os
import signal
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.dist import init_from_env  # noqa: E402

deaths = int(sys.argv[sys.argv.index("--deaths") + 1])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
init_from_env("cpu", timeout_s=30)
value = torch.ones(1)
dist.all_reduce(value)  # the group is connected
if attempt < deaths:
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    dist.all_reduce(value)  # fails: the peer is gone; torchrun restarts the group
# One write() per line: the two ranks share torchrun's stdout pipe, and print() can interleave them.
os.write(1, f"attempt {attempt} rank {dist.get_rank()} sum {value.item():g}\n".encode())
dist.destroy_process_group()
