"""Fault recovery: the macro-cifar10 LUT on the adb peer, the peer killed 3 times mid-run.

    python -m bench.fault_recovery [--kills 3] [--policy fast|default]

Starts the real adb server and the device-side adb peer (tests/peers.py; the stand-in for a phone).
Attempt k kills the peer (SIGKILL: a dead phone or a pulled cable) when the driver reports its
(4k)-th op, counting the ops skipped as done before; then the peer is restarted with the same serial
and the same command runs again, as a user would. The last attempt runs to the end. Counts the LUT's
rows: lost = planned ops missing from the LUT, duplicated = rows beyond one per op; and how many ops
were measured more than once (the ops in flight when the peer died). Writes
``bench/results/fault_recovery.json``.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench._common import write_result
from bench.transport_overhead import POLICIES
from chamlab.host import api
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.devices.session import RunInterrupted
from tests.peers import AdbPeer, AdbServer


class KillAt:
    """Progress that kills the peer when the n-th op (measured or skipped) is reported."""

    def __init__(self, peer: AdbPeer, n: int | None) -> None:
        self.peer, self.n, self.seen = peer, n, 0

    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, label: str = "") -> None:
        if phase != "measure":
            return
        self.seen += 1
        if self.n is not None and self.seen == self.n:
            self.peer.kill()

    def note(self, text: str) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--policy", choices=sorted(POLICIES), default="fast")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    attempts = []
    with tempfile.TemporaryDirectory(prefix="chamlab-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["CHAMLAB_CACHE"] = str(tmp / "cache")
        server = AdbServer(tmp / "adb")
        peer = AdbPeer(server, tmp / "peer")
        try:
            devices = tmp / "devices.toml"
            text = peer.devices_toml("peer")
            if POLICIES[args.policy]:
                text += f"[devices.peer.measure]\n{POLICIES[args.policy]}"
            devices.write_text(text)
            spec = api.resolve_run(parse_devices_file(devices).get("peer"))
            space = api.SPACES.get("macro-cifar10")
            lut = tmp / "lut.parquet"
            for k in range(args.kills + 1):
                kill_at = 4 * (k + 1) if k < args.kills else None
                progress = KillAt(peer, kill_at)
                t0 = time.perf_counter()
                try:
                    report = api.profile(spec, space, None, out=lut, progress=progress)
                    outcome = {
                        "completed": True,
                        "failed_ops": len(report.failed),
                        "measured": len(report.measured),
                    }
                except RunInterrupted as exc:
                    outcome = {
                        "completed": False,
                        "done": exc.done,
                        "failed": exc.failed,
                        "missing": exc.missing,
                    }
                    peer.start()  # the phone is back (same serial)
                attempts.append({"kill_at_op": kill_at, "wall_s": time.perf_counter() - t0, **outcome})
                print(f"attempt {k + 1}: {attempts[-1]}", flush=True)
            table = pq.read_table(lut)
            keys = table.column("op_key").to_pylist()
            planned = len(api.plan_ops(space, api.default_archs(space)[0]))
        finally:
            peer.stop()
            server.stop()
    counts = collections.Counter(keys)
    result = {
        "planned_ops": planned,
        "lut_rows": len(keys),
        "lost_rows": planned - len(counts),
        "duplicated_rows": sum(c - 1 for c in counts.values()),
        "kills": args.kills,
        "attempts": attempts,
    }
    print(
        f"{args.kills} kills: {result['lut_rows']} rows for {planned} ops, lost {result['lost_rows']}, "
        f"duplicated {result['duplicated_rows']}"
    )
    path = write_result(
        "fault_recovery", {"args": {"kills": args.kills, "policy": args.policy}, **result}, args.out
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
