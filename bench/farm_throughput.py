"""Farm controller throughput: devices per minute with 1, 2, 4, 8 (and 16, 32) emulated devices.

    python -m bench.farm_throughput [--devices 1 2 4 8 16 32] [--sleep-s 0.5] [--repeats 3] [--arch 11111111]

Each emulated device is a ``local`` device whose runner is a *stand-in*: the shim's ``python`` points
at a small Python script that runs the agent's own batch loop (staged by the driver, as on a device)
with the measurement replaced by a ``--sleep-s`` sleep and a fixed result. So the real controller
path runs end to end (farm lock, pre-flight through the transport, staging and pushing the run
directory, the POSIX driver and its device lock, pulling and parsing results, the LUT write under its
lock, drift, reports), but no ExecuTorch runner burns this 2-core machine's CPU: with the real shim,
8 devices would measure the CPU contention of 8 runners, not the controller. A device's pure runner
time is ``ops x sleep``; what the farm adds on top is the controller's cost.

Every repeat uses fresh device names and a fresh farm folder (nothing is resumed), with the artifact
cache warmed first. Reported per device count: median wall seconds of the whole ``run_farm``,
devices per minute, the ideal (``60 / (ops x sleep)`` per device, times the device count) and the
efficiency (achieved / ideal), and the CPU seconds the controller and its children (drivers,
stand-ins) spent per device, which is what limits scaling on a small machine, and the CPU seconds
of the controller process alone (its device threads share one GIL: the serial part). Writes
``bench/results/farm_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

STAND_IN = """#!{python}
# stand-in for `python -m chamlab.agent.runner ...`: the agent's own batch loop (staged on PYTHONPATH
# by runner.sh) with the measurement replaced by a sleep and a fixed value
import sys, time
from chamlab.agent import runner


def measure_one(args, model_path, etdump_path):
    time.sleep({sleep_s})
    return {{"samples_ms": [{ms}] * 5, "robust_cv": 0.0, "unstable": False}}


argv = sys.argv[1:]
if argv[:2] == ["-m", "chamlab.agent.runner"]:
    argv = argv[2:]
sys.exit(runner.main(argv, measure_one=measure_one))
"""


def _cpu_s() -> tuple[float, float]:
    """User + system CPU seconds of this process (the controller: its threads share one GIL) and of
    its finished children (drivers, shells, stand-ins)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def devices_toml(names: list[str], stand_in: Path) -> str:
    out = []
    for name in names:
        out.append(
            f'[devices.{name}]\ntransport = "local"\npython = "{stand_in}"\ntags = ["bench"]\n'
            f"[devices.{name}.measure]\nnum_executions = 5\nwarmup_runs = 1\nwarmup_ms = 0\n"
            "min_time_ms = 1\nretries = 0\n"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--sleep-s", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arch", default="11111111", help="macro-cifar10 arch whose ops each device profiles")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="chamlab-bench-farm-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ.setdefault("CHAMLAB_CACHE", str(tmp / "cache"))
        from bench._common import write_result
        from chamlab.chamnet.spaces import SPACES
        from chamlab.host.devices.config import parse_devices_file
        from chamlab.host.measurement.profiling import plan_ops
        from chamlab.host.workflows.farm import run_farm

        space = SPACES.get("macro-cifar10")
        ops = len(plan_ops(space, [space.resolve(args.arch)]))
        stand_in = tmp / "stand-in-python"
        ms = args.sleep_s * 1000
        stand_in.write_text(STAND_IN.format(python=sys.executable, sleep_s=args.sleep_s, ms=ms))
        stand_in.chmod(0o755)
        runs: dict[int, list[float]] = {}
        statuses: dict[int, list[str]] = {}
        cpus: dict[int, list[float]] = {}
        own_cpus: dict[int, list[float]] = {}
        for rep in range(args.repeats + 1):  # repeat 0 warms the artifact cache and imports: not kept
            for n in args.devices:
                names = [f"bench-r{rep}-n{n}-d{i}" for i in range(n)]
                toml = tmp / f"devices-{rep}-{n}.toml"
                toml.write_text(devices_toml(names, stand_in))
                own0, kids0 = _cpu_s()
                t0 = time.perf_counter()
                report = run_farm(
                    parse_devices_file(toml), space.name, out=tmp / f"farm-{rep}-{n}", archs=[args.arch]
                )
                wall = time.perf_counter() - t0
                own1, kids1 = _cpu_s()
                own, cpu = own1 - own0, own1 - own0 + kids1 - kids0
                st = sorted({e["status"] for e in report.devices.values()})
                if st != ["ok"]:
                    raise SystemExit(f"devices did not all finish ok: {report.to_json()['devices']}")
                if rep:
                    runs.setdefault(n, []).append(wall)
                    cpus.setdefault(n, []).append(cpu)
                    own_cpus.setdefault(n, []).append(own)
                    statuses.setdefault(n, []).extend(st)
                print(f"repeat {rep} devices {n}: {wall:.2f} s", file=sys.stderr)
        per_device_s = ops * args.sleep_s
        rows = []
        for n in args.devices:
            med = statistics.median(runs[n])
            achieved = n * 60.0 / med
            ideal = n * 60.0 / per_device_s
            rows.append(
                {
                    "devices": n,
                    "wall_s": runs[n],
                    "median_wall_s": round(med, 3),
                    "devices_per_min": round(achieved, 2),
                    "ideal_devices_per_min": round(ideal, 2),
                    "efficiency": round(achieved / ideal, 3),
                    "overhead_s": round(med - per_device_s, 3),
                    "cpu_s": [round(c, 3) for c in cpus[n]],
                    "median_cpu_s_per_device": round(statistics.median(cpus[n]) / n, 3),
                    "controller_cpu_s": [round(c, 3) for c in own_cpus[n]],
                    "median_controller_cpu_s": round(statistics.median(own_cpus[n]), 3),
                }
            )
        path = write_result(
            "farm_throughput",
            {
                "ops_per_device": ops,
                "sleep_s_per_op": args.sleep_s,
                "runner_s_per_device": per_device_s,
                "repeats": args.repeats,
                "arch": args.arch,
                "results": rows,
            },
            args.out,
        )
        for r in rows:
            print(
                f"{r['devices']} devices: median {r['median_wall_s']:.2f} s, "
                f"{r['devices_per_min']:.1f} devices/min "
                f"(ideal {r['ideal_devices_per_min']:.1f}, efficiency {r['efficiency']:.2f})"
            )
        print(f"-> {path}")


if __name__ == "__main__":
    main()
