"""``chamlab devices`` and ``chamlab spaces``: what can be measured, and in which spaces."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ._common import (
    DevicesOpt,
    JsonOpt,
    SerialOpt,
    device,
    emit_json,
    err,
    handle_errors,
    naming_devices_file,
    note,
    out,
    registry,
    shown,
)

devices_app = typer.Typer(
    help="List the targets of the device registry (devices.toml); --check probes them.",
    no_args_is_help=False,
)


@devices_app.callback(invoke_without_command=True)
@handle_errors
def devices(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="probe every device: reachability, model, SoC/CPU, cores, governor, runtime"
        ),
    ] = False,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=0.1, help="deadline of each device's probe, in seconds")
    ] = 15.0,
    serial: SerialOpt = None,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the targets of the device registry (devices.toml); --check probes each one.

    With --check the exit code is 1 when a device is unreachable. `chamlab devices trust NAME`
    records an ssh device's host key.
    """
    if ctx.invoked_subcommand:
        return
    reg = registry(devices)
    listed = [device(devices, None, serial)] if serial else list(reg)
    probes: dict[str, dict[str, Any]] = {}
    if check:
        from chamlab.host.devices.check import probe_all

        probes = {p["name"]: p for p in probe_all(listed, timeout_s)}
    if as_json:
        emit_json(
            {
                "source": reg.source,
                "devices": [
                    {**d.model_dump(mode="json"), **({"check": probes[d.name]} if check else {})}
                    for d in listed
                ],
            }
        )
    else:
        table = Table(title=f"devices from {reg.source}")
        cols = ["name", "transport", "backend", "threads", "runner"]
        cols += (
            ["reachable", "model", "soc / cpu", "cores", "governor", "runtime"] if check else ["description"]
        )
        for col in cols:
            table.add_column(col)
        for d in listed:
            row = [shown(d.name), d.transport, d.backend.value, str(d.threads), shown(d.runner)]
            if check:
                p = probes[d.name]
                row += [
                    "[green]yes[/]" if p["reachable"] else "[red]no[/]",
                    shown(p["model"] or "-"),
                    shown(p["soc"] or p["cpu"] or "-"),
                    shown(p["cores"] or "-"),
                    shown(p["governor"] or "-"),
                    shown(p["runtime_version"] or "-"),
                ]
            else:
                row.append(shown(d.description))
            table.add_row(*row)
        out.print(table)
        for p in probes.values():
            if p["error"]:
                why = naming_devices_file(p["error"], devices)
                err.print(f"[red]{shown(p['name'])}[/]: {shown(why)}", soft_wrap=True)
    if check and not all(p["reachable"] for p in probes.values()):
        raise typer.Exit(1)


@devices_app.command("trust")
@handle_errors
def trust(
    name: Annotated[str, typer.Argument(help="an ssh device of devices.toml")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="trust without asking")] = False,
    devices: DevicesOpt = None,
) -> None:
    """Show an ssh device's host key fingerprint and, once confirmed, record it in its known_hosts."""
    from chamlab.core.errors import ConfigError
    from chamlab.host.devices.transports.ssh import SshConfig, fetch_host_key, fingerprint, trust_host_key

    dev = registry(devices).get(name)
    if not isinstance(dev, SshConfig):
        raise ConfigError(f"device {name} uses transport {dev.transport!r}: only ssh devices have host keys")
    host, key = fetch_host_key(dev)
    note(f"{host} offers the {key.get_name()} host key {fingerprint(key)}")
    if not yes and not typer.confirm(f"trust it for device {name}?", default=False, err=True):
        err.print("not trusted; nothing written")
        raise typer.Exit(1)
    path = trust_host_key(dev, host, key)
    note(f"recorded in {path}")


@handle_errors
def spaces(as_json: JsonOpt = False) -> None:
    """List the search spaces, their dimensions, named reference archs and parameters
    (NAME@KEY=VALUE,...: e.g. chamnet-mbv2@res=32-96,classes=10; `adapt`/`search --fit` choose them
    from --data)."""
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
                "parameters": dict(s.parameters),
                "fit": s.fit_summary() or None,
            }
        )
    if as_json:
        emit_json(items)
        return
    for it in items:
        out.print(f"[bold]{it['name']}[/]: {it['description']} ({int(it['size']):.3g} archs)")
        for ref, text in it["references"].items():
            out.print(f"  --arch {ref:<16} = {text}")
        for key, text in it["parameters"].items():
            out.print(f"  --space {it['name']}@{key}=...  {text}", markup=False)
