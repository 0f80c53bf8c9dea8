"""``DIR/index.html`` of a farm folder: every night and device, and each device's trend over nights.

Rebuilt (atomically: temp file + rename) at the end of every ``chamlab farm run`` and by ``chamlab
farm index``. It reads only the nights' ``summary.json`` files (never a LUT), so it costs nothing next
to a run, and it never fails on a night: a dated folder whose ``summary.json`` is missing, unreadable
or not a farm summary is listed with the reason and left out of the trends.

The page is self-contained (no script, no external file: the trends are inline SVG drawn here) and
every string that comes from a file (device names, descriptions, errors, notes) is HTML-escaped.
Per device, the trend shows night by night what that night's report said: the median p50 drift of
the ops against the device's previous good run (``drift.median_drift_pct``) and the median drift of
the reference networks' predicted latency (``drift.reference_median_drift_pct``), with the nights
whose drift passed the threshold (``drift.drifted``) marked, and the nights without a value (no
previous good run, failed, skipped) marked on the axis.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from chamlab.core.errors import InputError
from chamlab.core.files import atomic_write_text

DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")

INDEX = "index.html"

_VERDICT = {0: "all good", 1: "a device failed, was partial or skipped", 3: "drift beyond the threshold"}


def esc(text: object) -> str:
    """``text`` safe inside HTML or SVG text and quoted attributes."""
    return html.escape(str(text), quote=True)


def _num(x: Any) -> float | None:
    """A finite number from a summary, or None (a hand-edited or damaged file may hold anything)."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


@dataclasses.dataclass
class Night:
    """One dated folder of the farm: its summary, or why it has none usable."""

    date: str
    summary: dict[str, Any] | None
    problem: str | None = None
    files: frozenset[str] = frozenset()  # which of report.html, report.md, summary.json exist

    @property
    def devices(self) -> dict[str, Any]:
        return self.summary["devices"] if self.summary is not None else {}


def read_night(folder: Path) -> Night:
    """The night in ``folder``; never raises for what the folder holds."""
    files = frozenset(n for n in ("report.html", "report.md", "summary.json") if (folder / n).is_file())
    path = folder / "summary.json"
    if "summary.json" not in files:
        why = "no summary.json (a run that stopped before writing it, or not a farm run's folder)"
        return Night(folder.name, None, why, files)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return Night(folder.name, None, f"summary.json unreadable: {exc.strerror or exc}", files)
    except UnicodeDecodeError:
        return Night(folder.name, None, "summary.json unreadable: not UTF-8 text", files)
    except ValueError as exc:
        return Night(folder.name, None, f"summary.json unreadable: not JSON ({exc})", files)
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        return Night(folder.name, None, 'summary.json is not a farm summary (no "devices" object)', files)
    devices = {str(k): v for k, v in data["devices"].items()}
    return Night(folder.name, {**data, "devices": devices}, None, files)


def is_date(name: str) -> bool:
    """Whether ``name`` is a real ``YYYY-MM-DD`` date (a farm night's folder name)."""
    if not DATE_DIR.match(name):
        return False
    try:
        dt.date.fromisoformat(name)
    except ValueError:  # 2020-13-45
        return False
    return True


def dated_runs(out: Path) -> list[str]:
    """The ``YYYY-MM-DD`` run folders of a farm folder (real dates), oldest first."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.is_symlink() and is_date(p.name))


def read_nights(out: Path) -> list[Night]:
    """Every dated folder of the farm folder ``out``, oldest first."""
    return [read_night(out / d) for d in dated_runs(out)]


@dataclasses.dataclass(frozen=True)
class Point:
    """One device on one night, as the trend shows it."""

    night: str
    status: str
    ops_pct: float | None  # median p50 drift of the ops against the previous good run
    refs_pct: float | None  # median drift of the reference networks' predicted latency
    drifted: bool
    threshold_pct: float | None
    why: str  # the night's error for the device, or why there is no drift value


def device_points(nights: Sequence[Night], device: str) -> list[Point]:
    """The device's points, oldest first, over the readable nights that hold an entry for it."""
    points = []
    for n in nights:
        entry = n.devices.get(device)
        if n.summary is None or entry is None:
            continue
        threshold = _num(n.summary.get("drift_threshold_pct"))
        if not isinstance(entry, dict):
            points.append(Point(n.date, "unreadable", None, None, False, threshold, "entry is not an object"))
            continue
        status = str(entry.get("status", "unknown"))
        drift = entry.get("drift")
        drift = drift if isinstance(drift, dict) else {}
        why = str(entry.get("error") or "")
        if not drift and not why:
            why = "no previous good run to diff against" if status in ("ok", "partial") else status
        points.append(
            Point(
                n.date,
                status,
                _num(drift.get("median_drift_pct")),
                _num(drift.get("reference_median_drift_pct")),
                drift.get("drifted") is True,
                threshold,
                why,
            )
        )
    return points


# -- the trend picture (inline SVG) --------------------------------------------------------------------
_W, _H = 960, 330
_LEFT, _RIGHT, _TOP, _BOTTOM, _INSET = 70, 20, 44, 78, 18
_OPS, _REFS, _DRIFT, _MUTED = "#1f6fb4", "#e07000", "#d62728", "#777"


def _nice_step(span: float) -> float:
    raw = span / 4
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f} %"


def _abs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:g} %"


@dataclasses.dataclass(frozen=True)
class _Frame:
    """The trend's coordinates: nights on x (``dates`` span the plot area), drift in % on y, from
    ``-ymax`` to ``ymax`` with grid lines every ``step``."""

    d0: int  # the first night's ordinal
    span: int  # days from the first night to the last
    ymax: float
    step: float
    pw: float = _W - _LEFT - _RIGHT
    ph: float = _H - _TOP - _BOTTOM

    @classmethod
    def of(cls, points: Sequence[Point], dates: Sequence[str]) -> _Frame:
        days = [dt.date.fromisoformat(d).toordinal() for d in dates]
        values = [abs(v) for p in points for v in (p.ops_pct, p.refs_pct) if v is not None]
        top = max([*values, _threshold(points) or 0.0, 1.0]) * 1.15
        step = _nice_step(2 * top)
        return cls(min(days), max(days) - min(days), math.ceil(top / step) * step, step)

    def x(self, night: str) -> float:  # inset: a point never sits on the frame
        if self.span == 0:
            return _LEFT + self.pw / 2
        days = dt.date.fromisoformat(night).toordinal() - self.d0
        return _LEFT + _INSET + days / self.span * (self.pw - 2 * _INSET)

    def y(self, v: float) -> float:
        return _TOP + (self.ymax - v) / (2 * self.ymax) * self.ph


def _threshold(points: Sequence[Point]) -> float | None:
    """The latest night's drift threshold (the one drawn)."""
    thresholds = [p.threshold_pct for p in points if p.threshold_pct is not None]
    return thresholds[-1] if thresholds else None


def trend_svg(device: str, points: Sequence[Point], dates: Sequence[str]) -> str:
    """An inline SVG of ``device``'s drift night by night; ``dates`` (oldest first) span the x axis,
    the same for every device of the page."""
    f = _Frame.of(points, dates)
    s = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="drift of {esc(device)} night by night">',
        f"<title>{esc(device)}: median drift night by night</title>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{f.pw}" height="{f.ph}" fill="#fafafa" stroke="#ccc"/>',
        *_drift_bands(f, points),  # behind everything
        *_axes(f, dates, _threshold(points)),
        *_series(f, points),
        *_markers(f, points),
        _legend(),
        "</svg>",
    ]
    return "\n".join(s)


def _drift_bands(f: _Frame, points: Sequence[Point]) -> list[str]:
    """A shaded band and a "drift" label over each drifted night."""
    band = max(6.0, min(28.0, (f.pw - 2 * _INSET) / max(f.span, 1) * 0.7))
    return [
        f'<g class="drifted" data-night="{esc(p.night)}"><title>{esc(p.night)}: drifted '
        f"(ops {esc(_pct(p.ops_pct))}, threshold {esc(_abs(p.threshold_pct))})</title>"
        f'<rect x="{f.x(p.night) - band / 2:.1f}" y="{_TOP}" width="{band:.1f}" height="{f.ph}" '
        f'fill="{_DRIFT}" fill-opacity="0.13"/>'
        f'<text x="{f.x(p.night):.1f}" y="{_TOP - 4}" text-anchor="middle" font-size="11" '
        f'fill="{_DRIFT}">drift</text></g>'
        for p in points
        if p.drifted
    ]


def _axes(f: _Frame, dates: Sequence[str], threshold: float | None) -> list[str]:
    """The y grid with its zero line, the +-threshold lines, the y label and the x labels (every
    night when they fit, else evenly spaced ones and the last)."""
    s = []
    v = -f.ymax
    while v <= f.ymax + 1e-9:
        zero = abs(v) < 1e-9
        s.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{f.y(v):.1f}" y2="{f.y(v):.1f}" '
            f'stroke="{"#555" if zero else "#e4e4e4"}" stroke-width="{1 if zero else 0.8}"/>'
            f'<text x="{_LEFT - 6}" y="{f.y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#444">'
            f"{v:+g} %</text>"
        )
        v += f.step
    for t in (threshold, -threshold) if threshold is not None else ():
        s.append(
            f'<line class="threshold" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{f.y(t):.1f}" y2="{f.y(t):.1f}" '
            f'stroke="{_DRIFT}" stroke-opacity="0.55" stroke-dasharray="5 4"/>'
        )
    s.append(
        f'<text x="14" y="{_TOP + f.ph / 2:.1f}" font-size="11" fill="#444" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + f.ph / 2:.1f})">drift vs previous good run (%)</text>'
    )
    every = max(1, math.ceil(len(dates) / 16))
    for d in (d for i, d in enumerate(dates) if i % every == 0 or i == len(dates) - 1):
        xs, yb = f.x(d), _TOP + f.ph
        s.append(
            f'<line x1="{xs:.1f}" x2="{xs:.1f}" y1="{yb}" y2="{yb + 4}" stroke="#555"/>'
            f'<text x="{xs:.1f}" y="{yb + 16}" font-size="11" fill="#444" text-anchor="end" '
            f'transform="rotate(-35 {xs:.1f} {yb + 16})">{esc(d)}</text>'
        )
    return s


def _series(f: _Frame, points: Sequence[Point]) -> list[str]:
    """The two series as lines between consecutive nights that both have a value."""
    s = []
    for attr, colour, dash in (("ops_pct", _OPS, ""), ("refs_pct", _REFS, ' stroke-dasharray="6 3"')):
        run: list[str] = []
        for q in [*points, None]:
            val = getattr(q, attr) if q is not None else None
            if val is not None and q is not None:
                run.append(f"{f.x(q.night):.1f},{f.y(val):.1f}")
                continue
            if len(run) > 1:
                s.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                    f'stroke-width="2"{dash}/>'
                )
            run = []
    return s


def _markers(f: _Frame, points: Sequence[Point]) -> list[str]:
    """Each night's points with a tooltip (a ring around a drifted night's ops point); a night
    without a value gets a marker on the zero line that says why (failed, skipped, first night)."""
    s = []
    for p in points:
        xs = f.x(p.night)
        tip = f"{p.night}: {p.status}; ops {_pct(p.ops_pct)}, reference networks {_pct(p.refs_pct)}" + (
            "; DRIFTED" if p.drifted else ""
        )
        if p.refs_pct is not None:
            s.append(
                f'<rect class="refs" data-night="{esc(p.night)}" x="{xs - 4:.1f}" '
                f'y="{f.y(p.refs_pct) - 4:.1f}" '
                f'width="8" height="8" fill="{_REFS}"><title>{esc(tip)}</title></rect>'
            )
        if p.ops_pct is not None:
            ring = (
                f'<circle cx="{xs:.1f}" cy="{f.y(p.ops_pct):.1f}" r="8" fill="none" stroke="{_DRIFT}" '
                f'stroke-width="2"/>'
                if p.drifted
                else ""
            )
            s.append(
                f'{ring}<circle class="ops" data-night="{esc(p.night)}" cx="{xs:.1f}" '
                f'cy="{f.y(p.ops_pct):.1f}" '
                f'r="4.5" fill="{_OPS}"><title>{esc(tip)}</title></circle>'
            )
        if p.ops_pct is None and p.refs_pct is None:
            mark = "\u00d7" if p.status not in ("ok", "partial") else "\u25cb"
            colour = _DRIFT if p.status == "failed" else _MUTED
            s.append(
                f'<text class="novalue" data-night="{esc(p.night)}" x="{xs:.1f}" y="{f.y(0) + 5:.1f}" '
                f'text-anchor="middle" font-size="15" fill="{colour}"><title>{esc(p.night)}: '
                f"{esc(p.status)}: {esc(p.why)}</title>{mark}</text>"
            )
    return s


def _legend() -> str:
    lx, ly = _LEFT + 4, 16
    return (
        f'<g font-size="12" fill="#222">'
        f'<line x1="{lx}" x2="{lx + 22}" y1="{ly}" y2="{ly}" stroke="{_OPS}" stroke-width="2"/>'
        f'<circle cx="{lx + 11}" cy="{ly}" r="4" fill="{_OPS}"/>'
        f'<text x="{lx + 28}" y="{ly + 4}">ops: median p50 drift</text>'
        f'<line x1="{lx + 190}" x2="{lx + 212}" y1="{ly}" y2="{ly}" stroke="{_REFS}" stroke-width="2" '
        f'stroke-dasharray="6 3"/><rect x="{lx + 197}" y="{ly - 4}" width="8" height="8" fill="{_REFS}"/>'
        f'<text x="{lx + 218}" y="{ly + 4}">reference networks: median predicted-latency drift</text>'
        f'<rect x="{lx + 535}" y="{ly - 7}" width="12" height="14" fill="{_DRIFT}" fill-opacity="0.13"/>'
        f'<circle cx="{lx + 541}" cy="{ly}" r="6" fill="none" stroke="{_DRIFT}" stroke-width="2"/>'
        f'<text x="{lx + 553}" y="{ly + 4}">drifted night</text>'
        f'<line x1="{lx + 650}" x2="{lx + 672}" y1="{ly}" y2="{ly}" stroke="{_DRIFT}" stroke-opacity="0.55" '
        f'stroke-dasharray="5 4"/><text x="{lx + 678}" y="{ly + 4}">\u00b1threshold</text>'
        f'<text x="{lx + 760}" y="{ly + 4}" fill="{_MUTED}">\u00d7 \u25cb no value</text></g>'
    )


# -- the page ---------------------------------------------------------------------------------------------
def _href(night: str, name: str, fragment: str | None = None) -> str:
    return quote(f"{night}/{name}") + (f"#{quote(fragment, safe='')}" if fragment else "")


def _cell(night: Night, device: str) -> str:
    entry = night.devices.get(device)
    if entry is None:
        return '<td class="absent" title="not in this run">\u2014</td>'
    if not isinstance(entry, dict):
        return '<td class="failed">entry unreadable</td>'
    status = str(entry.get("status", "unknown"))
    drift = entry.get("drift")
    drift = drift if isinstance(drift, dict) else {}
    ops = _num(drift.get("median_drift_pct"))
    drifted = drift.get("drifted") is True
    text = esc(status) + (f" {esc(_pct(ops))}" if ops is not None else "")
    if drifted:
        text += ' <span class="badge">drift</span>'
    title = str(entry.get("error") or "")
    if "report.html" in night.files:
        text = f'<a href="{esc(_href(night.date, "report.html", f"device-{device}"))}">{text}</a>'
    cls = status if status in ("ok", "partial", "failed", "skipped") else "failed"
    return (
        f'<td class="{cls}{" drifted" if drifted else ""}"'
        + (f' title="{esc(title)}"' if title else "")
        + f">{text}</td>"
    )


def _night_row(night: Night, devices: Sequence[str], latest: str | None) -> str:
    label = esc(night.date)
    if "report.html" in night.files:
        label = f'<a href="{esc(_href(night.date, "report.html"))}">{label}</a>'
    other = [
        f'<a href="{esc(_href(night.date, n))}">{n.split(".")[1]}</a>'
        for n in ("report.md", "summary.json")
        if n in night.files
    ]
    label += f' <span class="files">{" ".join(other)}</span>' if other else ""
    if night.date == latest:
        label += ' <span class="latest">latest</span>'
    if night.summary is None:
        span = len(devices) + 1
        return (
            f'<tr class="unreadable" data-night="{esc(night.date)}"><th scope="row">{label}</th>'
            f'<td class="note" colspan="{span}">{esc(night.problem)}: left out</td></tr>'
        )
    code = night.summary.get("exit_code")
    verdict = _VERDICT.get(code, "") if isinstance(code, int) else ""
    result = f"{esc(verdict)} (exit {code})" if verdict else "?"
    errors = night.summary.get("write_errors")
    if isinstance(errors, list) and errors:
        result += f"; {len(errors)} file(s) not written"
    cells = "".join(_cell(night, d) for d in devices)
    return (
        f'<tr data-night="{esc(night.date)}"><th scope="row">{label}</th><td class="result">{result}</td>'
        f"{cells}</tr>"
    )


def _device_section(device: str, nights: Sequence[Night], dates: Sequence[str]) -> str:
    points = device_points(nights, device)
    descriptions = [
        str(n.devices[device].get("description") or "")
        for n in nights
        if isinstance(n.devices.get(device), dict)
    ]
    description = next((d for d in reversed(descriptions) if d), "")
    parts = [f'<section class="device" id="trend-{esc(device)}"><h3>{esc(device)}</h3>']
    if description:
        parts.append(f'<p class="description">{esc(description)}</p>')
    parts.append(trend_svg(device, points, dates))
    drifted = [p for p in points if p.drifted]
    if drifted:
        items = ", ".join(f"{esc(p.night)} (ops {esc(_pct(p.ops_pct))})" for p in drifted)
        parts.append(f'<p class="drifted-list">Drifted nights: {items}.</p>')
    else:
        parts.append("<p>No drifted night.</p>")
    novalue = [p for p in points if p.ops_pct is None]
    if novalue:
        items = "; ".join(f"{esc(p.night)}: {esc(p.status)}, {esc(p.why)}" for p in novalue)
        parts.append(f'<p class="novalue">Without a drift value: {items}.</p>')
    latest_pred = next(
        (
            (n.date, n.devices[device].get("reference_latency_ms"))
            for n in reversed(nights)
            if isinstance(n.devices.get(device), dict)
            and isinstance(n.devices[device].get("reference_latency_ms"), dict)
            and n.devices[device]["reference_latency_ms"]
        ),
        None,
    )
    if latest_pred:
        night, preds = latest_pred
        values = {str(k): _num(v) for k, v in preds.items()}
        items = ", ".join(f"{esc(k)} {v:.3g} ms" for k, v in sorted(values.items()) if v is not None)
        parts.append(f"<p>Predicted latency of the reference networks on {esc(night)}: {items}.</p>")
    parts.append("</section>")
    return "\n".join(parts)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin-bottom:.2em} .sub{color:#555;margin-top:0}
.wrap{overflow-x:auto} table{border-collapse:collapse;font-size:14px}
td,th{border:1px solid #bbb;padding:4px 8px;text-align:left;white-space:nowrap}
thead th{background:#eee} th[scope=row]{font-weight:normal}
td.ok{background:#eaf6ea} td.partial,td.skipped{background:#fdf5dc} td.failed{background:#fbe3e3}
td.drifted{background:#fde0c8;font-weight:bold} td.absent{color:#aaa;text-align:center}
td.note{color:#8a1f11;font-style:italic;white-space:normal} .badge{background:#d62728;color:#fff;
border-radius:3px;padding:0 4px;font-size:11px} .latest{background:#1f6fb4;color:#fff;border-radius:3px;
padding:0 4px;font-size:11px} .files{font-size:11px} .files a{color:#555}
svg.trend{max-width:100%;height:auto;display:block} section.device{margin:1.5em 0 2.5em}
.description{color:#555;margin:.2em 0} p{margin:.4em 0}
"""


def build_index(out: Path, now: dt.datetime | None = None) -> str:
    """The HTML of ``out``'s index page."""
    out = Path(out)
    nights = read_nights(out)
    readable = [n for n in nights if n.summary is not None]
    devices = sorted({d for n in readable for d in n.devices})
    link = out / "latest"
    latest = os.readlink(link) if link.is_symlink() else None
    now = now or dt.datetime.now(dt.UTC)
    title = f"chamlab farm: {out.resolve().name or out.resolve()}"
    head = '<tr><th scope="col">night</th><th scope="col">result</th>' + "".join(
        f'<th scope="col"><a href="#trend-{esc(quote(d, safe=""))}">{esc(d)}</a></th>' for d in devices
    )
    rows = "\n".join(_night_row(n, devices, latest) for n in reversed(nights))
    bad = len(nights) - len(readable)
    sub = (
        f"{len(nights)} night(s) in <code>{esc(out.resolve())}</code>"
        + (f", {bad} of them without a readable summary" if bad else "")
        + f"; {len(devices)} device(s). Rebuilt {esc(now.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))} "
        "after each <code>chamlab farm run</code>. Each cell links to that device in the night's report; "
        "drift is the median p50 drift against the device's previous good run."
    )
    if nights and readable:
        dates = [n.date for n in readable]
        trends = "\n".join(_device_section(d, readable, dates) for d in devices)
    else:
        trends = "<p>No night with a readable summary yet.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body><h1>{esc(title)}</h1>
<p class="sub">{sub}</p>
<h2>Nights</h2>
<div class="wrap"><table class="nights"><thead>{head}</tr></thead>
<tbody>
{rows}
</tbody></table></div>
<h2>Trends</h2>
<p>Per device, night by night: the median p50 drift of the ops (blue) and the median drift of the
reference networks' predicted latency (orange, dashed), each against the device's previous good run
(what that night's report says); red bands mark the nights whose drift passed the threshold; a
night without a value (\u00d7 failed or skipped, \u25cb no previous good run) sits on the zero line.</p>
{trends}
</body></html>
"""


def write_index(out: Path, now: dt.datetime | None = None) -> Path:
    """Write ``out/index.html`` atomically (a reader sees the old page or the new one); returns its
    path. An ``out`` that is not a folder is an :class:`InputError`."""
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"farm folder {out} does not exist (or is not a folder)")
    path = out / INDEX
    atomic_write_text(path, build_index(out, now))
    return path
