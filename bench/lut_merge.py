"""LUT merge: seconds and peak memory to merge 10 LUTs of 10k rows each.

    python -m bench.lut_merge [--luts 10] [--rows 10000] [--samples 30] [--repeats 3]

Scenarios (each run ``--repeats`` times, every time in a fresh interpreter, median reported):

* ``same keys, newest``: 10 nightly runs of one device, every row key in every LUT (90k conflicts);
* ``same keys, pooled``: the same inputs, samples of all 10 runs pooled per key;
* ``disjoint devices, newest``: 10 devices, no key in common (the output holds 100k rows);
* ``..., folded``: the inputs merged one at a time into the merge so far (merging is associative,
  so the result is the same): less memory, more time; ``merge_files`` merges all at once;
* ``chamlab lut merge, end to end``: the same-keys merge as the console script, timed from the
  outside (interpreter start and imports included; peak RSS from ``os.wait4``);
* ``naive baseline``: the same-keys inputs merged the way a row loop would, ``Lut.read`` (its
  per-row checks) and ``Lut.upsert`` one file after the other: the ratio to ``same keys, newest``
  shows what the vectorised merge buys.

A worker reads, checks, merges and writes (``chamlab.host.luts.lifecycle.merge_files``, the code behind
``chamlab lut merge``), and reports wall seconds, the peak of Arrow's memory pool and the process's
peak RSS (``resource.getrusage``'s ``ru_maxrss``, imports included; the RSS after the imports is
reported too). tracemalloc is left off: it slows every Python allocation and would distort the
seconds, and Arrow's buffers (most of the memory) are outside its view anyway. Writes
``bench/results/lut_merge.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import write_result

SCENARIOS = (
    "same keys, newest",
    "same keys, pooled",
    "disjoint devices, newest",
    "same keys, newest, folded",
    "disjoint devices, newest, folded",
    "naive baseline",
    "chamlab lut merge, end to end",
)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(folder: Path, n_luts: int, n_rows: int, n_samples: int, seed: int) -> dict[str, list[Path]]:
    """Write the input LUTs: ``same/`` (one device, n_luts runs) and ``disjoint/`` (n_luts devices)."""
    import numpy as np
    import pyarrow as pa

    from chamlab.host.luts.lifecycle import LutFile, write_lut_file
    from chamlab.host.luts.lut import Lut, make_row
    from chamlab.operators import ConvBNAct

    rng = np.random.default_rng(seed)
    keys = []
    for cin in range(1, 200):
        for cout in range(1, 200):
            for kernel, stride in ((3, 1), (3, 2), (5, 1), (5, 2)):
                keys.append(ConvBNAct(cin, cout, kernel, stride, 32, 32).key)
                if len(keys) == n_rows:
                    break
            if len(keys) == n_rows:
                break
        if len(keys) == n_rows:
            break
    base = (
        Lut.empty()
        .upsert(
            make_row(k, device="phone", backend="xnnpack", dtype="fp32", threads=1, samples_ms=[1.0])
            for k in keys
        )
        .table
    )
    out: dict[str, list[Path]] = {"same": [], "disjoint": []}
    for layout in out:
        (folder / layout).mkdir()
        for i in range(n_luts):
            device = "phone" if layout == "same" else f"phone-{i}"
            run = f"run-{layout}-{i:02d}"
            centre = rng.uniform(0.05, 20.0, n_rows)
            samples = centre[:, None] * rng.lognormal(0.0, 0.05, (n_rows, n_samples))
            q = np.percentile(samples, [10, 50, 90], axis=1)
            med = q[1]
            cv = 1.4826 * np.median(np.abs(samples - med[:, None]), axis=1) / med
            when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i)
            cols = {
                "device": pa.array([device] * n_rows),
                "p10_ms": pa.array(q[0]),
                "p50_ms": pa.array(med),
                "p90_ms": pa.array(q[2]),
                "mean_ms": pa.array(samples.mean(axis=1)),
                "std_ms": pa.array(samples.std(axis=1)),
                "n_samples": pa.array(np.full(n_rows, n_samples, dtype=np.int32)),
                "samples_ms": pa.array(list(samples), type=pa.list_(pa.float64())),
                "robust_cv": pa.array(cv),
                "unstable": pa.array(cv > 0.05),
                "run_id": pa.array([run] * n_rows),
                "measured_at": pa.array([when] * n_rows, type=pa.timestamp("us", tz="UTC")),
                "runtime_version": pa.array(["1.5.1"] * n_rows),
                "device_fingerprint": pa.array(
                    [f"lab|Qualcomm SM8450|Linux 5.10.{i}-android aarch64"] * n_rows
                ),
            }
            t = base
            for name, arr in cols.items():
                t = t.set_column(t.schema.get_field_index(name), name, arr)
            prov = [{"run_id": run, "device": device, "created_at": when.isoformat(), "rows": n_rows}]
            path = folder / layout / f"{i:02d}.parquet"
            lut = Lut(t, prov)
            write_lut_file(path, LutFile(lut, {"chamlab.provenance": prov}))
            out[layout].append(path)
    return out


def worker(scenario: str, inputs: list[Path], out: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.acero  # group_by/join import it lazily, with pandas (~0.4 s): not timed

    from chamlab.host.luts.lifecycle import (
        LutFile,
        Policy,
        merge_files,
        merge_luts,
        read_lut_file,
        write_lut_file,
    )
    from chamlab.host.luts.lut import Lut

    rss_after_imports = _rss_mib()
    pool = pa.default_memory_pool()
    t0 = time.perf_counter()
    if scenario == "naive baseline":
        lut = Lut.empty()
        for path in inputs:
            other = Lut.read(path)
            lut = lut.upsert(other.table.to_pylist(), None)
        lut.write(out)
        rows_out = len(lut)
    elif scenario.endswith("folded"):
        acc: LutFile | None = None
        for path in inputs:
            lf = read_lut_file(path)
            acc = lf if acc is None else merge_luts([acc, lf])[0]
        assert acc is not None
        write_lut_file(out, acc)
        rows_out = len(acc.lut)
    else:
        policy = Policy.POOLED if "pooled" in scenario else Policy.NEWEST
        rows_out = merge_files(inputs, out, policy).rows_out
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows_out": rows_out,
        "arrow_peak_mib": pool.max_memory() / 2**20,
        "rss_after_imports_mib": rss_after_imports,
        "peak_rss_mib": _rss_mib(),
        "arrow_backend": pool.backend_name,
    }


def _cli_run(files: list[Path], merged: Path) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("chamlab")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), "lut", "merge", *map(str, files), "-o", str(merged), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"chamlab lut merge failed with exit {proc.returncode}")
    return {
        "seconds": seconds,
        "rows_out": json.loads(out)["rows_out"],
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "output_mib": merged.stat().st_size / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--luts", type=int, default=10)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=30, help="samples per row (MeasurePolicy's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--inputs", nargs="*", type=Path, default=[], help=argparse.SUPPRESS)
    ap.add_argument("--merged", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.inputs, args.merged)))
        return
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lut-merge-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        inputs = make_inputs(folder, args.luts, args.rows, args.samples, args.seed)
        print(f"inputs written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        input_mib = sum(p.stat().st_size for p in inputs["same"]) / 2**20
        results = []
        for scenario in SCENARIOS:
            files = inputs["disjoint" if scenario.startswith("disjoint") else "same"]
            runs = []
            for _ in range(args.repeats):
                merged = folder / "merged.parquet"
                if scenario.startswith("chamlab"):
                    runs.append(_cli_run(files, merged))
                    merged.unlink()
                    continue
                res = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        scenario,
                        "--merged",
                        str(merged),
                        "--inputs",
                        *map(str, files),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(res.stdout))
                runs[-1]["output_mib"] = merged.stat().st_size / 2**20
                merged.unlink()
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
            results.append(
                {
                    "scenario": scenario,
                    "rows_in": args.luts * args.rows,
                    "rows_out": runs[0]["rows_out"],
                    **med,
                    "runs": runs,
                }
            )
            print(
                f"{scenario}: {med['seconds']:.2f} s, peak RSS {med['peak_rss_mib']:.0f} MiB", file=sys.stderr
            )
    fast = next(r for r in results if r["scenario"] == "same keys, newest")["seconds"]
    naive = next(r for r in results if r["scenario"] == "naive baseline")["seconds"]
    path = write_result(
        "lut_merge",
        {
            "args": {
                k: v for k, v in vars(args).items() if k in ("luts", "rows", "samples", "repeats", "seed")
            },
            "input_mib_per_scenario": input_mib,
            "load_avg_at_start": load,
            "naive_over_vectorised": naive / fast,
            "scenarios": results,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
