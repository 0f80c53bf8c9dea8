"""Stability: coefficient of variation of repeated measurements of the same op (and network).

    python -m bench.stability [--repeats 10] [--threads 1]

Each repeat is a separate runner process with the device's measurement policy, exactly as
``chamlab profile`` measures an op. For each subject, the CV is ``std / mean`` of the repeats' p50.
Subjects: five macro-cifar10 ops from small to large, and one whole network. Target (issue #2):
median CV over the ops <= 2 %. Writes ``bench/results/stability.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench._common import write_result
from chamlab.chamnet.spaces import SPACES
from chamlab.host.devices.config import load_registry
from chamlab.operators import INVOCATION_PROBE, OPS
from chamlab.operators.export import ExportItem, export_all

OPS_UNDER_TEST = [
    INVOCATION_PROBE.key,
    "pool_linear:cin=1280,num_classes=10,in_h=4,in_w=4",
    "conv_bn_act:cin=3,cout=32,kernel=3,stride=1,in_h=32,in_w=32,act=relu",
    "inverted_residual:cin=64,cout=64,kernel=3,stride=1,expand=3,in_h=16,in_w=16,act=relu",
    "inverted_residual:cin=64,cout=64,kernel=5,stride=1,expand=6,in_h=16,in_w=16,act=relu",
]
NETWORK = "12121221"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = load_registry().get(args.target)
    space = SPACES.get("macro-cifar10")
    items = [ExportItem.for_op(OPS.from_key(k)) for k in OPS_UNDER_TEST]
    net_item = ExportItem.for_network(f"net:macro-cifar10:{NETWORK}", space.ops(space.parse(NETWORK)))
    artifacts, failures = export_all([*items, net_item], device.backend, device.dtype)
    if failures:
        raise SystemExit(f"export failed: {failures}")
    flags = device.measure.to_flags()
    subjects = []
    for item in [*items, net_item]:
        p50s, unstable = [], 0
        for _ in range(args.repeats):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "chamlab.agent.runner",
                    "--model_path",
                    str(artifacts[item].pte_path),
                    "--cpu_threads",
                    str(args.threads),
                    *flags,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            p50s.append(result["p50_ms"])
            unstable += bool(result["unstable"])
        cv = statistics.pstdev(p50s) / statistics.fmean(p50s)
        subjects.append(
            {
                "subject": item.name,
                "kind": "network" if item is net_item else "op",
                "p50s_ms": p50s,
                "mean_p50_ms": statistics.fmean(p50s),
                "cv": cv,
                "unstable_repeats": unstable,
            }
        )
        print(
            f"cv {cv:6.2%}  mean p50 {statistics.fmean(p50s):.4f} ms  unstable {unstable}/{args.repeats}  "
            f"{item.name}",
            flush=True,
        )
    op_cvs = [s["cv"] for s in subjects if s["kind"] == "op"]
    summary = {
        "median_op_cv": statistics.median(op_cvs),
        "max_op_cv": max(op_cvs),
        "network_cv": subjects[-1]["cv"],
    }
    print(
        f"median op CV {summary['median_op_cv']:.2%} (max {summary['max_op_cv']:.2%}); network CV "
        f"{summary['network_cv']:.2%}"
    )
    path = write_result(
        "stability",
        {"args": {**vars(args), "out": str(args.out)}, "summary": summary, "subjects": subjects},
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
