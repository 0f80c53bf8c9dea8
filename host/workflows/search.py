"""``search``: the most accurate architecture under a latency (and energy) limit, by BO (docs/search.md).

What ``chamlab search`` does, as a library function (``api.search``) that ``adapt`` shares:

* :func:`check_run` refuses, before anything is created, what no run can use: a negative seed, a
  budget below the initial design, an ``--out`` that is not a writable folder;
* :func:`choose_rows` picks the LUT rows a network space is predicted from exactly as ``chamlab
  predict`` picks them (:func:`~chamlab.host.prediction.predict.choose_measurement_set`: unset
  dtype and threads from the target's devices.toml);
* :func:`network_problem` builds the problem: the space's oracle, the latency of each arch predicted
  once (:class:`~chamlab.host.prediction.predict.CachedPrediction`, calibrated as ``predict`` is);
* :func:`out_lock` serialises runs into one ``--out``: a second run into a folder in use waits
  for the first (and then resumes its history), or with ``no_wait`` exits 2 at once, as a second
  run on a busy device does. The lock is ``.<name>.lock`` beside the folder (so a refused run
  creates no folder);
* :func:`search` runs (or resumes) the BO loop (:func:`chamlab.chamnet.search.run.search`).

Several thread counts (``threads=(1, 2)``, ``--threads 1,2``) search (arch, threads) pairs
(:mod:`chamlab.host.workflows.threads`): the rows of each thread count predict its latency, the loop's
``latency_ms`` is the lowest of them (each is kept as ``latency_ms@N`` in the history), and the result
adds ``threads`` (the winner's: where its predicted latency is lowest), ``threads_searched`` and
``per_threads`` (the best queried arch under the limit at each thread count).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chamlab.chamnet.search.engine import EngineConfig, EngineState
from chamlab.chamnet.search.problem import Oracle, Problem, table_problem
from chamlab.chamnet.search.run import DEFAULT_BUDGET, RESULT, SearchResult
from chamlab.chamnet.spaces.base import SearchSpace
from chamlab.core.errors import InputError
from chamlab.core.files import check_writable, ensure_dir
from chamlab.core.locks import FileLock
from chamlab.host.luts.lut import Lut, MeasurementSet
from chamlab.host.measurement.pipeline import NullProgress, Progress
from chamlab.host.prediction.predict import CachedPrediction, LatencyModel, choose_measurement_set, find_lut


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """What ``chamlab search`` takes besides the space and the oracle (defaults: docs/cli.md)."""

    latency_ms: float
    energy_mj: float | None = None  # table spaces with an energy_mj column
    budget: int = DEFAULT_BUDGET
    seed: int = 0
    out: Path | None = Path("search")
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    # network spaces: the LUT and which of its rows
    lut_path: Path | None = None
    target: str | None = None
    threads: int | tuple[int, ...] | None = None  # several: searched jointly (module docstring)
    dtype: str | None = None
    batch: int = 1
    raw: bool = False
    devices: Path | None = None  # the devices.toml whose defaults pick the rows
    no_wait: bool = False  # a --out in use by another run: exit 2 at once instead of waiting


def check_seed(seed: int) -> None:
    if seed < 0:
        raise InputError(f"--seed must be 0 or more, got {seed}")


def check_budget(budget: int, engine: EngineConfig, *, init_flag: bool = False) -> None:
    """A budget that leaves the accuracy predictor room to learn (at least the initial design)."""
    if budget < engine.n_init:
        design = f"--init {engine.n_init}" if init_flag else f"{engine.n_init}"
        raise InputError(
            f"--budget {budget} is below the initial design of {design} archs: the accuracy "
            "predictor would have no room to learn",
            hint=f"use --budget {engine.n_init} or more" + (", or a smaller --init" if init_flag else ""),
        )


def check_out(out: Path, what: str) -> None:
    """``out`` can be (or become) this run's folder: not a file, and writable."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    check_writable(out / RESULT if out.is_dir() else out, what=what)


def check_run(options: SearchOptions) -> None:
    """Everything about ``options`` that can be wrong, refused before any work (exit 2)."""
    check_seed(options.seed)
    if options.budget < 1:
        raise InputError(f"--budget must be at least 1, got {options.budget}")
    check_budget(options.budget, options.engine, init_flag=True)
    thread_counts(options)
    if options.out is not None:
        check_out(Path(options.out), "search --out")


def thread_counts(options: SearchOptions) -> tuple[int, ...] | None:
    """The thread counts ``options`` names (None: the LUT's or the target's default), checked."""
    from chamlab.host.workflows.threads import check_threads

    t = options.threads
    if t is None:
        return None
    return check_threads([t] if isinstance(t, int) else list(t))


def lock_path(out: Path) -> Path:
    """The lock of run folder ``out``: ``.<name>.lock`` beside it."""
    full = Path(os.path.abspath(out))
    return full.with_name(f".{full.name}.lock")


@contextmanager
def out_lock(
    out: Path, *, no_wait: bool = False, progress: Progress | None = None, what: str = "run"
) -> Iterator[None]:
    """Hold run folder ``out`` for the block: another run into it waits (saying so), or with
    ``no_wait`` is a :class:`~chamlab.core.errors.DeviceBusyError` (exit 2) at once."""
    progress = progress or NullProgress()
    lock = FileLock(lock_path(out), what=f"--out {out}")
    lock.acquire(
        wait=not no_wait,
        description=f"pid {os.getpid()} on {socket.gethostname()}: {what}",
        on_wait=lambda holder: progress.note(f"--out {out} is in use ({holder}); waiting for it"),
    )
    try:
        yield
    finally:
        lock.release()


def choose_rows(space: SearchSpace, options: SearchOptions) -> tuple[Lut, Path, MeasurementSet]:
    """The LUT a network space's latency comes from and its measurement set, chosen as ``chamlab
    predict`` chooses it (:func:`~chamlab.host.prediction.predict.choose_measurement_set`)."""
    found = find_lut(options.lut_path, options.target, space=space.name)
    if found is None:
        raise InputError(
            f"searching {space.name} needs a latency LUT", hint="pass --lut PATH or --target NAME"
        )
    lut, path = found
    counts = thread_counts(options)
    if counts is not None and len(counts) > 1:
        raise ValueError("choose_rows takes one thread count; choose each of several in turn")
    mset = choose_measurement_set(
        lut,
        path,
        target=options.target,
        dtype=options.dtype,
        threads=None if counts is None else counts[0],
        batch=options.batch,
        devices=options.devices,
    )
    return lut, path, mset


def network_problem(
    space: SearchSpace,
    oracle: Oracle,
    lut: Lut,
    path: Path,
    mset: MeasurementSet,
    limits: dict[str, float],
    *,
    raw: bool = False,
) -> Problem:
    """``space`` under ``limits`` with each arch's latency predicted once, as ``chamlab predict``
    predicts it (calibrated unless ``raw``)."""
    latency = CachedPrediction(LatencyModel(space, lut, path, mset, raw=raw))
    return Problem(space, oracle, {"latency_ms": latency}, limits)


def search(
    space: Any,
    options: SearchOptions,
    *,
    oracle: Oracle | None = None,
    oracle_for_rows: Callable[[str], Oracle] | None = None,
    progress: Callable[[EngineState], None] | None = None,
    lock_progress: Progress | None = None,
    name: str | None = None,
) -> SearchResult:
    """Search ``space`` (a network space, or a :class:`~chamlab.chamnet.spaces.table.TableSpace`)
    under ``options``; resumes the history in ``options.out``.

    Network spaces take their accuracy from ``oracle`` (default: the space's own), or from
    ``oracle_for_rows(dtype)`` called with the chosen LUT rows' dtype (a training oracle whose default
    accuracy follows the rows); a table space from its own accuracy column. ``progress(state)`` is
    called after every oracle batch; ``lock_progress`` hears that ``--out`` is in use. ``name``: the
    space as the user named it (stored with the run; default ``space.name``). The caller closes the
    oracle."""
    from chamlab.chamnet.search.problem import oracle_for
    from chamlab.chamnet.search.run import search as run_search
    from chamlab.chamnet.spaces.table import TableSpace
    from chamlab.host.workflows.oracles import oracle_identity

    check_run(options)
    annotate = None
    limits = {"latency_ms": options.latency_ms}
    args: dict[str, Any] = {
        "space": name or space.name,
        "limits": limits,
        "seed": options.seed,
        "engine": options.engine.to_json(),
    }
    if isinstance(space, TableSpace):
        if options.energy_mj is not None:
            limits["energy_mj"] = options.energy_mj
        problem = table_problem(space, limits)
        args["dims"] = [d.name for d in space.dimensions]
    else:
        if options.energy_mj is not None:
            raise InputError(
                f"{space.name} has no energy predictor yet: --energy works on table spaces with energy_mj"
            )
        counts = thread_counts(options) or ()
        several = len(counts) > 1
        rows = {t: choose_rows(space, dataclasses.replace(options, threads=t)) for t in counts if several}
        lut, path, mset = rows[counts[0]] if several else choose_rows(space, options)
        if oracle_for_rows is not None:
            oracle = oracle_for_rows(mset.dtype)
        oracle = oracle if oracle is not None else oracle_for(space)
        identity = oracle_identity(oracle)
        if identity is not None:
            args["oracle"] = identity
        if several:
            problem, annotate = threads_problem(space, oracle, rows, limits, raw=options.raw)
        else:
            problem = network_problem(space, oracle, lut, path, mset, limits, raw=options.raw)
        args["lut"] = {
            "path": str(path),
            "device": mset.device,
            "threads": list(rows) if several else mset.threads,
            "batch": mset.batch,
            "raw": options.raw,
        }
    args["limits"] = limits
    run = dict(
        problem=problem, budget=options.budget, seed=options.seed, config=options.engine, annotate=annotate
    )
    if options.out is None:
        return run_search(**run, args=args, progress=progress)  # type: ignore[arg-type]
    out = Path(options.out)
    with out_lock(out, no_wait=options.no_wait, progress=lock_progress, what="search"):
        ensure_dir(out, what="search --out")
        return run_search(**run, out=out, args=args, progress=progress)  # type: ignore[arg-type]


def threads_problem(
    space: SearchSpace,
    oracle: Oracle,
    rows: dict[int, tuple[Lut, Path, MeasurementSet]],
    limits: dict[str, float],
    *,
    raw: bool = False,
) -> tuple[Problem, Callable[[SearchResult, Sequence[Any]], dict[str, Any]]]:
    """``space`` searched at several thread counts (``rows``: each one's LUT rows): ``latency_ms`` is
    the lowest prediction of an arch over the thread counts, ``latency_ms@N`` each one's; and what
    the result adds (``threads``, ``threads_searched``, ``per_threads``: the best queried arch under
    the limit at each thread count)."""
    from chamlab.host.workflows.threads import BestThreads, cost_name

    models = {t: LatencyModel(space, lut, path, mset, raw=raw) for t, (lut, path, mset) in rows.items()}
    best = BestThreads({t: CachedPrediction(m) for t, m in models.items()})
    costs: dict[str, Callable[[Any], float]] = {"latency_ms": best.latency, **best.costs()}
    limit = limits["latency_ms"]

    def annotate(result: SearchResult, queries: Sequence[Any]) -> dict[str, Any]:
        per = []
        for t, model in models.items():
            at = [q for q in queries if q.costs[cost_name(t)] <= limit]
            top = max(at, key=lambda q: q.accuracy, default=None)
            per.append(
                {
                    "threads": t,
                    "arch": None if top is None else space.format(top.arch),
                    "oracle_accuracy": None if top is None else top.accuracy,
                    "predicted_latency_ms": None if top is None else top.costs[cost_name(t)],
                    "feasible_queried": len(at),
                    "calibrated": model.calibrated,
                }
            )
        threads = None if result.arch is None else best.threads_of(space.parse(result.arch))
        return {"threads": threads, "threads_searched": list(models), "per_threads": per}

    return Problem(space, oracle, costs, limits), annotate


__all__ = [
    "SearchOptions",
    "check_budget",
    "check_out",
    "check_run",
    "check_seed",
    "choose_rows",
    "lock_path",
    "network_problem",
    "out_lock",
    "search",
    "thread_counts",
    "threads_problem",
]
