"""Transport overhead: the macro-cifar10 LUT profiled locally, over ssh and over adb, interleaved.

    python -m bench.transport_overhead [--rounds 3] [--policy default|fast]

Starts the same real peers as the tests (tests/peers.py): an OpenSSH server on 127.0.0.1 and the adb
server plus the device-side adb peer (the stand-in for a phone). All three "devices" are this machine,
with the shim runner of this .venv, so the only difference is the transport. The artifact cache is
warmed first; then each round profiles all 19 ops into a fresh LUT on local, ssh and adb (in a rotated
order), and the overhead is each remote run's wall time over the local run of the SAME round (the
machine is shared: ratios from one round, medians over rounds). Writes
``bench/results/transport_overhead.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import write_result
from chamlab.host import api
from chamlab.host.devices.config import parse_devices_file
from tests.peers import AdbPeer, AdbServer, Sshd

POLICIES = {
    "default": "",  # MeasurePolicy's defaults, as local-cpu in the repository's devices.toml
    "fast": "num_executions = 5\nwarmup_runs = 1\nwarmup_ms = 0\nmin_time_ms = 10\nretries = 0\n",
}


def devices_file(folder: Path, sshd: Sshd, peer: AdbPeer, policy: str) -> Path:
    text = '[devices.local]\ntransport = "local"\n' + sshd.devices_toml("ssh") + peer.devices_toml("adb")
    if POLICIES[policy]:
        text += "".join(f"[devices.{n}.measure]\n{POLICIES[policy]}" for n in ("local", "ssh", "adb"))
    path = folder / "devices.toml"
    path.write_text(text)
    return path


def run_once(device: api.DeviceConfig, lut: Path) -> dict:
    space = api.SPACES.get("macro-cifar10")
    t0 = time.perf_counter()
    report = api.profile(api.resolve_run(device), space, None, out=lut)
    wall = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"{device.name}: profiling failed: {report.failed[:3]}")
    return {"ops": len(report.measured), "wall_s": wall, "measure_s": report.measure_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--policy", choices=sorted(POLICIES), default="default")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chamlab-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["CHAMLAB_CACHE"] = str(tmp / "cache")
        sshd = Sshd(tmp / "sshd")
        server = AdbServer(tmp / "adb")
        peer = AdbPeer(server, tmp / "peer")
        try:
            reg = parse_devices_file(devices_file(tmp, sshd, peer, args.policy))
            names = ["local", "ssh", "adb"]
            run_once(reg.get("local"), tmp / "warmup.parquet")  # warms the artifact cache
            rounds = []
            for r in range(args.rounds):
                order = names[r % 3 :] + names[: r % 3]
                res = {n: run_once(reg.get(n), tmp / f"r{r}-{n}.parquet") for n in order}
                res["order"] = order  # type: ignore[assignment]
                rounds.append(res)
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{n} {res[n]['wall_s']:.1f} s" for n in names)
                    + f" (order {', '.join(order)})",
                    flush=True,
                )
        finally:
            peer.stop()
            server.stop()
            sshd.stop()
    summary = {}
    for n in ("ssh", "adb"):
        ratios = [rd[n]["wall_s"] / rd["local"]["wall_s"] for rd in rounds]
        summary[n] = {
            "median_ratio_to_local": statistics.median(ratios),
            "ratios": ratios,
            "median_overhead_pct": 100 * (statistics.median(ratios) - 1),
        }
    summary["local"] = {"median_wall_s": statistics.median(rd["local"]["wall_s"] for rd in rounds)}
    for n in ("ssh", "adb"):
        print(f"{n}: median {summary[n]['median_overhead_pct']:+.1f}% over local")
    path = write_result(
        "transport_overhead",
        {"args": {"rounds": args.rounds, "policy": args.policy}, "rounds": rounds, "summary": summary,
         "load_avg_at_end": os.getloadavg()},
        args.out,
    )  # fmt: skip
    print(f"-> {path}")


if __name__ == "__main__":
    main()
