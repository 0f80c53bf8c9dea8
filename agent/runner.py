"""Runner shim: ``executor_runner``-compatible flags, driving the ExecuTorch Python runtime.

    python -m chamlab.agent.runner --model_path op.pte --num_executions 30 --cpu_threads 1 \\
        [--etdump_path op.etdp] [--result_path op.json] [policy flags]

Flags shared with ExecuTorch's ``executor_runner`` keep their meaning: ``--model_path``,
``--method_name``, ``--cpu_threads`` (0 = the runtime's default), ``--etdump_path``. ``--num_executions``
is the *minimum* number of timed executions (the measurement policy may run more to reach
``--min_time_ms``). The other flags are shim-only (``--help`` lists them).

Latency is the wall time of ``ExecuTorchMethod.execute()`` with inputs set once beforehand, so input
conversion and output copies are not timed (as in a C++ runner). When ``--etdump_path`` is given, a
*separate* profiled pass writes an ETDump (profiling adds overhead, so it never feeds the latency
samples); the host parses it with ``executorch.devtools.Inspector`` for a per-op breakdown.

On success the result is one line of JSON written atomically to ``--result_path`` (or stdout), and
the exit code is 0. On failure the message goes to stderr and the exit code is 1 (2 for bad flags).

**Batch mode** (``--tasks tasks.tsv``, used by ``agent/driver.sh`` with ``BATCH=1``): one process
measures every task of the run in turn, so the ~1.5 s of interpreter and runtime start-up is paid
once per run instead of once per op. For each task (``<digest> TAB <key> TAB <artifact>``) not yet
done it appends the driver's crash-safe result line to ``--results`` itself (written, flushed and
fsynced; ending with ``"end":"<rc>:<key>"}``) and prints the driver's progress line
(``chamlab-driver op|skip ...``) on its original standard output. While an op runs:

* ``<out_dir>/inflight`` names it (``<i> TAB <digest> TAB <key>``), so if the process dies (a
  segfault in a kernel, the OOM killer), the driver records exactly that op as failed with its log
  and starts the shim again, which skips it: ops done (``rc 0``) in any run, and ops already tried
  since byte ``--results_from`` of the results (this driver run), are skipped;
* its standard output and error go to ``<out_dir>/<digest>.log`` (the runtime's own messages too);
* a watchdog thread enforces ``--op_timeout_s``: past it, the op is recorded as failed with rc 124
  and the process exits 124 (the driver restarts it for the rest). ``SIGALRM`` a few seconds later
  is the backstop should the op hold the interpreter lock in native code (the process dies, the
  driver records the op as rc 124).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from . import heat as heat_mod
from . import power, probe
from .measure import Measurement, MeasurePolicy, measure, summarize

RESULT_SCHEMA = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m chamlab.agent.runner",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model_path", default=None, help="ExecuTorch program (.pte); required without --tasks")
    p.add_argument("--method_name", default="forward")
    p.add_argument("--cpu_threads", type=int, default=0, help="runtime thread-pool size (0: runtime default)")
    p.add_argument("--etdump_path", default=None, help="write an ETDump of a separate profiled pass here")
    p.add_argument("--etdump_executions", type=int, default=10, help="executions in the profiled pass")
    p.add_argument("--result_path", default=None, help="write the JSON result here (default: stdout)")
    MeasurePolicy.add_arguments(p)  # --num_executions, --warmup_runs, ...: the policy's own fields
    p.add_argument("--cpufreq_root", default=probe.SysfsRoots.cpufreq_root)
    p.add_argument("--thermal_root", default=probe.SysfsRoots.thermal_root)
    p.add_argument("--power_supply_root", default=probe.SysfsRoots.power_supply_root)
    b = p.add_argument_group("batch mode (driven by agent/driver.sh)")
    b.add_argument("--tasks", default=None, help="measure every task of this tasks.tsv in turn")
    b.add_argument("--results", default="results.jsonl", help="append one result line per op here")
    b.add_argument(
        "--results_from", type=int, default=0, help="byte offset where this driver run's lines begin"
    )
    b.add_argument("--out_dir", default="out", help="per-op logs, ETDumps and the in-flight marker")
    b.add_argument("--etdump", action="store_true", help="write <out_dir>/<digest>.etdp for each op")
    b.add_argument("--op_timeout_s", type=float, default=0.0, help="per-op deadline (0: none)")
    b.add_argument("--op_cooldown_s", type=float, default=0.0, help="sleep between ops")
    power.add_arguments(p)  # --power_reader etc.: energy above idle into the result's "energy"
    heat_mod.add_arguments(p)  # --cool_below_c etc.: the gate and frequency check (agent/heat.py)
    return p


def _inputs(meta: Any) -> list[Any]:
    """Deterministic inputs for every input tensor of the method (floats: N(0, 1), others: zeros)."""
    import torch

    dtypes = {
        6: torch.float32,
        5: torch.float16,
        7: torch.float64,
        4: torch.int64,
        3: torch.int32,
        0: torch.uint8,
        1: torch.int8,
        11: torch.bool,
    }
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(meta.num_inputs()):
        info = meta.input_tensor_meta(i)
        dtype = dtypes.get(info.dtype())
        if dtype is None:
            raise RuntimeError(
                f"input {i} has ExecuTorch dtype code {info.dtype()}, which the shim cannot fill"
            )
        shape = tuple(info.sizes())
        out.append(
            torch.randn(shape, generator=gen) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
        )
    return out


def _write_json_atomic(path: str, obj: dict[str, object]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, separators=(",", ":")))
    os.replace(tmp, path)


def _runtime() -> Any:
    """The ExecuTorch runtime bindings.

    ``portable_lib`` (the public module) imports all of ``executorch.exir`` for one warning class,
    which costs seconds per process (``bench/runtime_import.py`` measures it). The runner starts one
    process per op, so it loads the compiled ``_C`` extension directly (after torch, whose libraries
    it links against) and falls back to the public module if a release moves it.
    """
    import torch  # noqa: F401  (loads the libraries _C needs)

    try:
        from executorch.extension.pybindings import _C as rt
    except ImportError:
        from executorch.extension.pybindings import portable_lib as rt
    return rt


def run(args: argparse.Namespace) -> dict[str, object]:
    rt = _runtime()
    if args.cpu_threads > 0:
        rt._unsafe_reset_threadpool(args.cpu_threads)
    return measure_artifact(rt, args, args.model_path, args.etdump_path)


def measure_artifact(
    rt: Any, args: argparse.Namespace, model_path: str, etdump_path: str | None
) -> dict[str, object]:
    """Measure one program with the runtime ``rt`` (thread pool already set) under ``args``' policy."""
    policy = MeasurePolicy.from_namespace(args)
    roots = probe.SysfsRoots(args.cpufreq_root, args.thermal_root, args.power_supply_root)
    threads = rt._threadpool_get_thread_count()
    started = _dt.datetime.now(_dt.UTC)

    program = rt._load_program(model_path)
    method = program.load_method(args.method_name)
    method.set_inputs(_inputs(method.method_meta()))
    # the heat gate and frequency check; ``args.on_cool`` (set per op in batch mode) says it waits
    heat = heat_mod.from_namespace(args)
    result = measure(
        method.execute,
        policy,
        read_temp_c=lambda: probe.temperature_c(roots),
        heat=heat,
        on_cool=getattr(args, "on_cool", None),
    )
    energy = power.energy_for_runner(args, method.execute) if args.power_reader else None
    del method, program

    etdump = None
    if etdump_path:
        module = rt._load_for_executorch(model_path, enable_etdump=True, debug_buffer_size=0)
        inputs = _inputs(module.method_meta(args.method_name))
        for _ in range(max(1, args.etdump_executions)):
            module.run_method(args.method_name, inputs)
        module.write_etdump_result_to_file(etdump_path)
        del module
        etdump = etdump_path

    return result_record(
        result,
        runner="chamlab-shim",
        model_path=model_path,
        threads=threads,
        roots=roots,
        runtime="executorch",
        runtime_version=metadata.version("executorch"),
        fingerprint=probe.fingerprint(),
        etdump_path=etdump,
        energy=energy,
        started=started,
    )


def result_record(
    result: Measurement,
    *,
    runner: str,
    model_path: str,
    threads: int,
    roots: probe.SysfsRoots,
    runtime: str,
    runtime_version: str,
    fingerprint: str,
    etdump_path: str | None,
    energy: object,
    started: _dt.datetime,
    **details: object,
) -> dict[str, object]:
    """The result record (schema :data:`RESULT_SCHEMA`) of one measured program, as every runner of the
    agent writes it: the kept attempt's samples and summary, the machine's state, the runtime;
    ``details``: the runner's own fields (after ``model_path``)."""
    kept = result.kept
    return {
        "schema": RESULT_SCHEMA,
        "runner": runner,
        "model_path": model_path,
        **details,
        "samples_ms": kept.samples_ms,
        **summarize(kept.samples_ms),
        "n_samples": len(kept.samples_ms),
        "warmup_runs": kept.warmup_runs,
        "robust_cv": kept.robust_cv,
        "drift": kept.drift,
        "unstable": result.unstable,
        "unstable_reasons": kept.reasons,
        "attempts": [a.to_json() for a in result.attempts],
        "threads": threads,
        "affinity": probe.affinity(),
        "governor": probe.governor(roots),
        "temp_before_c": kept.temp_before_c,
        "temp_after_c": kept.temp_after_c,
        "throttled": kept.throttled,  # None: the frequency was not checked
        "heat": kept.heat,  # the kept window's heat record (agent/heat.py), None without heat keys
        "battery_pct": probe.battery_pct(roots),
        "runtime": runtime,
        "runtime_version": runtime_version,
        "fingerprint": fingerprint,
        "etdump_path": etdump_path,
        "energy": energy,
        "started_at": started.isoformat(),
        "ended_at": _dt.datetime.now(_dt.UTC).isoformat(),
    }


# -- batch mode ------------------------------------------------------------------------------------
MeasureOne = Callable[[argparse.Namespace, str, "str | None"], dict[str, object]]
_END = re.compile(r'"end":"(-?\d+):([^"]*)"}$')
DEADLINE_RC = 124
BACKSTOP_S = 5  # SIGALRM this long after the watchdog's deadline, should the watchdog never run


def read_tasks(path: str) -> list[tuple[str, str, str]]:
    """``(digest, key, artifact)`` per line of a tasks.tsv."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{n}: expected <digest> TAB <key> TAB <artifact>, got {line!r}")
            out.append((parts[0], parts[1], parts[2]))
    return out


def finished_keys(path: str, results_from: int) -> tuple[set[str], set[str]]:
    """Keys done (a complete line with rc 0 anywhere) and keys tried since byte ``results_from``."""
    done: set[str] = set()
    tried: set[str] = set()
    if not os.path.exists(path):
        return done, tried
    with open(path, "rb") as fh:
        offset = 0
        for raw in fh:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            m = _END.search(line)
            if m:
                if m.group(1) == "0":
                    done.add(m.group(2))
                if offset >= results_from:
                    tried.add(m.group(2))
            offset += len(raw)
    return done, tried


def result_line(rc: int, key: str, digest: str, log: str, etdump: str | None, result: object) -> str:
    """The driver's result line, byte for byte (``end`` last, so a cut line never counts)."""
    rec = {"rc": rc, "op_key": key, "digest": digest, "log": log, "etdump": etdump, "result": result}
    body = json.dumps(rec, separators=(",", ":"))
    return body[:-1] + f',"end":"{rc}:{key}"}}\n'


def _append_synced(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _real_measure(rt: Any) -> MeasureOne:
    def one(args: argparse.Namespace, model_path: str, etdump_path: str | None) -> dict[str, object]:
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file {model_path} does not exist")
        return measure_artifact(rt, args, model_path, etdump_path)

    return one


def _batch_op(
    args: argparse.Namespace,
    measure_one: MeasureOne,
    say: Callable[[str], None],
    task: tuple[int, int, str, str, str],
) -> None:
    """Measure one task of a batch: in-flight marker, log, watchdog, one synced result line."""
    i, total, digest, key, artifact = task
    inflight = os.path.join(args.out_dir, "inflight")
    log = os.path.join(args.out_dir, f"{digest}.log")
    etd = os.path.join(args.out_dir, f"{digest}.etdp") if args.etdump else None
    if etd and os.path.exists(etd):
        os.remove(etd)
    with open(inflight + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(f"{i}\t{digest}\t{key}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(inflight + ".tmp", inflight)
    sys.stdout.flush()
    sys.stderr.flush()
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 1)  # the op's output, the runtime's included, goes to its log
    os.dup2(log_fd, 2)
    os.close(log_fd)
    lock = threading.Lock()
    over = threading.Event()
    args.on_cool = lambda mc: say(f"chamlab-driver cool {i} {total} {mc} {key}")  # the driver's line

    def finish(rc: int, result: object) -> bool:
        """Record the op once (the watchdog and the measurement may race): True if this call did."""
        with lock:
            if over.is_set():
                return False
            over.set()
            etdump = etd if etd and os.path.exists(etd) and os.path.getsize(etd) > 0 else None
            if etd and rc == 0 and etdump is None:
                rc, result = 65, None  # asked for an ETDump and got none: not measured
            _append_synced(args.results, result_line(rc, key, digest, log, etdump, result))
            os.remove(inflight)
            say(f"chamlab-driver op {i} {total} {rc} {key}")
            return True

    def on_deadline() -> None:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"runner: killed after the per-op deadline of {args.op_timeout_s:g} s\n")
        if finish(DEADLINE_RC, None):
            os._exit(DEADLINE_RC)  # the op may still be running: only a new process is clean

    dog = None
    if args.op_timeout_s > 0:
        dog = threading.Timer(args.op_timeout_s, on_deadline)
        dog.daemon = True
        dog.start()
        signal.alarm(math.ceil(args.op_timeout_s) + BACKSTOP_S)
    result: object = None
    try:
        result, rc = measure_one(args, artifact, etd), 0
    except Exception as exc:  # a failed op is data: recorded, and the batch goes on
        print(f"runner: {type(exc).__name__}: {exc}", file=sys.stderr)
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if dog is not None:
        signal.alarm(0)
        dog.cancel()
    if not finish(rc, result):
        threading.Event().wait()  # the watchdog recorded this op and is ending the process


def run_batch(args: argparse.Namespace, measure_one: MeasureOne | None = None) -> int:
    """Measure every task not yet done (see the module docstring); 0 when all were tried."""
    progress_fd = os.dup(1)  # the driver's stdout: progress lines only
    os.dup2(2, 1)  # anything else printed goes to the log in use
    os.makedirs(args.out_dir, exist_ok=True)

    def say(text: str) -> None:
        with contextlib.suppress(OSError):  # the driver's reader went away: the driver itself ends us
            os.write(progress_fd, (text + "\n").encode())

    tasks = read_tasks(args.tasks)
    done, tried = finished_keys(args.results, args.results_from)
    if measure_one is None:
        rt = _runtime()
        if args.cpu_threads > 0:
            rt._unsafe_reset_threadpool(args.cpu_threads)
        measure_one = _real_measure(rt)
    total = len(tasks)
    # an earlier shim of this driver run got as far as the last task it tried: its skips are said
    reached = max((i for i, (_, key, _) in enumerate(tasks, 1) if key in tried), default=0)
    first = True
    for i, (digest, key, artifact) in enumerate(tasks, 1):
        if key in done:
            if key not in tried and i > reached:
                say(f"chamlab-driver skip {i} {total} {key}")
            continue
        if key in tried:
            continue  # failed earlier in this driver run (maybe crashing us): recorded, not retried now
        if not first and args.op_cooldown_s > 0:
            time.sleep(args.op_cooldown_s)
        first = False
        _batch_op(args, measure_one, say, (i, total, digest, key, artifact))
    return 0


def main(argv: list[str] | None = None, *, measure_one: MeasureOne | None = None) -> int:
    """The runner's entry point; ``measure_one`` replaces the measurement in batch mode (tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        MeasurePolicy.from_namespace(args)
    except ValueError as exc:
        parser.error(str(exc))  # exit 2: the host validates policies, so this is a usage error
    if args.tasks is not None:
        return run_batch(args, measure_one)
    return run_single(parser, args, "runner", lambda: run(args))


def run_single(
    parser: argparse.ArgumentParser, args: argparse.Namespace, name: str, run: Callable[[], dict[str, object]]
) -> int:
    """Measure the one program of ``--model_path`` with ``run`` and write its result record to
    ``--result_path`` (atomically) or stdout; exit 1 with one line on stderr if it fails."""
    if args.model_path is None:
        parser.error("--model_path is required (or --tasks for batch mode)")
    if not os.path.isfile(args.model_path):
        print(f"{name}: model file {args.model_path} does not exist", file=sys.stderr)
        return 1
    try:
        result = run()
    except Exception as exc:  # report any runtime failure as data: the driver records the rc
        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.result_path:
        _write_json_atomic(args.result_path, result)
    else:
        print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
