"""Transport fixed cost: what each transport adds to a LUT run, besides the measuring itself.

    python -m bench.transport_fixed_cost [--repeats 5]

The measuring is the same on every transport (the same driver and runner on the same CPU), so a
transport's overhead is the work around it: pushing the run directory (the 19 macro-cifar10 artifacts
and the agent), starting the driver, streaming its lines, pulling ``results.jsonl`` and removing the
run directory. This times exactly those calls (real peers as in tests/peers.py), interleaved, and
relates them to the median local LUT wall time of ``bench/results/transport_overhead.json``: a figure
that the machine's load moves far less than whole-run ratios. Writes
``bench/results/transport_fixed_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import RESULTS, write_result
from bench.transport_overhead import devices_file
from chamlab.host import api
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.devices.session import DeviceSession, Task
from chamlab.operators.export import ArtifactCache, ExportItem, export_all
from tests.peers import AdbPeer, AdbServer, Sshd


def one(device: api.DeviceConfig, tasks: list[Task], stage_root: Path, rep: int) -> dict[str, float]:
    transport = device.open()
    session = DeviceSession(device, transport, threads=1)
    stage = stage_root / f"{device.name}-{rep}"
    session.stage(tasks, stage)
    remote = f"{session.workdir()}/fixed-{rep}"
    t = {}
    t0 = time.perf_counter()
    transport.push(stage, remote, timeout_s=600)
    t["push_s"] = time.perf_counter() - t0
    lines: list[str] = []
    t0 = time.perf_counter()
    script = 'i=0; while [ $i -lt 19 ]; do echo chamlab-driver op $i; i=$((i+1)); done; echo x > "$1"'
    res = transport.run(
        ["sh", "-c", script, "sh", f"{remote}/results.jsonl"],
        timeout_s=60,
        on_line=lines.append,
        hold_stdin=True,
    )
    t["run_s"] = time.perf_counter() - t0
    assert res.rc == 0 and len(lines) == 19, res
    t0 = time.perf_counter()
    transport.pull(f"{remote}/results.jsonl", stage_root / f"results-{device.name}-{rep}", timeout_s=60)
    t["pull_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    transport.run(["rm", "-rf", remote], timeout_s=60)
    t["cleanup_s"] = time.perf_counter() - t0
    transport.close()
    t["total_s"] = sum(t.values())
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    names = ["local", "ssh", "adb"]
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="chamlab-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["CHAMLAB_CACHE"] = str(tmp / "cache")
        sshd = Sshd(tmp / "sshd")
        server = AdbServer(tmp / "adb")
        peer = AdbPeer(server, tmp / "peer")
        try:
            reg = parse_devices_file(devices_file(tmp, sshd, peer, "default"))
            space = api.SPACES.get("macro-cifar10")
            items = [ExportItem.for_op(op) for op in api.plan_ops(space, api.default_archs(space)[0])]
            arts, failures = export_all(items, "xnnpack", cache=ArtifactCache())
            assert not failures
            tasks = [Task(i.name, arts[i]) for i in items]
            for rep in range(args.repeats):
                for n in names[rep % 3 :] + names[: rep % 3]:
                    samples[n].append(one(reg.get(n), tasks, tmp / "stage", rep))
        finally:
            peer.stop()
            server.stop()
            sshd.stop()
    medians = {n: {k: statistics.median(s[k] for s in samples[n]) for k in samples[n][0]} for n in names}
    overhead_json = RESULTS / "transport_overhead.json"
    local_lut_s = (
        json.loads(overhead_json.read_text())["summary"]["local"]["median_wall_s"]
        if overhead_json.exists()
        else None
    )
    summary = {}
    for n in ("ssh", "adb"):
        extra = medians[n]["total_s"] - medians["local"]["total_s"]
        summary[n] = {
            "extra_s_per_lut": extra,
            "pct_of_local_lut": 100 * extra / local_lut_s if local_lut_s else None,
        }
        print(
            f"{n}: {medians[n]['total_s']:.2f} s per LUT run vs local {medians['local']['total_s']:.2f} s"
            + (
                f" = {summary[n]['pct_of_local_lut']:+.1f}% of the local LUT's {local_lut_s:.1f} s"
                if local_lut_s
                else ""
            )
        )
    path = write_result(
        "transport_fixed_cost",
        {"args": {"repeats": args.repeats}, "tasks": len(tasks), "medians": medians, "samples": samples,
         "local_lut_wall_s": local_lut_s, "summary": summary, "load_avg_at_end": os.getloadavg()},
        args.out,
    )  # fmt: skip
    print(f"-> {path}")


if __name__ == "__main__":
    main()
