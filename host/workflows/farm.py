"""``chamlab farm run``: profile every selected device of a farm concurrently into a dated folder.

One farm run (docs/farm.md):

1. takes ``DIR/.farm.lock`` (no overlapping runs), picks the devices (``--only TAG``: any tag matches);
2. warms the artifact cache once on this host (so N device sessions do not export the same ops N times);
3. runs one *device job* per device, concurrently: threads in this process (``inprocess``), or one Ray
   task per device pinned to the node that declares the device's custom resource (``ray``). A job
   checks the device first (battery, start temperature: a device that fails is *skipped* with the
   reason; an unreadable sensor passes with a note), removes the device's farm run directories of
   earlier days (never resumed: :func:`prune_target_runs`), then profiles under the device lock
   (:func:`~chamlab.host.measurement.profiling.profile`, run id tagged with the date so a night never resumes
   another night's run) and returns its LUT as Parquet bytes: a job never raises, a dead device is a
   ``failed`` outcome and the others go on;
4. writes ``DIR/<YYYY-MM-DD>/<device>.parquet`` (atomically), diffs each against the device's previous
   good run (:func:`~chamlab.host.luts.lifecycle.diff_luts`), writes ``summary.json``, ``report.md`` and a
   self-contained ``report.html`` (drift plots embedded), points ``DIR/latest`` at the folder, and
   removes dated folders older than ``keep_days`` that a farm run wrote (a valid date name holding a
   farm ``summary.json``: :func:`farm_wrote`; anything else in DIR is the user's and stays).

Nothing measured is lost to a failed write (a full disk, a read-only folder): a device's LUT that
cannot be written into ``DIR/<date>/`` is kept on this host in :func:`pending_dir` (below the cache,
named after DIR) and the device is ``failed`` with an error naming both places; the next farm run
into DIR puts it in place first, and a re-run the same day resumes from it (nothing is measured again).
Everything else that fits is still written, ``summary.json`` first; each write that failed is listed in
``write_errors`` (exit 1).

The controller owns the farm folder; device jobs only ever see bytes, so a Ray worker on another host
needs no shared filesystem. :attr:`FarmReport.exit_code`: 0 all good, 1 a device failed, was partial
or skipped, 3 drift beyond the threshold only.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import html
import json
import os
import posixpath
import queue
import re
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chamlab.core.errors import ChamlabError, DeviceBusyError, InputError
from chamlab.core.files import atomic_write_bytes, atomic_write_text, cache_root, ensure_dir
from chamlab.core.locks import FileLock
from chamlab.core.procs import start_ray
from chamlab.host.devices.config import DeviceRegistry
from chamlab.host.devices.transports.base import DeviceConfig, Transport
from chamlab.host.workflows.farm_index import dated_runs, is_date, write_index

EXECUTORS = ("inprocess", "ray")
STATUSES = ("ok", "partial", "failed", "skipped")
LOCK_NAME = ".farm.lock"
LATEST = "latest"
_FARM_RUN_DIR = re.compile(r"^run-farm-(\d{4}-\d{2}-\d{2})-[0-9a-f]+$")  # session.run_id with tag farm-DATE

#: read by the pre-flight check on the target; prints ``battery=<pct>`` and ``temp=<milli-degC>``
#: lines for what it can read (a fixed script: nothing from the user goes into it)
SENSOR_SCRIPT = (
    "for f in /sys/class/power_supply/*/capacity; do "
    '[ -r "$f" ] && echo "battery=$(cat "$f")" && break; done; '
    "for f in /sys/class/thermal/thermal_zone*/temp; do "
    '[ -r "$f" ] && echo "temp=$(cat "$f")"; done; true'
)


# -- device jobs (run in a thread or a Ray worker; plain data in and out) ---------------------------------
@dataclasses.dataclass(frozen=True)
class Sensors:
    """What the pre-flight check read (None: not readable on this target)."""

    battery_pct: float | None = None
    temp_c: float | None = None


def read_sensors(transport: Transport) -> Sensors:
    """Battery level and the hottest thermal zone, read through the transport."""
    res = transport.run(["sh", "-c", SENSOR_SCRIPT], timeout_s=30)
    battery: float | None = None
    temps: list[float] = []
    for line in res.output.splitlines():
        key, _, val = line.strip().partition("=")
        try:
            number = float(val)
        except ValueError:
            continue
        if key == "battery" and battery is None:
            battery = number
        elif key == "temp":
            temps.append(number / 1000.0 if abs(number) > 1000 else number)
    return Sensors(battery, max(temps) if temps else None)


@dataclasses.dataclass(frozen=True)
class DeviceJob:
    device: DeviceConfig
    space: str
    archs: tuple[str, ...] | None  # the space's string forms; None: the space's default archs
    run_tag: str
    date: str  # the farm run's UTC date, YYYY-MM-DD
    lut: bytes | None  # today's LUT of this device so far (a re-run the same day resumes it)
    min_battery_pct: float
    max_start_temp_c: float


@dataclasses.dataclass
class DeviceOutcome:
    device: str
    status: str  # one of STATUSES
    planned_ops: int = 0
    already_ops: int = 0
    measured_ops: int = 0
    failed_ops: list[dict[str, str]] = dataclasses.field(default_factory=list)
    unstable_ops: int = 0
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    battery_pct: float | None = None
    start_temp_c: float | None = None
    run_id: str | None = None
    host: str = ""
    ray_node_id: str | None = None
    seconds: float = 0.0
    lut: bytes | None = dataclasses.field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("lut")
        return d


SensorReader = Callable[[Transport], Sensors]


def preflight(job: DeviceJob, sensors: Sensors, notes: list[str]) -> str | None:
    """The reason to skip the device, or None; unreadable sensors pass with a note."""
    if sensors.battery_pct is None:
        notes.append("battery level not readable: pre-flight battery check passed without it")
    elif sensors.battery_pct < job.min_battery_pct:
        return f"battery {sensors.battery_pct:.0f} % is below {job.min_battery_pct:.0f} %"
    if sensors.temp_c is None:
        notes.append("temperature not readable: pre-flight start-temperature check passed without it")
    elif sensors.temp_c > job.max_start_temp_c:
        return f"start temperature {sensors.temp_c:.1f} C is above {job.max_start_temp_c:.1f} C"
    return None


def prune_target_runs(transport: Transport, workdir: str, date: str) -> list[str]:
    """Remove the farm run directories on the target dated before the day before ``date``.

    A farm run resumes only its own day's run directory, so one left by a device that failed (the
    finished ops of a night it died) would otherwise stay on the phone for good. Yesterday's is kept
    (a run that started before midnight may still own it); ``chamlab profile`` runs are never touched.
    Returns the names removed."""
    res = transport.run(["ls", "-1", workdir], timeout_s=60)
    if res.rc != 0:  # no workdir yet: nothing to prune
        return []
    cutoff = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
    stale = sorted(
        name for name in res.output.split() if (m := _FARM_RUN_DIR.match(name)) and m.group(1) < cutoff
    )
    if stale:
        transport.run(["rm", "-rf", *(posixpath.join(workdir, n) for n in stale)], timeout_s=300)
    return stale


def run_device(job: DeviceJob, sensor_reader: SensorReader | None = None) -> DeviceOutcome:
    """One device's night: pre-flight, then profile under its device lock. Never raises a
    :class:`ChamlabError` or ``OSError``: they become a ``failed`` (or ``skipped``) outcome."""
    from chamlab.chamnet.spaces import SPACES
    from chamlab.host.measurement.pipeline import resolve_run
    from chamlab.host.measurement.profiling import profile

    t0 = time.perf_counter()
    out = DeviceOutcome(job.device.name, "failed", host=socket.gethostname(), lut=job.lut)
    transport: Transport | None = None
    try:
        transport = job.device.open()
        sensors = (sensor_reader or read_sensors)(transport)
        out.battery_pct, out.start_temp_c = sensors.battery_pct, sensors.temp_c
        reason = preflight(job, sensors, out.notes)
        if reason:
            out.status, out.error = "skipped", reason
            return out
        workdir = job.device.workdir or transport.default_workdir()
        try:
            stale = prune_target_runs(transport, workdir, job.date)
        except ChamlabError as exc:
            out.notes.append(f"old farm run directories on the device not checked: {exc.message}")
        else:
            if stale:
                out.notes.append(
                    f"removed {len(stale)} farm run director{'y' if len(stale) == 1 else 'ies'} of earlier "
                    f"days from {workdir} on the device (never resumed): {', '.join(stale)}"
                )
        space = SPACES.get(job.space)
        archs = [space.parse(a) for a in job.archs] if job.archs is not None else None
        with tempfile.TemporaryDirectory(prefix="chamlab-farm-") as tmp:
            lut_path = Path(tmp) / f"{job.device.name}.parquet"
            if job.lut:
                lut_path.write_bytes(job.lut)
            report = profile(
                resolve_run(job.device),
                space,
                archs,
                out=lut_path,
                workers=1,
                transport=transport,
                command=f"chamlab farm run ({job.device.name}, {job.run_tag})",
                no_wait=True,
                run_tag=job.run_tag,
            )
            if lut_path.exists():
                out.lut = lut_path.read_bytes()
        out.planned_ops, out.already_ops = report.planned, report.already
        out.measured_ops, out.unstable_ops = len(report.measured), len(report.unstable)
        out.failed_ops = [{"op_key": k, "error": e} for k, e in report.failed]
        out.run_id = report.run_id
        if not report.failed:
            out.status = "ok"
        elif report.measured or report.already:
            out.status = "partial"
            out.error = f"{len(report.failed)} of {report.planned} ops failed"
        else:
            out.error = f"all {len(report.failed)} ops failed (first: {report.failed[0][1]})"
    except DeviceBusyError as exc:
        out.status, out.error = "skipped", f"busy: {exc.message}"
    except ChamlabError as exc:
        out.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
    except OSError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        if transport is not None:
            with contextlib.suppress(ChamlabError, OSError):
                transport.close()
        out.seconds = time.perf_counter() - t0
    return out


# -- executors ------------------------------------------------------------------------------------------
def ray_resource(device: DeviceConfig) -> str:
    """The Ray custom resource a node declares to say it has ``device`` (devices.toml ``ray_resource``)."""
    return device.ray_resource or f"device:{device.name}"


def _inprocess(jobs: Sequence[DeviceJob], sensor_reader: SensorReader | None) -> Iterator[DeviceOutcome]:
    """One daemon thread per device. Daemon threads, not a pool: on Ctrl-C the process exits at once
    instead of joining the sessions, and each device's driver ends itself when its standard input
    (held by this process) closes; the next run resumes."""
    results: queue.Queue[DeviceOutcome] = queue.Queue()

    def work(job: DeviceJob) -> None:
        try:
            out = run_device(job, sensor_reader)
        except Exception as exc:  # a bug is still one device's failure, not the farm's
            out = DeviceOutcome(job.device.name, "failed", error=f"{type(exc).__name__}: {exc}", lut=job.lut)
        results.put(out)

    for job in jobs:
        name = f"chamlab-farm-{job.device.name}"
        threading.Thread(target=work, args=(job,), name=name, daemon=True).start()
    for _ in jobs:
        yield results.get()


def _ray_task(job: DeviceJob) -> DeviceOutcome:
    import ray

    out = run_device(job)
    out.ray_node_id = ray.get_runtime_context().get_node_id()
    return out


def _ray(jobs: Sequence[DeviceJob], address: str | None) -> Iterator[DeviceOutcome]:
    # without an address, a private one-node cluster on this host: it has every device
    started = start_ray(address, resources={ray_resource(j.device): 1 for j in jobs})
    import ray

    try:
        have = ray.cluster_resources()
        task = ray.remote(_ray_task)
        pending: dict[Any, DeviceJob] = {}
        for job in jobs:
            res = ray_resource(job.device)
            if have.get(res, 0) < 1:
                yield DeviceOutcome(
                    job.device.name,
                    "failed",
                    error=f"no node of the Ray cluster declares the resource {res!r}; start the node that "
                    f"has the device with `ray start --resources '{{\"{res}\": 1}}'`",
                    lut=job.lut,
                )
                continue
            ref = task.options(resources={res: 1}, num_cpus=0, max_retries=0).remote(job)
            pending[ref] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # a worker or node that died: that device failed, not the run
                    error = f"Ray task failed: {type(exc).__name__}: {exc}"[:600] + (
                        " (re-run to resume: the ops finished on the device are kept in its run directory)"
                    )
                    yield DeviceOutcome(job.device.name, "failed", error=error, lut=job.lut)
    finally:
        if started:
            ray.shutdown()


# -- the controller -------------------------------------------------------------------------------------
@dataclasses.dataclass
class FarmReport:
    out: Path
    run_dir: Path
    date: str
    executor: str
    devices: dict[str, dict[str, Any]]  # name -> summary entry
    drift_threshold_pct: float
    removed: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    write_errors: list[str] = dataclasses.field(default_factory=list)  # files of the run not written

    @property
    def exit_code(self) -> int:
        if self.write_errors or any(d["status"] != "ok" for d in self.devices.values()):
            return 1
        if any(d.get("drift") and d["drift"].get("drifted") for d in self.devices.values()):
            return 3
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "run_dir": str(self.run_dir),
            "date": self.date,
            "executor": self.executor,
            "drift_threshold_pct": self.drift_threshold_pct,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "removed_runs": self.removed,
            "write_errors": self.write_errors,
            "devices": self.devices,
        }


def select_devices(registry: DeviceRegistry, only: Sequence[str] = ()) -> list[DeviceConfig]:
    """The devices having any of the tags ``only`` (all devices without ``only``)."""
    devices = list(registry)
    if not only:
        return devices
    chosen = [d for d in devices if set(d.tags) & set(only)]
    if not chosen:
        tags = sorted({t for d in devices for t in d.tags})
        raise InputError(
            f"no device in {registry.source} has any of the tags {', '.join(only)}",
            hint=f"tags in use: {', '.join(tags) or '(none: add tags = [...] to a device table)'}",
        )
    return chosen


def farm_wrote(folder: Path) -> bool:
    """Whether a farm run wrote ``folder``: it holds a farm ``summary.json`` (a JSON object with a
    ``devices`` object). Only such folders are ever removed by ``--keep-days``."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and isinstance(summary.get("devices"), dict)


def pending_dir(out: Path) -> Path:
    """Where the LUTs of farm folder ``out`` that could not be written into it wait on this host:
    ``<cache>/farm-pending/<digest of out's absolute path>/<date>/<device>.parquet`` (``farm.txt``
    there names ``out``)."""
    key = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:16]
    return cache_root() / "farm-pending" / key


def _keep_pending(out: Path, date: str, device: str, data: bytes) -> Path:
    folder = ensure_dir(pending_dir(out) / date, what="farm pending folder")
    atomic_write_text(folder.parent / "farm.txt", f"{Path(out).resolve()}\n")
    path = folder / f"{device}.parquet"
    atomic_write_bytes(path, data)
    return path


def _pending(out: Path, date: str, device: str) -> Path | None:
    path = pending_dir(out) / date / f"{device}.parquet"
    return path if path.is_file() else None


def _drop_pending(out: Path, date: str, device: str) -> None:
    path = pending_dir(out) / date / f"{device}.parquet"
    with contextlib.suppress(OSError):
        path.unlink()
        path.parent.rmdir()  # only when empty


def _restore_pending(out: Path) -> None:
    """Put the LUTs an earlier run could not write into their dated folders (when there is room now);
    a LUT the folder already holds in another version stays pending (never overwritten, never lost)."""
    root = pending_dir(out)
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/*.parquet")):
        date, device = path.parent.name, path.stem
        if not is_date(date):
            continue
        target = out / date / f"{device}.parquet"
        try:
            data = path.read_bytes()
            if not target.exists():
                ensure_dir(target.parent, what="farm run folder")
                atomic_write_bytes(target, data)
            if target.read_bytes() == data:
                _drop_pending(out, date, device)
        except (ChamlabError, OSError):
            continue  # still no room: it stays pending


def previous_good(out: Path, device: str, before: str) -> Path | None:
    """The LUT of the newest run dated before ``before`` in which ``device`` was ``ok``."""
    for date in reversed(dated_runs(out)):
        if date >= before:
            continue
        try:
            entry = json.loads((out / date / "summary.json").read_text())["devices"].get(device)
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        lut = out / date / f"{device}.parquet"
        if entry and entry.get("status") == "ok" and lut.is_file():
            return lut
    return None


def _drift(prev: Path | None, new: Path, plot: Path, threshold_pct: float) -> dict[str, Any] | None:
    from chamlab.host.luts.lifecycle import diff_luts

    if prev is None:
        return None
    rep = diff_luts(prev, new)
    summary = rep.summary()
    d = rep.ops["drift_pct"].to_numpy() if rep.ops.num_rows else []
    summary["previous"] = str(prev)
    summary["ops_over_threshold"] = int(sum(abs(x) > threshold_pct for x in d))
    med = summary.get("median_abs_drift_pct")
    summary["drifted"] = bool(med is not None and med > threshold_pct)
    summary["same_device"] = all(v.get("same_device", True) for v in rep.devices.values())
    if rep.ops.num_rows:
        from chamlab.host.luts.lifecycle import plot_drift

        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_drift(rep, plot)
        summary["plot"] = str(plot.relative_to(plot.parent.parent))
    return summary


def check_night(night: str, today: dt.date, keep_days: int) -> str:
    """``night`` (``--night``) as a ``YYYY-MM-DD`` date, or an :class:`InputError` saying why not: not
    a real date in that form, after ``today`` (UTC), or older than ``keep_days`` keeps (the run would
    be removed at its own end)."""
    if not is_date(night):
        raise InputError(f"--night {night!r} is not a date: give YYYY-MM-DD (a UTC night, e.g. {today})")
    if night > today.isoformat():
        raise InputError(
            f"--night {night} is after today ({today}, UTC): a farm run labels a past night or today"
        )
    oldest = (today - dt.timedelta(days=keep_days)).isoformat()
    if night < oldest:
        raise InputError(
            f"--night {night} is older than --keep-days {keep_days} keeps (oldest {oldest}): "
            f"the run would be removed at its end; raise --keep-days"
        )
    return night


def _newest_night(out: Path, date: str) -> str:
    """The night ``latest`` points at after a run of ``date``: the newest farm-written night (a
    missed night filled in later does not move ``latest`` back)."""
    return max([date, *(d for d in dated_runs(out) if farm_wrote(out / d))])


def reference_networks(space: Any, arch_texts: Sequence[str] | None) -> dict[str, Any]:
    """The networks whose predicted latency the farm follows night by night: the space's reference
    networks, then each ``--arch`` of the run that is not one of them (by its string form)."""
    nets = dict(space.references)
    for text in arch_texts or ():
        arch = space.parse(text)
        if arch not in nets.values():
            nets[text] = arch
    return nets


def predict_networks(
    lut_path: Path, device: DeviceConfig, space: Any, networks: dict[str, Any]
) -> tuple[dict[str, float], list[str]]:
    """Predicted latency (ms, as ``chamlab predict``) of each of ``networks`` whose ops the LUT holds,
    from the rows of the device's measurement set (its backend, dtype and threads, batch 1); and the
    names it lacks ops for. A LUT without that set raises its :class:`LutError`."""
    from chamlab.core.errors import MissingLutEntriesError
    from chamlab.host.luts.lut import Lut
    from chamlab.host.prediction.predict import LatencyModel

    lut = Lut.read(lut_path)
    mset = lut.choose(
        lut_path,
        device=device.name,
        backend=device.backend.value,
        dtype=device.dtype.value,
        threads=device.threads,
        batch=1,
    )
    model = LatencyModel(space, lut, lut_path, mset)
    found, missing = {}, []
    for name, arch in networks.items():
        try:
            found[name] = float(model.predict(arch).latency_ms)
        except MissingLutEntriesError:
            missing.append(name)
    return found, missing


def _reference_drift(
    entry: dict[str, Any], device: DeviceConfig, space: Any, networks: dict[str, Any], lut: Path,
    prev: Path | None,
) -> None:  # fmt: skip
    """Fill ``entry["reference_latency_ms"]`` (this night's predictions) and, when the device has a
    previous good run, the drift's ``reference_median_drift_pct`` and ``reference_drift_pct`` (per
    network predictable from both LUTs); what cannot be predicted is a note."""
    if not networks:
        entry["notes"].append(f"space {space.name} has no reference networks: no predicted-latency trend")
        return
    try:
        now_ms, missing = predict_networks(lut, device, space, networks)
    except ChamlabError as exc:
        entry["notes"].append(f"reference networks not predicted: {exc.message}")
        return
    entry["reference_latency_ms"] = now_ms
    if not now_ms:  # the usual case of a farm of some --arch is a subset: said by the keys, no note
        entry["notes"].append(
            f"no reference network of {space.name} has all its ops in the LUT ({', '.join(missing)}): "
            "no predicted-latency trend; profile one with --arch"
        )
    drift = entry.get("drift")
    if prev is None or drift is None:
        return
    try:
        old_ms, _ = predict_networks(prev, device, space, networks)
    except ChamlabError as exc:
        entry["notes"].append(f"reference networks not predicted from {prev}: {exc.message}")
        old_ms = {}
    per = {n: (now_ms[n] - old_ms[n]) / old_ms[n] * 100.0 for n in now_ms if n in old_ms and old_ms[n] > 0}
    drift["reference_drift_pct"] = per
    drift["reference_median_drift_pct"] = float(statistics.median(per.values())) if per else None


def _point_latest(out: Path, date: str) -> None:
    link = out / LATEST
    tmp = out / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(date, tmp, target_is_directory=True)
    os.replace(tmp, link)  # atomic: a reader sees the old run or the new one


def _prune(out: Path, today: dt.date, keep_days: int) -> list[str]:
    cutoff = (today - dt.timedelta(days=keep_days)).isoformat()
    latest = os.readlink(out / LATEST) if (out / LATEST).is_symlink() else None
    removed = []
    for date in dated_runs(out):
        if date < cutoff and date != latest and farm_wrote(out / date):
            shutil.rmtree(out / date)
            removed.append(date)
    return removed


def run_farm(
    registry: DeviceRegistry,
    space: str,
    *,
    out: Path,
    only: Sequence[str] = (),
    archs: Sequence[str] | None = None,
    drift_threshold_pct: float = 10.0,
    keep_days: int = 30,
    executor: str = "inprocess",
    address: str | None = None,
    min_battery_pct: float = 20.0,
    max_start_temp_c: float = 45.0,
    night: str | None = None,
    now: dt.datetime | None = None,
    sensor_reader: SensorReader | None = None,
    on_device: Callable[[DeviceOutcome], None] | None = None,
) -> FarmReport:
    """One farm run into ``out`` (see the module docstring), labelled ``night`` (``YYYY-MM-DD``,
    default: today's UTC date; an earlier night for a missed night or a re-run, see
    :func:`check_night`). ``now`` (UTC) and ``sensor_reader`` are injectable for tests;
    ``on_device`` is called as each device finishes."""
    from chamlab.chamnet.spaces import SPACES

    t0 = time.perf_counter()
    _check_options(executor, address, keep_days, drift_threshold_pct)
    now = now or dt.datetime.now(dt.UTC)
    today = now.astimezone(dt.UTC).date()
    date = check_night(night, today, keep_days) if night is not None else today.isoformat()
    sp = SPACES.get(space)
    arch_texts = tuple(sp.format(sp.resolve(a)) for a in archs) if archs else None
    devices = select_devices(registry, only)
    out = ensure_dir(Path(out), what="farm folder")
    lock = FileLock(out / LOCK_NAME, what=f"farm folder {out}")
    try:
        lock.acquire(wait=False, description=f"chamlab farm run, pid {os.getpid()} on {socket.gethostname()}")
    except DeviceBusyError as exc:  # the lock's hint names profile's --no-wait, which farm run has not
        exc.hint = "a farm run never queues behind another: let it finish, then run `chamlab farm run` again"
        raise
    try:
        _restore_pending(out)
        run_dir = ensure_dir(out / date, what="farm run folder")
        _warm_cache(sp, arch_texts, devices)
        jobs = [
            DeviceJob(
                device,
                sp.name,
                arch_texts,
                f"farm-{date}",
                date,
                _resume_bytes(out, run_dir, date, device.name),
                min_battery_pct,
                max_start_temp_c,
            )
            for device in devices
        ]
        stream = _inprocess(jobs, sensor_reader) if executor == "inprocess" else _ray(jobs, address)
        outcomes: dict[str, DeviceOutcome] = {}
        for outcome in stream:
            if outcome.lut:
                _store_lut(out, run_dir, date, outcome)
            outcomes[outcome.device] = outcome
            if on_device:
                on_device(outcome)
        entries = _previous_entries(run_dir)  # devices not selected this time keep the night's earlier entry
        by_name = {d.name: d for d in devices}
        networks = reference_networks(sp, arch_texts)
        for name in sorted(outcomes):
            entries[name] = _entry(
                out, run_dir, date, outcomes[name], by_name.get(name), sp, networks, drift_threshold_pct
            )
        report = FarmReport(out, run_dir, date, executor, dict(sorted(entries.items())), drift_threshold_pct)
        report.seconds = time.perf_counter() - t0
        _publish(report, sp.name, now, today, keep_days)
        return report
    finally:
        lock.release()


def _check_options(executor: str, address: str | None, keep_days: int, drift_threshold_pct: float) -> None:
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "inprocess" and address:
        raise InputError("--address is for --executor ray only")
    if keep_days < 1:
        raise InputError(f"--keep-days must be at least 1, got {keep_days}")
    if drift_threshold_pct <= 0:
        raise InputError(f"--drift-threshold must be positive, got {drift_threshold_pct}")


def _resume_bytes(out: Path, run_dir: Path, date: str, device: str) -> bytes | None:
    """The device's LUT of this night to resume from: the run folder's, else one that did not fit
    there earlier today (kept pending on this host); None to start afresh."""
    lut_path = run_dir / f"{device}.parquet"
    if not lut_path.is_file():
        lut_path = _pending(out, date, device) or lut_path
    return lut_path.read_bytes() if lut_path.is_file() else None


def _entry(
    out: Path,
    run_dir: Path,
    date: str,
    o: DeviceOutcome,
    device: DeviceConfig | None,
    sp: Any,
    networks: dict[str, Any],
    drift_threshold_pct: float,
) -> dict[str, Any]:
    """One device's entry of the night's report: its outcome, its LUT, and the drift of its ops
    (and, for a device selected this run, of its reference networks) against its previous good night."""
    name = o.device
    entry = o.to_json()
    entry["description"] = device.description if device is not None else ""
    lut = run_dir / f"{name}.parquet"
    entry["lut"] = lut.name if lut.is_file() else None
    entry["drift"] = None
    entry["reference_latency_ms"] = None
    if lut.is_file() and o.status in ("ok", "partial"):
        prev = previous_good(out, name, date)
        try:
            entry["drift"] = _drift(prev, lut, run_dir / "plots" / f"{name}-drift.png", drift_threshold_pct)
        except ChamlabError as exc:
            entry["notes"].append(f"drift not computed: {exc.message}")
        except OSError as exc:  # the plot did not fit
            entry["notes"].append(f"drift not computed: {_os_error(exc)}")
        if device is not None:
            _reference_drift(entry, device, sp, networks, lut, prev)
    return entry


def _publish(report: FarmReport, space: str, now: dt.datetime, today: dt.date, keep_days: int) -> None:
    """Write the night's reports, point ``latest`` at the newest night, prune nights older than
    ``keep_days`` and rewrite the index; what cannot be written goes to ``report.write_errors``."""
    out = report.out
    write_reports(report, space, now)
    newest = _newest_night(out, report.date)
    try:
        _point_latest(out, newest)
    except OSError as exc:
        report.write_errors.append(f"cannot point {out / LATEST} at {newest}: {_os_error(exc)}")
    report.removed = _prune(out, today, keep_days)
    try:
        write_index(out, now=now)
    except (ChamlabError, OSError) as exc:
        report.write_errors.append(
            exc.message if isinstance(exc, ChamlabError) else f"cannot write the index: {_os_error(exc)}"
        )


def _os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _store_lut(out: Path, run_dir: Path, date: str, outcome: DeviceOutcome) -> None:
    """Write a device's LUT into the run folder; when that fails, keep it pending on this host
    (:func:`pending_dir`) and make the device ``failed`` naming both places."""
    assert outcome.lut is not None
    target = run_dir / f"{outcome.device}.parquet"
    try:
        atomic_write_bytes(target, outcome.lut)
    except (ChamlabError, OSError) as exc:
        why = exc.message if isinstance(exc, ChamlabError) else f"cannot write {target}: {_os_error(exc)}"
        try:
            kept = f"its measurements are kept in {_keep_pending(out, date, outcome.device, outcome.lut)}"
            kept += ": the next farm run into this folder puts the LUT in place (nothing is measured again)"
        except (ChamlabError, OSError) as exc2:
            why2 = exc2.message if isinstance(exc2, ChamlabError) else _os_error(exc2)
            kept = f"keeping them on this host failed too ({why2}): they are lost"
        outcome.status = "failed"
        outcome.error = f"LUT not written: {why}; {kept}"
        return
    _drop_pending(out, date, outcome.device)


def _previous_entries(run_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        devices = json.loads((run_dir / "summary.json").read_text())["devices"]
        return dict(devices) if isinstance(devices, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _warm_cache(space: Any, arch_texts: tuple[str, ...] | None, devices: Sequence[DeviceConfig]) -> None:
    """Export the planned ops once here for every (backend, dtype) in use (cached ones cost nothing)."""
    from chamlab.host.measurement.profiling import default_archs, plan_ops
    from chamlab.operators.export import ArtifactCache, ExportItem, export_all

    archs = [space.parse(a) for a in arch_texts] if arch_texts is not None else default_archs(space)[0]
    for backend, dtype in sorted({(d.backend.value, d.dtype.value) for d in devices}):
        items = [ExportItem.for_op(op) for op in plan_ops(space, archs, dtype)]  # int8 adds its probes
        export_all(items, backend, dtype, cache=ArtifactCache())  # failures resurface per device


# -- reports ----------------------------------------------------------------------------------------------
def _fmt(x: Any, spec: str = "+.1f") -> str:
    return "" if x is None else format(x, spec)


def _rows(report: FarmReport) -> list[list[str]]:
    rows = []
    for name, e in report.devices.items():
        d = e.get("drift") or {}
        why = e.get("error") or ""
        rows.append(
            [
                name,
                e["status"],
                str(e.get("measured_ops", 0)),
                str(e.get("already_ops", 0)),
                str(len(e.get("failed_ops") or [])),
                _fmt(d.get("median_drift_pct")),
                _fmt(d.get("max_abs_drift_pct"), ".1f"),
                ("yes" if d.get("drifted") else "no") if d else "no previous run",
                why,
            ]
        )
    return rows


_HEAD = [
    "device",
    "status",
    "measured",
    "already",
    "failed",
    "median drift %",
    "max |drift| %",
    "drifted",
    "error",
]


def write_reports(report: FarmReport, space: str, now: dt.datetime) -> None:
    """``summary.json``, ``report.md`` and a self-contained ``report.html`` in the run folder, in
    that order; each that cannot be written is listed in ``report.write_errors``."""
    summary = {**report.to_json(), "space": space, "started_at": now.isoformat()}
    _write(report, "summary.json", json.dumps(summary, indent=2) + "\n")
    verdict = {0: "all good", 1: "a device failed, was partial or skipped", 3: "drift beyond the threshold"}
    title = f"chamlab farm run {report.date} ({space})"
    result = (
        f"Result: **{verdict[report.exit_code]}** (exit {report.exit_code}); drift threshold "
        f"{report.drift_threshold_pct:g} % median |drift| against each device's previous good run."
    )
    head = [h.replace("|", "\\|") for h in _HEAD]
    md = [f"# {title}", "", result, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(_HEAD)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(report)]
    for name, e in report.devices.items():
        extra = [f"- {n}" for n in e.get("notes") or []]
        extra += [f"- failed `{f['op_key']}`: {f['error']}" for f in (e.get("failed_ops") or [])[:10]]
        plot = (e.get("drift") or {}).get("plot")
        if plot:
            extra.append(f"- drift plot: [{plot}]({plot})")
        if extra:
            md += ["", f"## {name}", "", *extra]
    _write(report, "report.md", "\n".join(md) + "\n")

    esc = html.escape
    cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>\n" for row in _rows(report))
    sections = []
    for name, e in report.devices.items():
        parts = [f'<h2 id="device-{esc(name)}">{esc(name)}: {esc(e["status"])}</h2>']
        parts += [f"<p>{esc(n)}</p>" for n in e.get("notes") or []]
        plot = (e.get("drift") or {}).get("plot")
        if plot and (report.run_dir / plot).is_file():
            data = base64.b64encode((report.run_dir / plot).read_bytes()).decode()
            parts.append(f'<img alt="drift of {esc(name)}" src="data:image/png;base64,{data}">')
        sections.append("\n".join(parts))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px}}img{{max-width:100%}}</style></head>
<body><h1>{esc(title)}</h1>
<p>Result: <b>{esc(verdict[report.exit_code])}</b> (exit {report.exit_code}); drift threshold
{report.drift_threshold_pct:g} % median |drift|.</p>
<table><tr>{"".join(f"<th>{esc(h)}</th>" for h in _HEAD)}</tr>
{cells}</table>
{"".join(sections)}
</body></html>
"""
    _write(report, "report.html", page)


def _write(report: FarmReport, name: str, text: str) -> None:
    """Write one report file; a failure (a full disk) is listed in ``write_errors``, the rest goes on."""
    path = report.run_dir / name
    try:
        atomic_write_text(path, text)
    except (ChamlabError, OSError) as exc:
        report.write_errors.append(
            exc.message if isinstance(exc, ChamlabError) else f"cannot write {path}: {_os_error(exc)}"
        )
