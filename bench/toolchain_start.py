"""What starting the ExecuTorch toolchain costs an export worker, and what chamlab does about it.

    python -m bench.toolchain_start [--repeats 3] [--out PATH]

Every export runs in a worker process (``chamlab.operators.export``), and each worker imports the
toolchain before it lowers anything. Three measurements, each the median of ``--repeats``:

1. ``import executorch.exir`` (and the XNNPACK partitioner) in a fresh interpreter: wall seconds.
2. The part of that import that parses ExecuTorch's edge-op table (``exir/dialects/edge/edge.yaml``)
   with ``ruamel.yaml``: the pure-Python parser against the C one of ``ruamel.yaml.clib`` (a chamlab
   dependency since 2026-12-07; without it ruamel.yaml falls back to pure Python). Both parses are
   checked to give the same data.
3. Three programs exported one after another, as ``adapt`` exports its winner, the final weights and
   their int8 sibling: each in its own worker (``export_program`` outside a block) against one shared
   worker (inside :func:`chamlab.operators.export.export_worker`): wall seconds and the workers' CPU
   seconds, interleaved, and the programs' bytes compared.
4. Three workers started at once that each need the toolchain (as ``adapt --oracle train --workers 2``
   starts two training workers and an export worker): spawned, as ``chamlab.core.procs.process_pool``
   starts them today, against forked from a ``forkserver`` that imported the toolchain once
   (``set_forkserver_preload``): wall seconds of a fresh interpreter that starts and joins them,
   interleaved. Wall only: the fork server is not waited for, so its CPU is not in ``RUSAGE_CHILDREN``.
   Not what chamlab does: the measurement behind a lead in docs/development.md.

Writes ``bench/results/toolchain_start.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import write_result

IMPORT = (
    "import executorch.exir; "
    "from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner"
)


def _import_seconds(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORT], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def _yaml_seconds(repeats: int) -> dict[str, Any]:
    from importlib import resources

    from ruamel.yaml import YAML

    text = resources.files("executorch.exir.dialects.edge").joinpath("edge.yaml").read_text(encoding="utf-8")
    out: dict[str, Any] = {"bytes": len(text.encode())}
    data = {}
    for name, pure in (("pure-python", True), ("libyaml (ruamel.yaml.clib)", False)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            data[name] = YAML(typ="safe", pure=pure).load(text)
            times.append(time.perf_counter() - t0)
        out[name] = {"median_s": statistics.median(times), "times_s": times}
    first, second = data.values()
    out["same_data"] = first == second
    return out


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


#: a fresh interpreter that starts three workers of one multiprocessing context (argv[1]), each
#: importing the toolchain, and joins them; ``forkserver`` preloads the toolchain in the fork server
THREE_WORKERS = """
import importlib, multiprocessing as mp, sys
mods = ["executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner"]
ctx = mp.get_context(sys.argv[1])
if sys.argv[1] == "forkserver":
    ctx.set_forkserver_preload(mods)
ps = [ctx.Process(target=importlib.import_module, args=(mods[1],)) for _ in range(3)]
for p in ps:
    p.start()
for p in ps:
    p.join()
sys.exit(0 if all(p.exitcode == 0 for p in ps) else 1)  # a killed worker (exitcode < 0) fails
"""


def _three_workers(kind: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", THREE_WORKERS, kind], check=True, capture_output=True)
    return time.perf_counter() - t0


def _three_exports(shared: bool, folder: Path) -> dict[str, Any]:
    from chamlab.chamnet.spaces import SPACES
    from chamlab.host.measurement.networks import network_item
    from chamlab.operators.export import export_program, export_worker

    space = SPACES.get("macro-cifar10")
    archs = list(space.references.values())[:3]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    digests = []
    with export_worker() if shared else contextlib.nullcontext():
        for i, arch in enumerate(archs):
            item = network_item(space, arch, 1)
            pte = folder / f"{'shared' if shared else 'own'}-{i}.pte"
            export_program(item, "xnnpack", pte, pte.with_suffix(".etrecord"))
            digests.append(hashlib.sha256(pte.read_bytes()).hexdigest())
    return {"wall_s": time.perf_counter() - t0, "worker_cpu_s": _children_cpu() - cpu0, "digests": digests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    imports = _import_seconds(args.repeats)
    print(f"{statistics.median(imports):6.2f} s  import executorch.exir + XNNPACK partitioner", flush=True)
    yaml = _yaml_seconds(args.repeats)
    for name in ("pure-python", "libyaml (ruamel.yaml.clib)"):
        print(f"{yaml[name]['median_s']:6.2f} s  edge.yaml, {name}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"own worker each": [], "one shared worker": []}
    with tempfile.TemporaryDirectory(prefix="toolchain-start-") as tmp:
        for _ in range(args.repeats):
            runs["own worker each"].append(_three_exports(False, Path(tmp)))
            runs["one shared worker"].append(_three_exports(True, Path(tmp)))
    exports = {}
    for name, rs in runs.items():
        exports[name] = {
            "median_wall_s": statistics.median(r["wall_s"] for r in rs),
            "median_worker_cpu_s": statistics.median(r["worker_cpu_s"] for r in rs),
            "runs": rs,
        }
        wall, cpu = exports[name]["median_wall_s"], exports[name]["median_worker_cpu_s"]
        print(f"{wall:6.1f} s wall, {cpu:6.1f} s worker CPU  three exports, {name}", flush=True)
    digests = {tuple(r["digests"]) for rs in runs.values() for r in rs}
    starts: dict[str, list[float]] = {"spawn": [], "forkserver": []}
    for _ in range(args.repeats):
        for kind, times in starts.items():
            times.append(_three_workers(kind))
    workers = {kind: {"median_wall_s": statistics.median(t), "times_s": t} for kind, t in starts.items()}
    for kind, w in workers.items():
        print(f"{w['median_wall_s']:6.1f} s wall  three workers importing the toolchain, {kind}", flush=True)
    result = {
        "repeats": args.repeats,
        "import": {"code": IMPORT, "median_s": statistics.median(imports), "times_s": imports},
        "edge_yaml": yaml,
        "exports": exports,
        "three_workers": workers,
        "same_programs": len(digests) == 1,
    }
    path = write_result("toolchain_start", result, args.out)
    print(f"wrote {path}")
    if not (yaml["same_data"] and result["same_programs"]):
        sys.exit("the variants differ: see the result file")


if __name__ == "__main__":
    main()
