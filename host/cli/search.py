"""``chamlab search``: the most accurate architecture under a latency (and energy) limit, by BO."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import (
    AccuracyOpt,
    AddressOpt,
    BatchOpt,
    CostFeatureOpt,
    DataOpt,
    DtypeOpt,
    ExecutorOpt,
    FitOpt,
    JsonOpt,
    LocalSearchOpt,
    MergeEquivalentOpt,
    OracleOpt,
    RawOpt,
    RichProgress,
    ScheduleOpt,
    WorkersOpt,
    emit_json,
    err,
    handle_errors,
    note,
    out,
    value,
)

if TYPE_CHECKING:
    from chamlab.chamnet.search.problem import Oracle
    from chamlab.chamnet.search.run import SearchResult
    from chamlab.chamnet.training import TrainRecord


@handle_errors
def search(
    space_name: Annotated[
        str,
        typer.Option(
            "--space",
            "-s",
            help="a search space (see `chamlab spaces`; NAME@KEY=VALUE,... sets its parameters, e.g. "
            "chamnet-mbv2@res=32-96,classes=10) or table:PATH",
        ),
    ],
    latency: Annotated[float, typer.Option("--latency", help="latency limit in ms", min=0.0)],
    energy: Annotated[
        float | None,
        typer.Option("--energy", help="energy limit in mJ (table spaces with an energy_mj column)", min=0.0),
    ] = None,
    budget: Annotated[int, typer.Option("--budget", "-n", min=1, help="maximum oracle queries")] = 50,
    n_init: Annotated[int, typer.Option("--init", min=1, help="initial design size")] = 10,
    parallel: Annotated[
        int,
        typer.Option("--parallel", "-p", min=1, help="archs per oracle batch (an oracle that runs several)"),
    ] = 1,
    sampler: Annotated[
        str, typer.Option("--sampler", help="initial design: imbalanced-sobol, sobol or uniform")
    ] = "imbalanced-sobol",
    output_warp: Annotated[
        str,
        typer.Option(
            "--output-warp", help="accuracy transform before the GP: yeo-johnson (default), none or copula"
        ),
    ] = "yeo-johnson",
    merge_equivalent: MergeEquivalentOpt = True,
    local_search: LocalSearchOpt = 3,
    cost_feature: CostFeatureOpt = True,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="run directory (history, result, pareto.png); resumable")
    ] = Path("search"),
    dims: Annotated[
        str | None, typer.Option("--dims", help="table spaces: the dimension columns, comma-separated")
    ] = None,
    accuracy_range: Annotated[
        str | None,
        typer.Option(
            "--accuracy-range",
            help="table spaces: LO,HI, the interval every accuracy lies in (default 0,100: percent or "
            "a fraction); a row outside is exit 2",
        ),
    ] = None,
    lut: Annotated[
        Path | None, typer.Option("--lut", help="network spaces: LUT to predict latency from")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="network spaces: use luts/<target>.parquet")
    ] = None,
    threads: Annotated[
        str | None,
        typer.Option(
            "--threads",
            "-j",
            help="network spaces: use the LUT rows measured with N threads; several (1,2,4): search the "
            "thread count with the arch (an arch qualifies at its fastest thread count)",
        ),
    ] = None,
    oracle_kind: OracleOpt = "table",
    data: DataOpt = None,
    fit: FitOpt = False,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    schedule: ScheduleOpt = None,
    accuracy: AccuracyOpt = None,
    dtype: DtypeOpt = None,
    batch: BatchOpt = 1,
    raw: RawOpt = False,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="if another run is using --out, exit 2 at once instead of waiting"),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search the most accurate architecture whose predicted latency is at most --latency ms.

    Network spaces take their latency from a LUT (--lut PATH or --target NAME) and their accuracy from
    the space's oracle (macro-cifar10: the shipped accuracy table), or with --oracle train from
    training each queried arch on --data (see docs/training.md). table:PATH spaces take both from
    the file's columns (accuracy, latency_ms, energy_mj). Re-running into the same --out resumes.
    --dtype picks the LUT rows (fp32 or int8); --accuracy (default: the rows' dtype) which accuracy
    is optimised: int8 needs --oracle train (docs/int8.md). A second run into an --out in use
    waits for the first (--no-wait: exit 2).

    --threads 1,2,4 searches (arch, threads) pairs: each thread count's LUT rows predict its latency,
    an arch qualifies when its prediction at some thread count is under --latency, and the result
    adds `threads` (the winner's fastest), `per_threads` (the best queried arch at each thread count).
    """
    from chamlab.chamnet.search import EngineConfig
    from chamlab.chamnet.spaces.table import is_table_spec
    from chamlab.core.errors import InputError
    from chamlab.host import api
    from chamlab.host.workflows.threads import parse_threads

    counts = parse_threads(threads)

    config = EngineConfig(
        n_init=n_init,
        batch_size=parallel,
        sampler=sampler,
        output_warp=output_warp,
        merge_equivalent=merge_equivalent,
        local_search=local_search,
        cost_feature=cost_feature,
    )
    options = api.SearchOptions(
        latency_ms=latency, energy_mj=energy, budget=budget, seed=seed, out=out_dir, engine=config,
        lut_path=lut, target=target, threads=counts, dtype=value(dtype), batch=batch, raw=raw,
        no_wait=no_wait,
    )  # fmt: skip
    api.check_search(options)  # a bad seed, budget or --out: exit 2 before anything is read or made
    training = dict(data=data, executor=executor, address=address, workers=workers, schedule=schedule)
    oracles: _NetworkOracles | None = None
    if is_table_spec(space_name):
        rows = lut is not None or target is not None or threads is not None or batch != 1 or dtype is not None
        sp: object = _table_space(
            space_name, dims, accuracy_range, fit=fit, oracle_kind=oracle_kind, rows_chosen=rows,
            accuracy=accuracy, **training,
        )  # fmt: skip
    else:
        for flag, given in (("--dims", dims), ("--accuracy-range", accuracy_range)):
            if given is not None:
                raise InputError(f"{flag} applies to table:PATH spaces only")
        if energy is not None:
            raise InputError(
                f"{space_name} has no energy predictor yet: --energy works on table spaces with energy_mj"
            )
        sp = net = api.SPACES.get(space_name)
        if fit:
            sp = net = api.fit_space(net, data)
            space_name = net.name
            if not as_json:
                note(f"space fitted to {data}: {space_name}")
        train_bar = TrainBar(budget) if oracle_kind == "train" and not as_json else None
        # fails before any LUT work when the space has no oracle, the dataset is bad or --accuracy is
        oracles = _NetworkOracles(net, oracle_kind, accuracy, value(dtype), train_bar, training)
    limits = {"latency_ms": latency, **({"energy_mj": energy} if energy is not None else {})}

    def progress(state: object) -> None:
        if not as_json:
            queries = getattr(state, "queries", [])
            best = max(
                (q.accuracy for q in queries if all(q.costs[k] <= v for k, v in limits.items())),
                default=None,
            )
            note(f"query {len(queries)}/{budget}: best feasible accuracy {best}")

    try:
        result = api.search(
            sp, options, oracle_for_rows=oracles.for_rows if oracles else None, progress=progress,
            lock_progress=_Notes(), name=space_name,
        )  # fmt: skip
    except KeyboardInterrupt:
        err.print(
            f"interrupted: the accuracy queries answered so far are kept in {out_dir / 'history.parquet'}; "
            "re-run the same command (the same --out) to resume without asking them again",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    finally:
        if oracles is not None:
            oracles.close()
    if as_json:
        emit_json(result.to_json())
        return
    _print_result(result, oracles.rows_dtype if oracles else None, latency, out_dir)


def _table_space(
    space_name: str,
    dims: str | None,
    accuracy_range: str | None,
    *,
    fit: bool,
    oracle_kind: str,
    rows_chosen: bool,
    accuracy: str | None,
    **training: Any,
) -> object:
    """A ``table:PATH`` space read from its file; the options it cannot take refused (exit 2)."""
    from chamlab.chamnet.spaces.table import TableSpace, parse_accuracy_range, parse_dims
    from chamlab.core.errors import InputError
    from chamlab.host.workflows.oracles import choose_oracle

    if fit:
        raise InputError(f"--fit: {space_name} is a table space; it has no input size or classes to fit")
    if oracle_kind != "table":
        raise InputError(
            "a table:PATH space takes its accuracy from its file: --oracle train needs a network space"
        )
    if rows_chosen:
        raise InputError(
            "--lut/--target/--threads/--batch/--dtype choose a network space's LUT rows; "
            "a table space has its own latency_ms column"
        )
    sp = TableSpace.read(
        Path(space_name.removeprefix("table:")),
        parse_dims(dims),
        accuracy_range=parse_accuracy_range(accuracy_range),
    )
    choose_oracle(sp, accuracy=accuracy, **training)  # the table's own column; refuses training options, int8
    return sp


class _NetworkOracles:
    """A network space's accuracy oracle, made before any LUT work (a space without an oracle, a bad
    dataset or --accuracy fail first), and made again for the LUT rows' dtype when a training
    oracle's accuracy was left to default to it; every oracle made is closed by :meth:`close`."""

    def __init__(
        self,
        net: object,
        kind: str,
        accuracy: str | None,
        dtype: str | None,
        train_bar: TrainBar | None,
        training: dict[str, Any],
    ) -> None:
        self.net, self.kind, self.accuracy = net, kind, accuracy
        self.train_bar, self.training = train_bar, training
        self.used = [self._make(dtype or "fp32")]
        self.rows_dtype: str | None = None  # the LUT rows' dtype, once the search has chosen them

    def _make(self, default_dtype: str) -> Oracle:
        from chamlab.host.workflows.oracles import choose_oracle

        on_result = self.train_bar.advance if self.train_bar is not None else None
        return choose_oracle(
            self.net,
            self.kind,
            on_result=on_result,
            accuracy=self.accuracy,
            dtype=default_dtype,
            **self.training,
        )

    def for_rows(self, rows_dtype: str) -> Oracle:
        from chamlab.chamnet.search.problem import accuracy_dtype

        if self.rows_dtype is None:
            self.rows_dtype = rows_dtype
        if self.accuracy is None and self.kind == "train" and accuracy_dtype(self.used[0]) != rows_dtype:
            # the default accuracy is the rows' dtype (nothing ran yet)
            self.used[:] = [self._make(rows_dtype)]
        return self.used[0]

    def close(self) -> None:
        from chamlab.host.workflows.oracles import close_oracle

        for oracle in self.used:
            close_oracle(oracle)
        if self.train_bar is not None:
            self.train_bar.close()


def _print_result(result: SearchResult, rows_dtype: str | None, latency: float, out_dir: Path) -> None:
    """The human summary of a search (``--json`` prints ``result.to_json()`` instead)."""
    if result.accuracy_note and rows_dtype == "int8":  # int8 latency, fp32 accuracy: say so
        note(f"note: {result.accuracy_note}")
    if result.arch is None:
        out.print(f"no queried architecture meets the limits after {result.queries} queries")
        return
    both = result.oracle_accuracies or {}
    extra = f"; fp32 {both['fp32']:.3f}, int8 {both['int8']:.3f}" if {"fp32", "int8"} <= set(both) else ""
    at = f" at {result.extra['threads']} thread(s)" if result.extra.get("threads") else ""
    out.print(
        f"[bold]{result.arch}[/]: {result.accuracy_dtype} accuracy {result.oracle_accuracy:.3f}{extra} "
        f"(predicted "
        f"{result.predicted_accuracy:.3f}), latency {result.costs['latency_ms']:.4f} ms{at} "  # type: ignore[index]
        f"<= {latency} ms, after {result.queries} queries ({result.search_seconds:.1f} s); files in {out_dir}"
    )
    for p in result.extra.get("per_threads", ()):
        best = (
            f"{p['arch']}: accuracy {p['oracle_accuracy']:.3f}, {p['predicted_latency_ms']:.4f} ms"
            if p["arch"] is not None
            else "no queried arch under the limit"
        )
        out.print(f"  {p['threads']:>3} thread(s)  {best}")


class TrainBar:
    """One progress bar for the archs a training oracle trains (or finds in its cache)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._progress: RichProgress | None = None

    def advance(self, arch: object, record: TrainRecord) -> None:
        if self._progress is None:
            self._progress = RichProgress()
            self._progress.start("train", self.total)
        from chamlab.host.workflows.oracles import train_label

        self._progress.advance("train", train_label(record))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)


class _Notes:
    """A search's lock reports one thing (``--out`` in use): as a note line."""

    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, label: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        note(text)
