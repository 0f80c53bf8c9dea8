"""``chamlab``: the host controller's command line, a package of small command modules.

Each module parses its options, calls the library (:mod:`chamlab.host.api`) and prints; nothing
else. Sub-apps (``chamlab lut ...``, ``chamlab farm ...``) join with ``app.add_typer``. Exit codes:
0 success; 1 the work failed (partial results are kept); 2 bad input (nothing is written); 130
interrupted (re-run to resume). With ``--json`` the result goes to stdout (keys in docs/cli.md);
progress and messages always go to stderr.
"""

from __future__ import annotations

import typer

from .adapt import adapt
from .calibrate import calibrate
from .devices import devices_app, spaces
from .evaluate import evaluate
from .farm import farm_app
from .lut import lut_app
from .measure import measure
from .predict import predict
from .profile import profile
from .search import search

app = typer.Typer(
    name="chamlab",
    help="Platform-aware model adaptation (ChamNet): profile operators on devices into Parquet LUTs, "
    "predict and measure network latency.\n\nTypical session:\n\n"
    "  chamlab devices\n\n"
    "  chamlab profile --target local-cpu --space macro-cifar10\n\n"
    "  chamlab predict --space macro-cifar10 --arch 01201201 --target local-cpu\n\n"
    "  chamlab measure --target local-cpu --space macro-cifar10 --arch 01201201\n\n"
    "  chamlab adapt --target local-cpu --space macro-cifar10 --latency 0.3\n\n"
    "  chamlab lut merge luts/a.parquet luts/b.parquet -o luts/all.parquet\n\n"
    "  chamlab farm run --space macro-cifar10 --out farm",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(devices_app, name="devices")
app.command()(spaces)
app.command()(profile)
app.command()(predict)
app.command()(measure)
app.command()(evaluate)
app.add_typer(lut_app, name="lut")
app.add_typer(farm_app, name="farm")
app.command()(calibrate)
app.command()(search)
app.command()(adapt)


def main() -> None:
    app()


__all__ = ["app", "main"]
