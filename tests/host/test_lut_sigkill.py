"""A host SIGKILLed while it writes a LUT leaves the LUT valid (the previous version): the write goes
to a temporary file beside it that is renamed over it only when complete. The kill happens on an
observed event (the temporary file appearing), never after a sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chamlab.host.luts.lut import Lut

CHILD = r"""
import datetime as dt, sys
from pathlib import Path
from chamlab.host.luts.lut import add_rows, make_row
from chamlab.operators import ConvBNAct

def rows(channels):
    return [
        make_row(ConvBNAct(c, c, 3, 1, 8, 8).key, device="d", backend="xnnpack", dtype="fp32", threads=1,
                 samples_ms=[1.0 + i * 1e-4 for i in range(4000)], run_id="r", unstable=False,
                 robust_cv=0.01, measured_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        for c in channels
    ]

path = Path(sys.argv[1])
add_rows(path, rows(range(1, 4)))
print("v1", flush=True)
add_rows(path, rows(range(4, 300)))  # large: the write takes a while
print("v2", flush=True)
"""


def test_sigkill_during_the_lut_write_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "lut.parquet"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "v1"
    caught = False
    end = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < end:
        if any(n.startswith(".lut.parquet.") and n.endswith(".tmp") for n in os.listdir(tmp_path)):
            os.kill(child.pid, signal.SIGKILL)
            caught = True
            break
    child.wait()
    assert caught, "the child finished before its write was seen"
    lut = Lut.read(path)  # valid, and the previous version
    assert lut.table.num_rows == 3 and not lut.problems()
