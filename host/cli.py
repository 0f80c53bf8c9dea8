"""``chamlab``: the host controller's command line (thin: it parses, calls the library, prints).

Exit codes: 0 success; 1 the work failed (export, transport, measurement; partial results are kept);
2 bad input (unknown target/space/arch, malformed devices.toml, corrupt or foreign LUT, unwritable
output, missing LUT entries; nothing is written); 130 interrupted (re-run the command to resume).
With ``--json`` the result goes to stdout as JSON (keys documented in docs/cli.md); progress and
messages always go to stderr.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chamlab.operators.errors import ChamlabError, InputError, LutError

if TYPE_CHECKING:
    from chamlab.chamnet.spaces.base import Arch, SearchSpace

    from .config import DeviceRegistry
    from .lut import Lut

app = typer.Typer(
    name="chamlab",
    help="Platform-aware model adaptation (ChamNet): profile operators on devices into Parquet LUTs, "
    "predict and measure network latency.\n\nTypical session:\n\n"
    "  chamlab devices\n\n"
    "  chamlab profile --target local-cpu --space macro-cifar10\n\n"
    "  chamlab predict --space macro-cifar10 --arch 01201201 --target local-cpu\n\n"
    "  chamlab measure --target local-cpu --space macro-cifar10 --arch 01201201",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

DevicesOpt = Annotated[
    Path | None,
    typer.Option(
        "--devices",
        envvar="CHAMLAB_DEVICES",
        help="devices.toml to use (default: ./devices.toml, else the built-in local-cpu)",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")]
SpaceOpt = Annotated[str, typer.Option("--space", "-s", help="search space (see `chamlab spaces`)")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", "-j", min=1, max=256, help="runtime threads (default: the device's `threads`)"),
]
BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="xnnpack | portable (default: the device's)")
]
RawOpt = Annotated[
    bool, typer.Option("--raw", help="predict the plain sum of op p50s (no invocation-overhead correction)")
]


def _handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ChamlabError as exc:
            err.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
            if exc.hint:
                err.print(f"  hint: {escape(exc.hint)}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted: re-run the same command to resume (finished ops are kept)")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _registry(devices: Path | None) -> DeviceRegistry:
    from .config import load_registry

    return load_registry(devices)


def _space(name: str) -> SearchSpace:
    from chamlab.chamnet.spaces import SPACES

    return SPACES.get(name)


def default_lut_path(target: str) -> Path:
    return Path("luts") / f"{target}.parquet"


# -- devices / spaces -----------------------------------------------------------------------------------
@app.command()
@_handle_errors
def devices(devices: DevicesOpt = None, as_json: JsonOpt = False) -> None:
    """List the targets of the device registry (devices.toml)."""
    reg = _registry(devices)
    if as_json:
        _emit_json({"source": reg.source, "devices": [d.model_dump() for d in reg]})
        return
    table = Table(title=f"devices from {reg.source}")
    for col in ("name", "transport", "backend", "dtype", "threads", "runner", "description"):
        table.add_column(col)
    for d in reg:
        table.add_row(
            d.name, d.transport, d.backend, d.dtype, str(d.threads), escape(d.runner), escape(d.description)
        )
    out.print(table)


@app.command()
@_handle_errors
def spaces(as_json: JsonOpt = False) -> None:
    """List the search spaces, their dimensions and named reference archs."""
    from chamlab.chamnet.spaces import SPACES

    items: list[dict[str, Any]] = []
    for name in SPACES.names():
        s = SPACES.get(name)
        items.append(
            {
                "name": name,
                "description": s.description,
                "size": str(s.size),
                "dimensions": {d.name: list(d.values) for d in s.dimensions},
                "references": {k: s.format(a) for k, a in s.references.items()},
            }
        )
    if as_json:
        _emit_json(items)
        return
    for it in items:
        out.print(f"[bold]{it['name']}[/]: {it['description']} ({int(it['size']):.3g} archs)")
        for ref, text in it["references"].items():
            out.print(f"  --arch {ref:<16} = {text}")


# -- profile ------------------------------------------------------------------------------------------
class _RichProgress:
    """Progress bars on stderr (quiet when stderr is not a terminal)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[label]}"),
            console=err,
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        return self  # the display starts with the first phase: early errors print nothing else

    def __exit__(self, *exc: object) -> None:
        if self._tasks:
            self._progress.stop()

    def start(self, phase: str, total: int) -> None:
        if not self._tasks:
            self._progress.start()
        self._tasks[phase] = self._progress.add_task(phase, total=total, label="")

    def advance(self, phase: str, label: str = "") -> None:
        self._progress.update(self._tasks[phase], advance=1, label=label[:60])

    def note(self, text: str) -> None:
        self._progress.console.print(escape(text), soft_wrap=True)


def _archs_from_options(
    space: SearchSpace, archs: list[str] | None, sample: int | None, seed: int
) -> list[Arch] | None:
    chosen: list[Arch] = [space.resolve(a) for a in archs or []]
    if sample:
        import numpy as np

        chosen += space.sample(np.random.default_rng(seed), sample)
    return chosen or None


@app.command()
@_handle_errors
def profile(
    target: Annotated[str, typer.Option("--target", "-t", help="device name from devices.toml")],
    space: SpaceOpt,
    threads: ThreadsOpt = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="LUT file to create or extend (default: luts/<target>.parquet)",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            "-a",
            help="profile only the ops of this arch "
            "(repeatable; a reference name or the space's string form)",
        ),
    ] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="also profile the ops of N random archs")] = None,
    seed: Annotated[int, typer.Option(help="seed for --sample")] = 0,
    backend: BackendOpt = None,
    force: Annotated[bool, typer.Option(help="re-measure ops the LUT already holds")] = False,
    breakdown: Annotated[
        bool, typer.Option(help="also record the per-op ETDump breakdown (Inspector)")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="parallel export processes (default: the number of CPUs)")
    ] = None,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure every operator a space needs on a target and store them in a Parquet LUT.

    Without --arch/--sample, a small space (<= 100,000 archs, e.g. macro-cifar10) is profiled
    exhaustively and a large one (chamnet-mbv2) over its reference archs. Ops already in the LUT
    for this target/backend/threads are skipped, so re-running resumes.
    """
    from .profiling import profile as run_profile

    device = _registry(devices).get(target)
    sp = _space(space)
    chosen = _archs_from_options(sp, arch, sample, seed)
    lut_path = out_path or default_lut_path(target)
    if out_path is None:
        lut_path.parent.mkdir(parents=True, exist_ok=True)
    with _RichProgress() as progress:
        report = run_profile(
            device,
            sp,
            chosen,
            out=lut_path,
            threads=threads,
            backend=backend,
            force=force,
            breakdown=breakdown,
            workers=workers,
            progress=progress,
            command=shlex.join(["chamlab", *sys.argv[1:]]),
        )
    if as_json:
        _emit_json(report.to_json())
    elif report.planned == report.already:
        err.print(
            escape(f"nothing to measure: all {report.planned} ops are already in {lut_path}"), soft_wrap=True
        )
    else:
        err.print(
            escape(
                f"{len(report.measured)} ops measured ({report.already} already in the LUT) -> {lut_path}; "
                f"export {report.export_s:.1f} s, measure {report.measure_s:.1f} s"
            ),
            soft_wrap=True,
        )
        if report.unstable:
            err.print(
                f"[yellow]{len(report.unstable)} op(s) stayed unstable after re-measuring "
                "(flagged in the LUT column `unstable`)[/]"
            )
    if report.failed:
        for key, msg in report.failed:
            err.print(f"[red]failed[/] {escape(key)}: {escape(msg)}", soft_wrap=True)
        err.print(f"{len(report.failed)} op(s) failed; re-run the same command to retry them")
        raise typer.Exit(1)


# -- predict ------------------------------------------------------------------------------------------
def _lut_for(lut_path: Path | None, target: str | None) -> tuple[Lut | None, Path | None]:
    from .lut import Lut

    if lut_path is not None:
        return Lut.read(lut_path), lut_path
    if target is not None and default_lut_path(target).exists():
        return Lut.read(default_lut_path(target)), default_lut_path(target)
    return None, None


def _combination(
    lut: Lut, path: Path, target: str | None, backend: str | None, threads: int | None
) -> tuple[str, str, str, int]:
    combos = lut.combinations()
    matching = [
        c
        for c in combos
        if (target is None or c[0] == target)
        and (backend is None or c[1] == backend)
        and (threads is None or c[3] == threads)
    ]
    listed = "; ".join(f"target={d} backend={b} dtype={t} threads={n}" for d, b, t, n in combos) or "nothing"
    if not matching:
        raise LutError(
            f"LUT {path} has no rows for target={target or '*'} backend={backend or '*'} "
            f"threads={threads or '*'}; it holds: {listed}",
            hint=f"profile them with `chamlab profile --target NAME --space SPACE --threads N --out {path}`",
        )
    if len(matching) > 1:
        raise InputError(
            f"LUT {path} holds several measurement sets ({listed}); choose one with "
            "--target/--backend/--threads"
        )
    return matching[0]


def _profile_hint(space: SearchSpace, arch_text: str, device: str, threads: int, path: Path) -> str:
    cmd = [
        "chamlab",
        "profile",
        "--target",
        device,
        "--space",
        space.name,
        "--threads",
        str(threads),
        "--out",
        str(path),
    ]
    from .profiling import EXHAUSTIVE_LIMIT

    if space.size > EXHAUSTIVE_LIMIT:  # a large space is not profiled exhaustively: name the arch
        cmd += ["--arch", arch_text]
    return f"fill them with `{shlex.join(cmd)}`"


def _prediction(
    space: SearchSpace, arch: Arch, lut: Lut, path: Path, combo: tuple[str, str, str, int], raw: bool = False
) -> dict[str, Any]:
    from chamlab.chamnet.predictors.latency import LutLatencyPredictor
    from chamlab.operators.errors import MissingLutEntriesError

    device, backend, dtype, threads = combo
    predictor = LutLatencyPredictor(
        lut.p50_by_key(*combo), correct_overhead=not raw, what=f"LUT {path} ({device}, {threads} thread(s))"
    )
    try:
        pred = predictor.predict(space.ops(arch))
    except MissingLutEntriesError as exc:
        exc.hint = _profile_hint(space, space.format(arch), device, threads, path)
        raise
    return {
        "latency_ms": pred.latency_ms,
        "lut_sum_ms": pred.lut_sum_ms,
        "invocation_overhead_ms": pred.invocation_overhead_ms,
        "lut": {"path": str(path), "target": device, "backend": backend, "dtype": dtype, "threads": threads},
        "ops": [
            {
                "op_key": c.op.key,
                "op_type": c.op.op_type,
                "count": c.count,
                "p50_ms": c.p50_ms,
                "total_ms": c.total_ms,
                "macs": c.op.macs,
            }
            for c in pred.ops
        ],
    }


@app.command()
@_handle_errors
def predict(
    space: SpaceOpt,
    arch: Annotated[str, typer.Option("--arch", "-a", help="a reference name or the space's string form")],
    lut: Annotated[
        Path | None,
        typer.Option(
            "--lut",
            help="LUT to predict latency from (default: luts/<target>.parquet when --target is given)",
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="use the LUT rows of this device")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", "-j", min=1, help="use the LUT rows measured with N threads")
    ] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="use the LUT rows of this backend")] = None,
    raw: RawOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """MACs, parameters and (with a LUT) the predicted latency of one architecture, op by op.

    The prediction is the sum of the ops' p50 minus (n_ops - 1) invocation overheads (measured by
    `profile` as the invocation probe); --raw gives the plain sum.
    """
    sp = _space(space)
    a = sp.resolve(arch)
    result: dict[str, Any] = {
        "space": sp.name,
        "arch": sp.format(a),
        "input_shape": list(sp.input_shape(a)),
        "macs": sp.macs(a),
        "params": sp.params(a),
        "latency_ms": None,
        "lut_sum_ms": None,
        "invocation_overhead_ms": None,
        "lut": None,
        "ops": None,
    }
    table, path = _lut_for(lut, target)
    if table is not None and path is not None:
        result.update(
            _prediction(sp, a, table, path, _combination(table, path, target, backend, threads), raw)
        )
    if as_json:
        _emit_json(result)
        return
    out.print(
        f"[bold]{sp.name}[/] {result['arch']}: {result['macs'] / 1e6:.2f} M MACs, "
        f"{result['params'] / 1e6:.3f} M params"
    )
    if result["ops"] is None:
        err.print("no LUT given: pass --lut PATH or --target NAME for a latency prediction")
        return
    t = Table(
        title=f"predicted latency from {path} ({result['lut']['target']}, "
        f"{result['lut']['threads']} thread(s))"
    )
    for col in ("op", "count", "p50 ms", "total ms"):
        if col == "op":
            t.add_column(col, overflow="fold")  # keys wrap rather than lose their tail
        else:
            t.add_column(col, justify="right", no_wrap=True)
    for o in result["ops"]:
        t.add_row(o["op_key"], str(o["count"]), f"{o['p50_ms']:.4f}", f"{o['total_ms']:.4f}")
    t.add_row("sum", "", "", f"{result['lut_sum_ms']:.4f}")
    if result["invocation_overhead_ms"] is not None:
        n = sum(o["count"] for o in result["ops"])
        t.add_row(
            f"- {n - 1} x invocation overhead",
            "",
            f"{result['invocation_overhead_ms']:.4f}",
            f"-{(n - 1) * result['invocation_overhead_ms']:.4f}",
        )
    t.add_row("[bold]predicted latency[/]", "", "", f"[bold]{result['latency_ms']:.4f}[/]")
    out.print(t)


# -- measure ------------------------------------------------------------------------------------------
@app.command()
@_handle_errors
def measure(
    target: Annotated[str, typer.Option("--target", "-t", help="device name from devices.toml")],
    space: SpaceOpt,
    arch: Annotated[str, typer.Option("--arch", "-a", help="a reference name or the space's string form")],
    threads: ThreadsOpt = None,
    backend: BackendOpt = None,
    lut: Annotated[
        Path | None,
        typer.Option(
            "--lut",
            help="LUT for the prediction beside the measurement "
            "(default: luts/<target>.parquet if it exists)",
        ),
    ] = None,
    breakdown: Annotated[bool, typer.Option(help="also print the per-op ETDump breakdown")] = False,
    raw: RawOpt = False,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a whole network, measure it on a target and compare with the LUT prediction."""
    from chamlab.operators.errors import MissingLutEntriesError

    from .profiling import measure_network

    device = _registry(devices).get(target)
    sp = _space(space)
    a = sp.resolve(arch)
    threads = threads or device.threads
    backend = backend or device.backend
    table, path = _lut_for(lut, target)  # read before measuring: a bad LUT fails fast
    with _RichProgress() as progress:
        m = measure_network(
            device, sp, a, threads=threads, backend=backend, breakdown=breakdown, progress=progress
        )
    predicted = None
    note = None
    if table is not None and path is not None:
        try:
            combo = _combination(table, path, device.name, backend, threads)
            predicted = _prediction(sp, a, table, path, combo, raw)["latency_ms"]
        except (LutError, MissingLutEntriesError) as exc:
            note = f"no prediction: {exc}"
    result = {
        "space": sp.name,
        "arch": sp.format(a),
        "target": device.name,
        "backend": backend,
        "dtype": device.dtype,
        "threads": threads,
        "macs": sp.macs(a),
        "params": sp.params(a),
        "measured_p50_ms": m.stats["p50_ms"],
        "measured_p10_ms": m.stats["p10_ms"],
        "measured_p90_ms": m.stats["p90_ms"],
        "measured_mean_ms": m.stats["mean_ms"],
        "n_samples": m.n_samples,
        "unstable": m.unstable,
        "unstable_reasons": list(m.unstable_reasons),
        "predicted_ms": predicted,
        "error_pct": None
        if predicted is None
        else 100.0 * (predicted - m.stats["p50_ms"]) / m.stats["p50_ms"],
        "lut": str(path) if path else None,
        "artifact": str(m.artifact),
        "breakdown": list(m.breakdown) if m.breakdown is not None else None,
    }
    if note:
        err.print(escape(note), soft_wrap=True)
    if as_json:
        _emit_json(result)
        return
    out.print(f"[bold]{sp.name}[/] {result['arch']} on {device.name} ({backend}, {threads} thread(s))")
    out.print(
        f"  measured_p50_ms  {m.stats['p50_ms']:.4f}   (p10 {m.stats['p10_ms']:.4f}, p90 "
        f"{m.stats['p90_ms']:.4f}, n={m.n_samples}{', UNSTABLE' if m.unstable else ''})"
    )
    if predicted is not None:
        out.print(
            f"  predicted_ms     {predicted:.4f}   (LUT prediction{' (raw sum)' if raw else ''}, "
            f"error {result['error_pct']:+.1f}%)"
        )
    if m.breakdown:
        t = Table(title="ETDump breakdown (profiled pass)")
        t.add_column("event")
        t.add_column("p50 ms", justify="right")
        for ev in m.breakdown:
            t.add_row(ev["event"], f"{ev['p50_ms']:.4f}")
        out.print(t)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
