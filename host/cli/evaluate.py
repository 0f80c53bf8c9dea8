"""``chamlab evaluate``: the top-1 accuracy of an ExecuTorch program on a dataset's validation split,
through the ExecuTorch runtime of this host, or of a device (``--target``/``--serial``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._common import DevicesOpt, JsonOpt, SerialOpt, device, emit_json, handle_errors, note, out


@handle_errors
def evaluate(
    pte: Annotated[Path, typer.Option("--pte", help="the ExecuTorch program (.pte) to evaluate")],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="`digits`, an ImageFolder directory or a directory of IDX files "
            "(e.g. /usr/share/datasets/fashion-mnist); its validation split is evaluated",
        ),
    ],
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="the program's manifest (default: PTE with suffix .json, e.g. model.json, when it is one)",
        ),
    ] = None,
    no_manifest: Annotated[
        bool,
        typer.Option(
            "--no-manifest",
            help="ignore any manifest: map the data as the training oracle does (the training split's "
            "mean/std, or --mean/--std)",
        ),
    ] = False,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule",
            help="the split, as the oracle's --schedule gives it: seed, val_fraction, max_train, max_val "
            "(e.g. max_train=2000; default: the manifest's split, else the schedule defaults)",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="the split's seed (overrides --schedule's)")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="evaluate only the first N images of the split")
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            "--mean", help="without a manifest: per-channel mean of pixels/255, e.g. 0.49,0.48,0.45"
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option("--std", help="without a manifest: per-channel standard deviation, e.g. 0.25,0.24,0.26"),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-j", min=1, max=256, help="runtime threads (default: the runtime's)"),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            help="run the program on this device of devices.toml (its python runs the agent and its own "
            "ExecuTorch; the host maps and pushes the images) instead of this host's runtime",
            show_default=False,
        ),
    ] = None,
    serial: SerialOpt = None,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate an ExecuTorch program's top-1 accuracy on the validation split of --data (the training
    oracle's split and input mapping, so it compares with the oracle's PyTorch accuracy); the
    program's manifest (model.json beside model.pte) gives the input mapping when there is one.
    With --target (or --serial) the program runs on that device's own runtime (docs/manifest.md)."""
    from chamlab.chamnet.training import Schedule
    from chamlab.host import api

    sched = Schedule.parse(schedule) if schedule is not None else None
    dev = device(devices, target, serial) if target or serial else None
    report = api.evaluate_program(
        pte,
        data,
        manifest=manifest,
        use_manifest=not no_manifest,
        schedule=sched,
        seed=seed,
        limit=limit,
        mean=_floats("--mean", mean),
        std=_floats("--std", std),
        threads=threads,
        device=dev,
        progress=note,
    )
    for text in report.notes:
        note(text)
    if as_json:
        emit_json(report.to_json())
        return
    s = report.split
    mapping = f"manifest {report.manifest}" if report.manifest else "the oracle's mapping (no manifest)"
    out.print(
        f"[bold]{escape(str(report.program))}[/] on {escape(report.dataset)}: val split (seed {s.seed}, "
        f"{report.n} of {report.n_split} images), input {'x'.join(map(str, report.input.shape))} "
        f"fed as {escape(mapping)}",
        soft_wrap=True,
    )
    out.print(
        f"  executorch {report.runtime_version} on {escape(report.device)} ({report.threads} thread(s), "
        f"batch {report.batch}): "
        f"top-1 {report.accuracy_pct:.2f}%  ({report.correct}/{report.n})  in {report.seconds:.1f} s",
        soft_wrap=True,
    )
    for runtime, dtype, acc in report.recorded:
        out.print(f"  recorded in the manifest: {runtime} {dtype} {acc:.2f}%")


def _floats(flag: str, text: str | None) -> tuple[float, ...] | None:
    from chamlab.core.errors import InputError

    if text is None:
        return None
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise InputError(
            f"{flag} {text!r} is not a comma-separated list of numbers such as 0.5,0.5,0.5"
        ) from None
