"""What every ``chamlab`` command shares: consoles, error handling, options, progress bars.

Commands are thin: they parse, call the library (:mod:`chamlab.host.api`) and print. Heavy imports
(torch, executorch, pyarrow, the library itself) happen inside commands, so ``chamlab --help`` is
instant. Exit codes: 0 success; 1 the work failed; 2 bad input (nothing written); 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from chamlab.core.errors import ChamlabError, ChamlabWarning
from chamlab.operators.base import Backend, Dtype

if TYPE_CHECKING:
    from chamlab.chamnet.spaces.base import Arch, SearchSpace
    from chamlab.host.devices.config import DeviceRegistry
    from chamlab.host.devices.transports import DeviceConfig

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
SpaceOpt = Annotated[
    str,
    typer.Option(
        "--space",
        "-s",
        help="search space (see `chamlab spaces`), optionally with parameters: NAME@KEY=VALUE,... "
        "(e.g. chamnet-mbv2@res=32-96,classes=10)",
    ),
]
ArchOpt = Annotated[str, typer.Option("--arch", "-a", help="a reference name or the space's string form")]
TargetOpt = Annotated[
    str | None, typer.Option("--target", "-t", help="device name from devices.toml", show_default=False)
]
SerialOpt = Annotated[
    str | None,
    typer.Option(
        "--serial",
        help="the device with this adb serial (its devices.toml entry, else an unlisted adb device)",
        show_default=False,
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", "-j", min=1, max=256, help="runtime threads (default: the device's `threads`)"),
]
ThreadsListOpt = Annotated[
    str | None,
    typer.Option(
        "--threads",
        "-j",
        help="runtime threads: N, or several comma-separated (1,2,4) searched with the arch: the winner is "
        "the most accurate (arch, threads) pair predicted under the limit (default: the device's `threads`)",
    ),
]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--batch",
        "-b",
        min=1,
        max=4096,
        help="input batch size: ops and networks are exported and measured (and LUT rows chosen) at N",
    ),
]
BackendOpt = Annotated[
    Backend | None, typer.Option("--backend", help="ExecuTorch backend (default: the device's)")
]
DtypeOpt = Annotated[
    Dtype | None,
    typer.Option("--dtype", help="element type: fp32, or int8 (quantized, xnnpack) (default: the device's)"),
]
QuantRecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--quant-recipe",
        help="int8 quantization recipe id (default: xnnpack-int8-pc-v1; see docs/int8.md)",
        show_default=False,
    ),
]
RawOpt = Annotated[
    bool, typer.Option("--raw", help="predict the plain sum of op p50s (no invocation-overhead correction)")
]
NoWaitOpt = Annotated[
    bool,
    typer.Option("--no-wait", help="if another run holds the device, exit 2 at once instead of waiting"),
]
# the accuracy oracle (search, adapt): host.oracles.choose_oracle takes these as they are
OracleOpt = Annotated[
    str, typer.Option("--oracle", help="accuracy oracle: table (the space's table) or train")
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="--oracle train: `digits`, an ImageFolder directory or a directory of IDX files "
        "(e.g. /usr/share/datasets/fashion-mnist)",
    ),
]
FitOpt = Annotated[
    bool,
    typer.Option(
        "--fit",
        help="fit the network space to --data: its input resolutions and classifier outputs follow the "
        "data's image side and classes (e.g. chamnet-mbv2 on 28 px, 10-class images becomes "
        "chamnet-mbv2@res=32-96,classes=10; other commands take that name as --space)",
    ),
]
ExecutorOpt = Annotated[
    str | None, typer.Option("--executor", help="--oracle train: process (default) or ray")
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="--executor ray: the cluster (default: a private one)")
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=1, help="--oracle train: parallel trainings")
]
ScheduleOpt = Annotated[
    str | None,
    typer.Option("--schedule", help="--oracle train: proxy schedule overrides, e.g. epochs=1,max_train=2000"),
]
AccuracyOpt = Annotated[
    str | None,
    typer.Option(
        "--accuracy",
        help="accuracy to optimise: fp32 or int8 (quantized after training; --oracle train only) "
        "(default: the --dtype; table oracles have fp32 only)",
    ),
]
LocalSearchOpt = Annotated[
    int,
    typer.Option(
        "--local-search",
        min=0,
        metavar="ROUNDS",
        help="spaces too large to enumerate (over 100,000 archs): rounds of climbing the acquisition "
        "through single-dimension mutations of its best pool candidates before each pick; 0 resumes a "
        "run made before this was the default (docs/search.md)",
    ),
]
CostFeatureOpt = Annotated[
    bool,
    typer.Option(
        "--cost-feature/--no-cost-feature",
        help="give the accuracy GP the log of each network's primary cost (latency, FLOPs) as one more "
        "input: bigger networks are usually more accurate, and the GP learns how far that holds; "
        "--no-cost-feature resumes a run made before this was the default (docs/search.md)",
    ),
]
MergeEquivalentOpt = Annotated[
    bool,
    typer.Option(
        "--merge-equivalent/--ask-every-name",
        help="ask each network once: an arch that builds a network already asked under another name "
        "(the same op list, e.g. an identity layer moved within a stage) is skipped; --ask-every-name "
        "resumes a run made before this was the default",
    ),
]


#: C0 and C1 control characters (ESC, BEL, CR, backspace, ...) but tab and newline
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: object) -> str:
    """``text`` safe to put on a terminal: each control character (an ESC starting an escape
    sequence, a BEL, a carriage return hiding what came before) shown as its ``\\xNN`` code instead.
    For anything a config file, a device or a file on disk puts in front of the user."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def shown(text: object) -> str:
    """:func:`plain`, escaped for rich markup: config text inside a ``Console.print`` string."""
    return escape(plain(text))


_TRUST = re.compile(r"`chamlab devices trust ([^`\s]+)`")


def naming_devices_file(text: str, devices: Path | None) -> str:
    """``text`` with each `chamlab devices trust NAME` it suggests given the ``--devices FILE`` in use
    when that is not the default (./devices.toml), so the suggested command finds the device."""
    if devices is None or Path(devices).resolve() == (Path.cwd() / "devices.toml").resolve():
        return text
    return _TRUST.sub(
        lambda m: f"`chamlab devices trust {m.group(1)} --devices {shlex.quote(str(devices))}`", text
    )


def _fail(as_json: bool, message: str, hint: str | None, code: int) -> typer.Exit:
    """Print an error (stderr; plus a JSON object on stdout under ``--json``) and the exit to raise."""
    err.print(f"[bold red]error:[/] {shown(message)}", soft_wrap=True)
    if hint:
        err.print(f"  hint: {shown(hint)}", soft_wrap=True)
    if as_json:
        emit_json({"error": message, "hint": hint, "exit_code": code})
    return typer.Exit(code)


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A warning as one line on stderr (``warnings.showwarning`` while a command runs): chamlab's
    own as ``warning: TEXT``, a library's with the library's name, never a source path."""
    text = next((t for t in str(message).strip().splitlines() if t.strip()), category.__name__)
    if issubclass(category, ChamlabWarning):
        err.print(f"[yellow]warning:[/] {shown(text)}", soft_wrap=True)
        return
    parts = Path(filename).parts
    where = next(
        (parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("site-packages", "dist-packages")), None
    )
    source = where.removesuffix(".py") if where else Path(filename).stem
    err.print(f"[yellow]warning[/] ({source}, {category.__name__}): {shown(text)}", soft_wrap=True)


def handle_errors(fn: F) -> F:
    """Print a :class:`ChamlabError` as one line (plus its hint) and exit with its code. Under
    ``--json`` (a command's ``as_json``) stdout gets ``{"error", "hint", "exit_code"}`` too, so a
    script reading stdout always reads one JSON document. Warnings print as one line each
    (:func:`show_warning`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return _run(*args, **kwargs)

    def _run(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except ChamlabError as exc:
            devices = kwargs.get("devices")
            hint = naming_devices_file(exc.hint, devices) if exc.hint else exc.hint
            raise _fail(as_json, naming_devices_file(exc.message, devices), hint, exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted: re-run the same command to resume (finished ops are kept)")
            if as_json:
                hint = "re-run the same command to resume"
                emit_json({"error": "interrupted", "hint": hint, "exit_code": 130})
            raise typer.Exit(130) from None
        except OSError as exc:  # the library names paths in WriteError; this is the safety net
            where = f" ({exc.filename})" if exc.filename else ""
            raise _fail(as_json, f"{exc.strerror or exc}{where}", None, 1) from None

    return wrapper  # type: ignore[return-value]


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def note(text: str) -> None:
    err.print(shown(text), soft_wrap=True)


def command_line() -> str:
    return shlex.join(["chamlab", *sys.argv[1:]])


def registry(devices: Path | None) -> DeviceRegistry:
    from chamlab.host.devices.config import load_registry

    return load_registry(devices)


def device(devices: Path | None, target: str | None, serial: str | None) -> DeviceConfig:
    """The device ``--target``/``--serial`` name (a warning on stderr for an unlisted adb device)."""
    from chamlab.host.devices.config import resolve_device

    dev, warning = resolve_device(registry(devices), target, serial)
    if warning:
        err.print(f"[yellow]warning:[/] {shown(warning)}", soft_wrap=True)
    return dev


def space(name: str) -> SearchSpace:
    from chamlab.chamnet.spaces import SPACES

    return SPACES.get(name)


def archs_from_options(
    sp: SearchSpace, archs: list[str] | None, sample: int | None, seed: int
) -> list[Arch] | None:
    chosen: list[Arch] = [sp.resolve(a) for a in archs or []]
    if sample:
        import numpy as np

        chosen += sp.sample(np.random.default_rng(seed), sample)
    return chosen or None


def value(enum: Backend | Dtype | None) -> str | None:
    return enum.value if enum is not None else None


class RichProgress:
    """Progress bars on stderr; implements :class:`chamlab.host.measurement.pipeline.Progress`."""

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

    def __enter__(self) -> RichProgress:
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
