"""A search run on disk: resumable history, GP hyperparameters as JSON, result and Pareto plot.

``search(problem, out=DIR, ...)`` writes, after every oracle batch:

* ``DIR/history.parquet``: the store kind ``search-history`` (one row per oracle query, in order:
  ``query`` = 1, 2, ..., one column per dimension named as the space names them, ``accuracy`` (the
  accuracy the search optimised: the oracle's ``accuracy_dtype``, recorded as ``accuracy_dtype`` in
  the arguments), ``accuracy_fp32`` and ``accuracy_int8`` (every accuracy the oracle measured of
  the arch, null where it has none: a table oracle has no int8 accuracy), one column per cost,
  ``phase``), whose metadata ``chamlab.search`` holds the run's arguments (JSON). Version 1 files
  (before int8 accuracy) read as version 2: ``accuracy_fp32`` = ``accuracy``, ``accuracy_int8`` null,
  ``accuracy_dtype`` = ``"fp32"`` (and, for a training oracle, its default quantization recipe);
* ``DIR/accuracy_gp.json``: the fitted accuracy GP's hyperparameters, and under ``resume`` its
  exact parameters and the queries it saw: a resumed run rebuilds that GP instead of refitting it,
  so it predicts (and ``adapt`` picks) what the finished run did (runs made before it had this
  name wrote ``DIR/model.json``; resuming one renames that file, since ``model.json`` names the
  exported program's manifest);

and at the end ``DIR/result.json`` and ``DIR/pareto.png``. Re-running into the same DIR resumes:
the queries already in the history are never asked again (a larger budget continues the search);
different arguments (other than the budget) are an :class:`InputError` (exit 2), and so are a table
space's table edited since the run (its content digest, :data:`TABLE_DIGEST`, is part of the run's
identity) and a damaged history (:func:`check_history`: a non-finite accuracy or cost, an arch twice,
queries out of order).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chamlab.chamnet.spaces.base import Arch
from chamlab.chamnet.spaces.table import TableSpace
from chamlab.core.errors import ArchError, DataFileError, InputError
from chamlab.core.files import atomic_write_text
from chamlab.core.store import KINDS, read_table, write_table

from .config import engine_fields
from .constrained import pareto_indices
from .engine import BayesOptEngine, EngineConfig, EngineState, Query
from .problem import Problem, accuracies_of, accuracy_dtype

HISTORY_KIND = KINDS.register(
    "search-history",
    version=2,
    schema=None,
    what="search history",
    make_hint="it is written by `chamlab search --out DIR`",
)
ARGS_KEY = "chamlab.search"
#: the per-dtype accuracy columns of a history (version 2)
ACCURACY_COLUMNS = {"fp32": "accuracy_fp32", "int8": "accuracy_int8"}


@HISTORY_KIND.upgrader(1)
def _upgrade_v1(table: Any, meta: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """v1 -> v2: every v1 search optimised fp32 accuracy; no int8 accuracy was measured."""
    import pyarrow as pa

    from chamlab.operators.quant import DEFAULT_RECIPE

    if "accuracy" in table.column_names:
        at = table.column_names.index("accuracy") + 1
        table = table.add_column(at, "accuracy_fp32", table.column("accuracy"))
        table = table.add_column(at + 1, "accuracy_int8", pa.nulls(table.num_rows, pa.float64()))
    if ARGS_KEY in meta:
        args = json.loads(meta[ARGS_KEY])
        if isinstance(args, dict):
            args.setdefault("accuracy_dtype", "fp32")
            oracle = args.get("oracle")
            if isinstance(oracle, dict) and oracle.get("kind") == "train":
                oracle.setdefault("quant_recipe", DEFAULT_RECIPE)
            meta[ARGS_KEY] = json.dumps(args)
    return table, meta


HISTORY = "history.parquet"
RESULT = "result.json"
#: the accuracy GP's hyperparameters
GP = "accuracy_gp.json"
#: where runs made before wrote :data:`GP` (now reserved for the exported program's manifest)
LEGACY_GP = "model.json"
PARETO = "pareto.png"
#: defaults of `chamlab search` (documented in docs/search.md)
DEFAULT_BUDGET = 50


def write_history(
    path: Path,
    problem: Problem,
    queries: Sequence[Query],
    args: Mapping[str, Any],
    accuracies: Mapping[Arch, Mapping[str, float]] | None = None,
) -> None:
    """``accuracies``: every accuracy known of each arch by dtype (default: the oracle's
    :func:`~.problem.accuracies_of`)."""
    import pyarrow as pa

    dims = problem.space.dimensions
    cols: dict[str, Any] = {"query": pa.array(range(1, len(queries) + 1), pa.int64())}
    for j, d in enumerate(dims):
        cols[d.name] = [q.arch[j] for q in queries]
    cols["accuracy"] = pa.array([q.accuracy for q in queries], pa.float64())
    known = [(accuracies or {}).get(q.arch) or accuracies_of(problem.oracle, q.arch) for q in queries]
    for dtype, column in ACCURACY_COLUMNS.items():
        cols[column] = pa.array([k.get(dtype) for k in known], pa.float64())
    for name in problem.costs:
        cols[name] = pa.array([q.costs[name] for q in queries], pa.float64())
    cols["phase"] = pa.array([q.phase for q in queries], pa.string())
    write_table(path, HISTORY_KIND, pa.table(cols), {ARGS_KEY: dict(args)})


def _differences(name: str, there: Any, now: Any) -> str:
    """``name: X there, Y now``; for two dicts (the engine options) only the keys that differ."""
    if isinstance(there, dict) and isinstance(now, dict):
        keys = sorted(k for k in set(there) | set(now) if there.get(k) != now.get(k))
        return "; ".join(f"{name}.{k}: {there.get(k)!r} there, {now.get(k)!r} now" for k in keys)
    return f"{name}: {there!r} there, {now!r} now"


#: engine options that act only on candidate pools: irrelevant to a space that is enumerated
POOL_ONLY_FIELDS = ("local_search",)


def check_same_arguments(
    old: Mapping[str, Any], new: Mapping[str, Any], where: Path, what: str, space_size: int | None = None
) -> None:
    """:class:`InputError` unless the arguments stored with a run (``old``) equal ``new``, the budget
    aside. Stored engine options are read by :func:`~chamlab.chamnet.search.config.engine_fields`:
    options stored before they existed take the values that reproduce what the engine did then,
    removed options at the value the engine still implements are dropped, at any other value they
    are an :class:`InputError` naming the option. With ``space_size`` at most both runs'
    ``exhaustive_limit`` (an enumerated space), :data:`POOL_ONLY_FIELDS` are not compared: they change
    nothing there. The error names every field that differs."""
    old = dict(old)
    if isinstance(old.get("engine"), dict):
        old["engine"] = engine_fields(old["engine"], f"{where} holds {what} whose arguments")
    new = dict(json.loads(json.dumps(dict(new))))
    then, now = old.get("engine"), new.get("engine")
    if space_size is not None and isinstance(then, dict) and isinstance(now, dict):
        limits = (then.get("exhaustive_limit"), now.get("exhaustive_limit"))
        if all(isinstance(x, int) and space_size <= x for x in limits):
            old["engine"] = {k: v for k, v in then.items() if k not in POOL_ONLY_FIELDS}
            new["engine"] = {k: v for k, v in now.items() if k not in POOL_ONLY_FIELDS}
    diff = sorted(k for k in set(old) | set(new) if k != "budget" and old.get(k) != new.get(k))
    if diff:
        detail = "; ".join(_differences(k, old.get(k), new.get(k)) for k in diff)
        engine = old.get("engine")
        before_merge = isinstance(engine, dict) and engine.get("merge_equivalent") is False
        before_local = isinstance(engine, dict) and engine.get("local_search") == 0
        # the stored cost-feature setting, where it differs from this run's: the flag that resumes it
        differs = isinstance(engine, dict) and "engine.cost_feature:" in detail
        cost_then = engine["cost_feature"] if isinstance(engine, dict) and differs else None
        schedule = _schedule_then(old.get("oracle"), new.get("oracle"))
        raise InputError(
            f"{where} holds {what} made with other arguments ({detail})",
            hint="re-run with the same arguments to resume it"
            + (" (--ask-every-name: it asked every arch string)" if before_merge else "")
            + (" (--local-search 0: it searched its pools without the local search)" if before_local else "")
            + (
                f" ({'--cost-feature' if cost_then else '--no-cost-feature'}: its GP "
                f"{'had' if cost_then else 'did not have'} the cost as an input)"
                if cost_then is not None
                else ""
            )
            + (f" (--schedule {schedule}: the training schedule it was made with)" if schedule else "")
            + ", or choose another --out DIR",
        )


def _schedule_then(then: Any, now: Any) -> str | None:
    """``NAME=VALUE,...`` (``--schedule``'s form) of the training schedule fields whose stored value
    differs from this run's (a run resumed after the defaults changed, or with another ``--schedule``),
    or None when the oracles' schedules agree or either is not a training oracle's."""
    a = then.get("schedule") if isinstance(then, dict) else None
    b = now.get("schedule") if isinstance(now, dict) else None
    if not isinstance(a, dict) or not isinstance(b, dict):
        return None
    fields = [f"{k}={v}" for k, v in a.items() if k in b and b[k] != v]
    return ",".join(fields) or None


#: the run argument holding a table space's content digest (:attr:`TableSpace.digest`)
TABLE_DIGEST = "table_sha256"
_REDO = (
    "the history was edited or damaged: restore it, or choose another --out "
    "(or delete that folder to start afresh)"
)


def check_history(
    path: Path,
    space: Any,
    args: Mapping[str, Any],
    what: str = "a search",
    costs: Sequence[str] | None = None,
) -> Any:
    """The rows of the search history at ``path`` (a DataFrame) after every check a resume needs,
    each failure an :class:`InputError` (exit 2) naming the file, the column and the query:

    * the arguments stored with it equal ``args``, the budget aside (:func:`check_same_arguments`);
    * every column the run writes is there; queries are numbered 1, 2, ... in order; the accuracy
      and every cost (``costs``, default the limits' names) are finite numbers; no arch is queried twice;
    * for a table space, the table is the one the history was asked of (:data:`TABLE_DIGEST`): a
      history stored before the digest was recorded is checked row by row against the table."""
    stored = read_table(path, HISTORY_KIND)
    old = dict(stored.meta_json(ARGS_KEY, {}) or {})
    new = json.loads(json.dumps(dict(args)))
    digest_then, digest_now = old.pop(TABLE_DIGEST, None), new.pop(TABLE_DIGEST, None)
    check_same_arguments(old, new, path.parent, what, space_size=space.size)
    df = stored.table.to_pandas()
    names = [d.name for d in space.dimensions]
    costs = list(costs if costs is not None else dict(args.get("limits") or {}))
    missing = [c for c in (*names, "accuracy", *costs, "phase") if c not in df.columns]
    if missing:
        raise DataFileError(f"search history {path} lacks column(s) {', '.join(missing)}", hint=_REDO)
    n = len(df)
    if "query" in df.columns:
        numbers = df["query"].tolist()
        wrong = [i for i, q in enumerate(numbers) if q != i + 1]
        if wrong:
            i = wrong[0]
            raise DataFileError(
                f"search history {path}: row {i} has query {numbers[i]}, not {i + 1}: the queries are "
                "numbered 1, 2, ... in the order they were asked",
                hint=_REDO,
            )
    for col in ("accuracy", *costs):
        try:
            values = df[col].to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            raise DataFileError(
                f"search history {path}: column {col!r} is not numeric ({df[col].dtype})", hint=_REDO
            ) from None
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFileError(
                f"search history {path}: column {col!r} is {values[i]} at query {i + 1} "
                f"({int(bad.sum())} of {n} queries not a finite number)",
                hint=_REDO,
            )
    nulls = df[names].isna().any(axis=1).to_numpy() if names else np.zeros(n, dtype=bool)
    if nulls.any():
        i = int(np.flatnonzero(nulls)[0])
        col = next(c for c in names if df[c].isna().iloc[i])
        raise DataFileError(f"search history {path}: column {col!r} is missing at query {i + 1}", hint=_REDO)
    dup = df.duplicated(subset=names, keep="first").to_numpy() if names else np.zeros(n, dtype=bool)
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        key = tuple(df[c].iloc[j] for c in names)
        i = next(k for k in range(j) if tuple(df[c].iloc[k] for c in names) == key)
        text = ",".join(f"{c}={v}" for c, v in zip(names, key, strict=True))
        raise DataFileError(
            f"search history {path}: queries {i + 1} and {j + 1} are the same architecture ({text}); "
            "a search asks each architecture once",
            hint=_REDO,
        )
    if digest_now is not None and digest_then != digest_now:
        _check_table_unchanged(path, space, df, names, costs, digest_then, digest_now)
    return df


def _check_table_unchanged(
    path: Path, space: Any, df: Any, names: list[str], costs: list[str], then: Any, now: str
) -> None:
    """A table space's history: the table it was asked of had digest ``then`` (None: a run stored
    before the digest was recorded); the table now has ``now``. Refused (naming the first queried row
    that changed) unless ``then`` is None and every queried row still holds what the history says."""
    changed = None
    for i, row in enumerate(df.itertuples(index=False)):
        r = row._asdict()
        arch = tuple(_native(r[c]) for c in names)
        text = ",".join(f"{c}={v}" for c, v in zip(names, arch, strict=True))
        try:
            idx = space.row(arch)
        except ArchError:
            changed = f"query {i + 1} ({text}) is no longer a row of the table"
            break
        pairs = [("accuracy", float(r["accuracy"]), float(space.accuracy[idx]))]
        pairs += [(c, float(r[c]), float(space.costs[c][idx])) for c in costs]
        diff = [(c, a, b) for c, a, b in pairs if a != b]
        if diff:
            c, a, b = diff[0]
            changed = f"query {i + 1} ({text}) has {c} {a:g} in the history, {b:g} in the table now"
            break
    if then is None and changed is None:
        return  # a run from before the digest was stored: its queries agree with the table
    why = changed or (
        f"rows this run has not queried were added, removed or edited (content digest {str(then)[:12]} "
        f"then, {now[:12]} now)"
    )
    raise InputError(
        f"{path.parent} holds a search of {space.name} as the table was before it was edited: {why}",
        hint="the history's accuracies are the old table's: choose another --out to search the edited "
        "table, or restore the table to resume this run",
    )


def read_history(path: Path, problem: Problem, args: Mapping[str, Any]) -> list[Query]:
    """The queries of an earlier run with the same arguments (budget aside), checked by
    :func:`check_history`."""
    df = check_history(path, problem.space, args, costs=list(problem.costs))
    names = [d.name for d in problem.space.dimensions]
    out = []
    for row in df.itertuples(index=False):
        r = row._asdict()
        arch = problem.space.validate([_native(r[n]) for n in names])
        costs = {c: float(r[c]) for c in problem.costs}
        out.append(Query(arch, float(r["accuracy"]), costs, str(r["phase"])))
    return out


def read_accuracies(path: Path, problem: Problem) -> dict[Arch, dict[str, float]]:
    """The per-dtype accuracies a history holds, by arch (nulls left out)."""
    df = read_table(path, HISTORY_KIND).table.to_pandas()
    names = [d.name for d in problem.space.dimensions]
    out: dict[Arch, dict[str, float]] = {}
    for row in df.itertuples(index=False):
        r = row._asdict()
        arch = problem.space.validate([_native(r[n]) for n in names])
        got = {dt: float(r[c]) for dt, c in ACCURACY_COLUMNS.items() if c in r and r[c] == r[c]}
        if got:
            out[arch] = got
    return out


def _native(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


@dataclasses.dataclass(frozen=True)
class SearchResult:
    space: str
    arch: str | None  # the best feasible arch queried (None when no queried arch is feasible)
    values: dict[str, Any] | None
    oracle_accuracy: float | None  # of ``accuracy_dtype``
    predicted_accuracy: float | None
    costs: dict[str, float] | None
    limits: dict[str, float]
    queries: int
    new_queries: int
    feasible_queried: int
    search_seconds: float
    fit_seconds: float
    out_dir: Path | None
    config: dict[str, Any]
    hyperparameters: dict[str, Any] | None
    accuracy_dtype: str = "fp32"  # which accuracy the search optimised
    accuracy_note: str | None = None  # e.g. a table oracle: fp32 only
    oracle_accuracies: dict[str, float] | None = None  # the best arch's accuracy per dtype
    gp_fit_failures: list[str] = dataclasses.field(default_factory=list)  # this run's failed GP fits
    #: what the caller's ``annotate`` added (e.g. a search over several thread counts: the winner's)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        costs = self.costs or {}
        return {
            "space": self.space,
            "arch": self.arch,
            "values": self.values,
            "accuracy_dtype": self.accuracy_dtype,
            "accuracy_note": self.accuracy_note,
            "predicted_accuracy": self.predicted_accuracy,
            "oracle_accuracy": self.oracle_accuracy,
            "oracle_accuracies": self.oracle_accuracies,
            "predicted_latency_ms": costs.get("latency_ms"),
            "costs": self.costs,
            "limits": self.limits,
            "queries": self.queries,
            "new_queries": self.new_queries,
            "feasible_queried": self.feasible_queried,
            "search_seconds": round(self.search_seconds, 3),
            "fit_seconds": round(self.fit_seconds, 3),
            "gp_fit_failures": self.gp_fit_failures,
            "out": None if self.out_dir is None else str(self.out_dir),
            "config": self.config,
            **self.extra,
        }


def search(
    problem: Problem,
    *,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    config: EngineConfig | None = None,
    out: Path | None = None,
    args: Mapping[str, Any] | None = None,
    progress: Callable[[EngineState], None] | None = None,
    plot: bool = True,
    result_name: str = RESULT,
    annotate: Callable[[SearchResult, Sequence[Query]], Mapping[str, Any]] | None = None,
) -> SearchResult:
    """Run (or resume, when ``out`` holds a history) the engine on ``problem`` and write its files.

    ``args``: what identifies the run (compared on resume); by default the space, limits, seed and
    engine configuration. ``result_name``: the result file in ``out`` (``adapt`` keeps the loop's
    own as ``search.json``, beside its ``result.json``). ``annotate(result, queries)``: keys added to
    the result (:attr:`SearchResult.extra`) before it is written.
    """
    config = config or EngineConfig()
    ident = dict(
        args
        or {
            "space": problem.space.name,
            "limits": dict(problem.limits),
            "seed": seed,
            "engine": config.to_json(),
        }
    )
    ident["budget"] = budget
    ident.setdefault("accuracy_dtype", accuracy_dtype(problem.oracle))
    if isinstance(problem.space, TableSpace):  # an edited table is another run (check_history)
        ident.setdefault(TABLE_DIGEST, problem.space.digest)
    previous: list[Query] = []
    known: dict[Arch, dict[str, float]] = {}
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory")
        if (out / HISTORY).exists():
            previous = read_history(out / HISTORY, problem, ident)
            known = read_accuracies(out / HISTORY, problem)
            migrate_gp(out)
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def remember(queries: Sequence[Query]) -> None:
        for q in queries:
            if q.arch not in known and (got := accuracies_of(problem.oracle, q.arch)):
                known[q.arch] = got

    def persist(state: EngineState) -> None:
        remember(state.queries)
        if out is not None:
            write_history(out / HISTORY, problem, state.queries, ident, known)
        if progress is not None:
            progress(state)

    engine = BayesOptEngine(config)
    stored = read_gp(out) if previous and out is not None else None
    state = engine.run(
        problem, budget, np.random.default_rng(seed), previous=previous, on_query=persist, gp=stored
    )
    elapsed = time.perf_counter() - t0
    remember(state.queries)
    result = _result(problem, state, config, out, elapsed, len(state.queries) - len(previous), known)
    if annotate is not None:
        result = dataclasses.replace(result, extra=dict(annotate(result, state.queries)))
    if out is not None:
        if result.hyperparameters is not None:
            held = {**result.hyperparameters, "resume": state.resume_json()}
            atomic_write_text(out / GP, json.dumps(held, indent=1) + "\n")
        atomic_write_text(out / result_name, json.dumps(result.to_json(), indent=1) + "\n")
        if plot:
            pareto_plot(problem, state.queries, result, out / PARETO)
    return result


def read_gp(out: Path) -> dict[str, Any] | None:
    """``out``'s stored GP (:data:`GP`), or None when it is missing or not a JSON object (the engine
    then refits on the history, which is what the run is)."""
    try:
        held = json.loads((out / GP).read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def migrate_gp(out: Path) -> None:
    """A run made before the GP file had its name: its ``model.json`` (GP hyperparameters, told from
    a program manifest by the GP's own keys) becomes ``accuracy_gp.json``."""
    old, new = out / LEGACY_GP, out / GP
    if not old.is_file() or new.exists():
        return
    try:
        held = json.loads(old.read_text())
    except (OSError, ValueError):
        return
    if isinstance(held, dict) and {"noise_standardised", "lengthscales"} & set(held):
        old.replace(new)


def _result(
    problem: Problem,
    state: EngineState,
    config: EngineConfig,
    out: Path | None,
    seconds: float,
    new: int,
    known: Mapping[Arch, dict[str, float]] | None = None,
) -> SearchResult:
    from .engine import hyperparameters

    qs = state.queries
    feasible = [q for q in qs if all(q.costs[n] <= lim for n, lim in problem.limits.items())]
    best = max(feasible, key=lambda q: q.accuracy, default=None)
    predicted = None
    if best is not None:
        pred = state.predict([best.arch], np.array([best.costs[problem.primary]]))
        predicted = None if pred is None else float(pred[0])
    dims = problem.space.dimensions
    return SearchResult(
        space=problem.space.name,
        arch=None if best is None else problem.space.format(best.arch),
        values=None if best is None else {d.name: v for d, v in zip(dims, best.arch, strict=True)},
        oracle_accuracy=None if best is None else best.accuracy,
        predicted_accuracy=predicted,
        costs=None if best is None else dict(best.costs),
        limits=dict(problem.limits),
        queries=len(qs),
        new_queries=new,
        feasible_queried=len(feasible),
        search_seconds=seconds,
        fit_seconds=state.fit_seconds,
        out_dir=out,
        config=config.to_json(),
        hyperparameters=None
        if state.model is None
        else {**hyperparameters(state.model, state.feature_names), "output_warp": state.warp.to_json()},
        accuracy_dtype=accuracy_dtype(problem.oracle),
        accuracy_note=getattr(problem.oracle, "accuracy_note", None),
        oracle_accuracies=None if best is None else (known or {}).get(best.arch),
        gp_fit_failures=list(state.fit_failures),
    )


def pareto_plot(problem: Problem, queries: Sequence[Query], result: SearchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chamlab.core.files import atomic_path

    primary = problem.primary
    cost = np.array([q.costs[primary] for q in queries])
    acc = np.array([q.accuracy for q in queries])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.scatter(cost, acc, s=12, c=np.arange(len(queries)), cmap="viridis", label="queried (colour: order)")
    if len(queries):
        f = pareto_indices(cost, acc)
        ax.step(cost[f], acc[f], where="post", color="tab:red", label="Pareto front of the queries")
    ax.axvline(problem.limits[primary], color="grey", ls="--", label=f"limit {problem.limits[primary]:g}")
    if result.costs is not None and result.oracle_accuracy is not None:
        ax.scatter(
            [result.costs[primary]], [result.oracle_accuracy], marker="*", s=160, c="tab:red", zorder=5
        )
    ax.set_xlabel(primary)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{problem.space.name}: {len(queries)} queries")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
