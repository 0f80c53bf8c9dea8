"""``chamlab devices`` and ``chamlab spaces``: what can be measured, and in which spaces."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from ._common import DevicesOpt, JsonOpt, emit_json, handle_errors, out, registry


@handle_errors
def devices(devices: DevicesOpt = None, as_json: JsonOpt = False) -> None:
    """List the targets of the device registry (devices.toml)."""
    reg = registry(devices)
    if as_json:
        emit_json({"source": reg.source, "devices": [d.model_dump(mode="json") for d in reg]})
        return
    table = Table(title=f"devices from {reg.source}")
    for col in ("name", "transport", "backend", "dtype", "threads", "runner", "description"):
        table.add_column(col)
    for d in reg:
        table.add_row(
            d.name,
            d.transport,
            d.backend.value,
            d.dtype.value,
            str(d.threads),
            escape(d.runner),
            escape(d.description),
        )
    out.print(table)


@handle_errors
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
        emit_json(items)
        return
    for it in items:
        out.print(f"[bold]{it['name']}[/]: {it['description']} ({int(it['size']):.3g} archs)")
        for ref, text in it["references"].items():
            out.print(f"  --arch {ref:<16} = {text}")
