"""``measure``: export whole networks, measure them on a device, compare with the LUT prediction.

It runs the same pipeline as ``profile`` (one session, the device lock, results parsed once) with one
artifact per network instead of per op.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import DataFileError, InputError, MeasurementError
from chamlab.host.devices.transports.base import Transport
from chamlab.host.luts.lut import stats_from_samples
from chamlab.host.measurement.pipeline import (
    NullProgress,
    Progress,
    RunSpec,
    claim_device,
    run_artifacts,
    run_items,
)
from chamlab.operators.export import Artifact, ExportItem


@dataclasses.dataclass(frozen=True)
class NetworkMeasurement:
    name: str
    stats: dict[str, float]
    samples_ms: tuple[float, ...]
    unstable: bool
    unstable_reasons: tuple[str, ...]
    artifact: Path
    export_s: float | None
    breakdown: tuple[dict[str, Any], ...] | None
    #: the runner's energy record without its trace (``energy_mj`` per inference above idle,
    #: ``idle_power_w``, ``avg_power_w``, ``reader``, ``charging``; or ``reader`` and ``error``);
    #: None when the device has no power reader configured
    energy: dict[str, Any] | None = None

    @property
    def energy_mj(self) -> float | None:
        """Measured energy per inference above idle, when a reader measured it."""
        if not self.energy or self.energy.get("error"):
            return None
        value = self.energy.get("energy_mj")
        return float(value) if value is not None else None

    quant_recipe: str | None = None  # int8: the recipe the program was quantized with
    not_delegated: str | None = None  # int8: what the quantizer left in fp32 / outside the delegate

    @property
    def p50_ms(self) -> float:
        return self.stats["p50_ms"]

    @property
    def n_samples(self) -> int:
        return len(self.samples_ms)


def network_item(space: SearchSpace, arch: Arch, batch: int = 1) -> ExportItem:
    """The export item of a whole network (named ``net:<space>:<arch>``) at ``batch``."""
    return ExportItem.for_network(f"net:{space.name}:{space.format(arch)}", space.ops(arch), batch)


def export_network_int8(
    space: SearchSpace,
    arch: Arch,
    pte_path: Path,
    *,
    module: Any = None,
    calibration: Sequence[Any] | None = None,
    recipe: str | None = None,
    batch: int = 1,
) -> Any:
    """Quantize ``arch`` (its trained ``module``, else the network of its ops with chamlab's
    deterministic weights) by ``recipe`` and write ``pte_path`` + ETRecord + quantization report
    (:func:`chamlab.operators.quant.export_network`; returns its ``NetworkExport``). ``calibration``:
    real input batches (default: the recipe's seeded random batches). ``adapt --dtype int8`` calls it
    for the winner."""
    import torch

    from chamlab.operators import quant
    from chamlab.operators.network import Network

    ops = space.ops(arch)
    net = module if module is not None else Network(ops).eval()
    example = torch.randn((batch, *space.input_shape(arch)[1:]), generator=torch.Generator().manual_seed(0))
    return quant.export_network(
        net, example, Path(pte_path), recipe=recipe or quant.DEFAULT_RECIPE, calibration=calibration
    )


def measure_networks(
    spec: RunSpec,
    space: SearchSpace,
    archs: Sequence[Arch],
    *,
    breakdown: bool = False,
    workers: int | None = None,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> list[NetworkMeasurement]:
    """Export each arch as one program and measure them in one session on ``spec``'s device.

    Raises :class:`MeasurementError` naming the first network that failed (after all ran); the run
    directory is then kept, so re-running resumes.
    """
    progress = progress or NullProgress()
    items = [network_item(space, a, spec.batch) for a in archs]
    with claim_device(spec, no_wait=no_wait, progress=progress, what=f"measure {space.name}"):
        run = run_items(
            spec,
            items,
            breakdown=breakdown,
            workers=workers,
            transport=transport,
            progress=progress,
            no_wait=no_wait,
        )
        if run.failed:
            name, error = run.failed[0]
            raise MeasurementError(f"measuring {name} on {spec.target} failed: {error}")
        run.finish()
    results = []
    for item in items:
        m = run.measured[item]
        results.append(
            NetworkMeasurement(
                item.name,
                stats_from_samples(m.samples_ms),
                tuple(m.samples_ms),
                bool(m.result.get("unstable")),
                tuple(m.result.get("unstable_reasons") or ()),
                m.artifact.pte_path,
                m.artifact.export_s,
                tuple(m.events) if m.events is not None else None,
                _energy(m.result.get("energy")),
                m.artifact.quant_recipe,
                m.artifact.quant_report.problem() if m.artifact.quant_report else None,
            )
        )
    return results


def _energy(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    return {k: v for k, v in record.items() if k != "trace"}


@dataclasses.dataclass(frozen=True)
class RepeatPolicy:
    """The whole-network noise protocol (:func:`measure_repeated`).

    ``repeats`` separate sessions (each its own runner process), each measuring every network in
    turn, the order rotated by one per session (interleaved: a neighbour's burst lands on different
    networks, never on all repeats of one). A repeat further than ``redo_pct`` % from its network's
    median (or flagged unstable by the runner) is a *disturbed window*: it is measured again in an
    extra session (at most ``max_redo`` of them) and the new value replaces it. The network's value
    is the median of what is kept."""

    repeats: int = 3
    redo_pct: float = 3.0
    max_redo: int = 2

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise InputError(f"--repeats must be at least 1, got {self.repeats}")
        if self.redo_pct <= 0:
            raise InputError(f"the re-measure threshold must be positive, got {self.redo_pct}")
        if self.max_redo < 0:
            raise InputError(f"max_redo must be 0 or more, got {self.max_redo}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RepeatedMeasurement:
    """One network under the protocol: the p50 of every session, which were replaced, the median."""

    name: str
    p50s_ms: tuple[float, ...]  # kept, one per repeat
    first_p50s_ms: tuple[float, ...]  # the first pass, before any re-measurement
    replaced_ms: tuple[float, ...]  # disturbed windows, replaced by a re-measurement
    energy_mj: float | None  # median energy above idle of the kept sessions (None without a reader)
    first: NetworkMeasurement

    @property
    def p50_ms(self) -> float:
        return float(statistics.median(self.p50s_ms))

    @property
    def cv_pct(self) -> float:
        """Spread of the kept repeats: 100 * stdev / mean (0 with one repeat)."""
        if len(self.p50s_ms) < 2:
            return 0.0
        return 100.0 * statistics.stdev(self.p50s_ms) / statistics.fmean(self.p50s_ms)

    @property
    def first_cv_pct(self) -> float:
        """The same spread before disturbed windows were re-measured."""
        if len(self.first_p50s_ms) < 2:
            return 0.0
        return 100.0 * statistics.stdev(self.first_p50s_ms) / statistics.fmean(self.first_p50s_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "p50_ms": self.p50_ms,
            "p50s_ms": list(self.p50s_ms),
            "first_p50s_ms": list(self.first_p50s_ms),
            "replaced_ms": list(self.replaced_ms),
            "cv_pct": self.cv_pct,
            "first_cv_pct": self.first_cv_pct,
            "energy_mj": self.energy_mj,
        }


def measure_repeated(
    spec: RunSpec,
    space: SearchSpace,
    archs: Sequence[Arch],
    policy: RepeatPolicy = RepeatPolicy(),
    *,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
    measure: Callable[[list[Arch]], list[NetworkMeasurement]] | None = None,
) -> list[RepeatedMeasurement]:
    """Measure ``archs`` under the noise protocol of ``policy`` (see :class:`RepeatPolicy`).

    ``measure`` (tests): one session measuring the given archs in order; default
    :func:`measure_networks` on ``spec``."""
    progress = progress or NullProgress()
    archs = list(archs)
    n = len(archs)
    if n == 0:
        return []
    runs: list[list[NetworkMeasurement]] = [[] for _ in range(n)]

    def on_device(batch: list[Arch]) -> list[NetworkMeasurement]:
        return measure_networks(spec, space, batch, transport=transport, progress=progress, no_wait=no_wait)

    one_session = measure or on_device

    def session(indices: list[int]) -> None:
        got = one_session([archs[i] for i in indices])
        for i, m in zip(indices, got, strict=True):
            runs[i].append(m)

    for r in range(policy.repeats):
        k = r % n
        session(list(range(n))[k:] + list(range(n))[:k])  # rotated: interleaved repeats
    first = [tuple(m.p50_ms for m in ms) for ms in runs]
    kept = [list(ms) for ms in runs]
    replaced: list[list[float]] = [[] for _ in range(n)]
    for redo in range(policy.max_redo):
        disturbed: dict[int, list[int]] = {}
        for i, ms in enumerate(kept):
            if len(ms) < 2:
                continue
            med = statistics.median(m.p50_ms for m in ms)
            bad = [
                j for j, m in enumerate(ms) if m.unstable or abs(m.p50_ms - med) > policy.redo_pct / 100 * med
            ]
            if bad:
                disturbed[i] = bad
        if not disturbed:
            break
        progress.note(
            f"re-measuring {sum(map(len, disturbed.values()))} disturbed window(s) of "
            f"{len(disturbed)} network(s) (pass {redo + 1})"
        )
        # one extra session per disturbed repeat index, so a network's replacements are separate runs
        depth = max(len(b) for b in disturbed.values())
        for d in range(depth):
            todo = [i for i, b in disturbed.items() if len(b) > d]
            before = {i: len(runs[i]) for i in todo}
            session(todo)
            for i in todo:
                j = disturbed[i][d]
                replaced[i].append(kept[i][j].p50_ms)
                kept[i][j] = runs[i][before[i]]
    out = []
    for i in range(n):
        energies = [m.energy_mj for m in kept[i] if m.energy_mj is not None]
        out.append(
            RepeatedMeasurement(
                runs[i][0].name,
                tuple(m.p50_ms for m in kept[i]),
                first[i],
                tuple(replaced[i]),
                float(statistics.median(energies)) if energies else None,
                runs[i][0],
            )
        )
    return out


# -- a program given by path (``chamlab measure --pte PATH``) -----------------------------------------------
_INSPECT = """
import json, sys
from executorch.runtime import Runtime
program = Runtime.get().load_program(sys.argv[1])
out = {"methods": sorted(program.method_names), "inputs": {}}
for name in out["methods"]:
    meta = program.metadata(name)
    out["inputs"][name] = [
        {"sizes": list(meta.input_tensor_meta(i).sizes()), "dtype": int(meta.input_tensor_meta(i).dtype())}
        for i in range(meta.num_inputs())
    ]
print("chamlab-program " + json.dumps(out))
"""
#: ExecuTorch ScalarType codes -> names
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
           7: "float64", 11: "bool", 15: "bfloat16"}  # fmt: skip
METHOD = "forward"


@dataclasses.dataclass(frozen=True)
class ProgramInfo:
    """What an ExecuTorch program declares: its methods and ``forward``'s input shapes and types."""

    path: Path
    sha256: str
    methods: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_program_file(path: Path, use: str = "measured") -> None:
    """``path`` is a readable file that starts like an ExecuTorch program (exit 2 otherwise, naming
    it); ``use`` says what a wrong file cannot be (measured, evaluated)."""
    if not path.exists():
        raise InputError(f"program {path} does not exist", hint="give the path of an ExecuTorch .pte file")
    if not path.is_file():
        raise InputError(f"program {path} is not a file")
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputError(f"cannot read program {path}: {exc.strerror}") from None
    if len(head) < 8 or head[4:6] != b"ET":
        raise DataFileError(
            f"{path} is not an ExecuTorch program (no ExecuTorch identifier in its first 8 bytes)",
            hint=f"a .pte comes from `to_executorch()`; a .pt2 or a checkpoint cannot be {use}",
        )


def inspect_program(path: Path, *, timeout_s: float = 300.0) -> ProgramInfo:
    """Read a ``.pte``'s methods and input shapes with the ExecuTorch runtime, in a child process (the
    runtime's import is slow and noisy). A missing file is :class:`InputError`; a file that is not a
    loadable ExecuTorch program is :class:`DataFileError` naming it."""
    path = Path(path)
    check_program_file(path)
    st = path.stat()
    return _inspect(path.resolve(), st.st_size, st.st_mtime_ns, timeout_s)


@functools.lru_cache(maxsize=32)
def _inspect(path: Path, size: int, mtime_ns: int, timeout_s: float) -> ProgramInfo:
    """(cached by path, size and modification time: a program is read once per process)"""
    try:
        res = subprocess.run(
            [sys.executable, "-c", _INSPECT, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DataFileError(f"reading program {path} took over {timeout_s:.0f} s") from None
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("chamlab-program ")), None)
    if res.returncode != 0 or line is None:
        tail = [ln for ln in res.stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit {res.returncode}"]
        raise DataFileError(f"{path} is not a loadable ExecuTorch program: {tail[0][-300:]}")
    info = json.loads(line.removeprefix("chamlab-program "))
    if METHOD not in info["methods"]:
        raise DataFileError(
            f"program {path} has no method {METHOD!r} (it has: {', '.join(info['methods']) or 'none'})"
        )
    inputs = info["inputs"][METHOD]
    return ProgramInfo(
        path,
        _sha256(path),
        tuple(info["methods"]),
        tuple(tuple(int(x) for x in t["sizes"]) for t in inputs),
        tuple(_DTYPES.get(int(t["dtype"]), f"code {t['dtype']}") for t in inputs),
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,32,32"`` (or ``1x3x32x32``) -> ``(1, 3, 32, 32)``."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise InputError(f"--input-shape {text!r} is not a list of positive integers such as 1,3,32,32")
    return shape


@dataclasses.dataclass(frozen=True)
class ProgramReport:
    """A program given by path, measured on a device."""

    program: ProgramInfo
    spec: RunSpec
    measurement: NetworkMeasurement
    etrecord: Path | None

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "program": str(self.program.path),
            "sha256": self.program.sha256,
            "input_shapes": [list(s) for s in self.program.input_shapes],
            "input_dtypes": list(self.program.input_dtypes),
            "target": self.spec.target,
            "transport": self.spec.device.transport,
            "threads": self.spec.threads,
            "measured_p50_ms": m.stats["p50_ms"],
            "measured_p10_ms": m.stats["p10_ms"],
            "measured_p90_ms": m.stats["p90_ms"],
            "measured_mean_ms": m.stats["mean_ms"],
            "n_samples": m.n_samples,
            "unstable": m.unstable,
            "unstable_reasons": list(m.unstable_reasons),
            "etrecord": str(self.etrecord) if self.etrecord else None,
            "breakdown": list(m.breakdown) if m.breakdown is not None else None,
        }


def measure_program(
    spec: RunSpec,
    path: Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    etrecord: Path | None = None,
    breakdown: bool = False,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> ProgramReport:
    """Measure the ExecuTorch program at ``path`` as it is (no export) on ``spec``'s device.

    Its input shape is read from the program; ``input_shape``, when given, must match it (the runner
    feeds the shape the program declares). ``etrecord`` (default: ``PATH`` with suffix ``.etrecord``
    when that exists) names the ops of a ``breakdown``.
    """
    progress = progress or NullProgress()
    if etrecord is not None and not Path(etrecord).is_file():
        raise InputError(f"ETRecord {etrecord} does not exist")
    info = inspect_program(path)
    if input_shape is not None and (len(info.input_shapes) != 1 or info.input_shapes[0] != input_shape):
        declared = " and ".join("x".join(map(str, s)) for s in info.input_shapes) or "no input"
        raise InputError(
            f"program {path} takes {declared}, not {'x'.join(map(str, input_shape))} (--input-shape)",
            hint="the shapes of a .pte are fixed when it is exported: export it again for another shape",
        )
    sibling = Path(path).with_suffix(".etrecord")
    etr = Path(etrecord) if etrecord is not None else (sibling if sibling.is_file() else None)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem)[:40] or "program"
    item = ExportItem(f"pte:{stem}:{info.sha256[:12]}", (), spec.batch)
    artifact = Artifact(
        item, spec.backend.value, spec.dtype.value, Path(path).resolve(),
        etr.resolve() if etr is not None else Path(path).resolve().with_suffix(".no-etrecord"),
        info.sha256[:24], None,
    )  # fmt: skip
    with claim_device(spec, no_wait=no_wait, progress=progress, what=f"measure {path}"):
        run = run_artifacts(
            spec,
            [(item, artifact)],
            breakdown=breakdown,
            transport=transport,
            progress=progress,
            no_wait=no_wait,
        )
        if run.failed:
            raise MeasurementError(f"measuring {path} on {spec.target} failed: {run.failed[0][1]}")
        run.finish()
    m = run.measured[item]
    measurement = NetworkMeasurement(
        item.name,
        stats_from_samples(m.samples_ms),
        tuple(m.samples_ms),
        bool(m.result.get("unstable")),
        tuple(m.result.get("unstable_reasons") or ()),
        artifact.pte_path,
        None,
        tuple(m.events) if m.events is not None else None,
    )
    return ProgramReport(info, spec, measurement, etr)


@dataclasses.dataclass(frozen=True)
class ProgramMeasurement:
    """One program measured in ``len(runs)`` separate runs (each its own runner process on the target)."""

    name: str
    runs: tuple[NetworkMeasurement, ...]
    runtime_version: str | None
    fingerprint: str | None
    #: the thread-pool size the runtime reported for the last run (None: the runner did not say)
    threads: int | None = None

    @property
    def p50_ms(self) -> float:
        """The median of the runs' p50s."""
        return float(statistics.median(r.p50_ms for r in self.runs))

    @property
    def unstable(self) -> bool:
        return any(r.unstable for r in self.runs)

    @property
    def energy_mj(self) -> float | None:
        """The median of the runs' energies per inference above idle (None: no run measured energy)."""
        energies = [r.energy_mj for r in self.runs if r.energy_mj is not None]
        return float(statistics.median(energies)) if energies else None

    @property
    def energy_error(self) -> str | None:
        """Why no run measured energy although the device has a power reader (None otherwise)."""
        errors = [str(r.energy["error"]) for r in self.runs if r.energy and r.energy.get("error")]
        return errors[0] if errors and self.energy_mj is None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "p50_ms": self.p50_ms,
            "energy_mj": self.energy_mj,
            "runs_energy_mj": [r.energy_mj for r in self.runs],
            "runs_p50_ms": [r.p50_ms for r in self.runs],
            "n_samples": [r.n_samples for r in self.runs],
            "unstable": self.unstable,
            "runtime_version": self.runtime_version,
            "fingerprint": self.fingerprint,
        }


def measure_program_runs(
    spec: RunSpec,
    name: str,
    pte: Path,
    etrecord: Path,
    *,
    runs: int = 3,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> ProgramMeasurement:
    """Measure the program file ``pte`` (an exported network, e.g. ``adapt``'s ``model.pte``) on
    ``spec``'s device in ``runs`` separate runs through the same session, driver and runner as
    :func:`measure_networks`; each run starts afresh (nothing resumed from the previous one).

    (:func:`measure_program` measures any program once, its input shape read from the file.)
    ``name`` is the task key on the target (``net:<space>:<arch>`` style). Raises
    :class:`MeasurementError` when a run fails.
    """
    import hashlib

    from chamlab.host.devices.session import DeviceSession, Task
    from chamlab.host.measurement.pipeline import _parse
    from chamlab.operators.export import Artifact, ExportItem

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    progress = progress or NullProgress()
    pte, etrecord = Path(pte), Path(etrecord)
    digest = hashlib.sha256(pte.read_bytes()).hexdigest()[:24]
    artifact = Artifact(
        ExportItem(name, (), spec.batch), spec.backend.value, spec.dtype.value, pte, etrecord, digest, None
    )
    task = Task(name, artifact)
    measured: list[NetworkMeasurement] = []
    result: dict[str, Any] = {}
    with claim_device(spec, no_wait=no_wait, progress=progress, what=f"measure {name}"):
        owns = transport is None
        transport = transport or spec.device.open()
        try:
            session = DeviceSession(
                spec.device,
                transport,
                threads=spec.threads,
                no_wait=no_wait,
                on_wait=lambda owner: progress.note(
                    f"device {spec.target} is busy (driver {owner}); waiting"
                ),
            )
            progress.start("measure", runs)
            for i in range(runs):
                [outcome] = session.run([task], fresh=True)
                if not outcome.ok:
                    raise MeasurementError(
                        f"measuring {name} on {spec.target} failed (run {i + 1} of {runs}): {outcome.error}"
                    )
                samples, _ = _parse(outcome, False)
                result = outcome.result or {}
                measured.append(
                    NetworkMeasurement(
                        name,
                        stats_from_samples(samples),
                        tuple(samples),
                        bool(result.get("unstable")),
                        tuple(result.get("unstable_reasons") or ()),
                        pte,
                        None,
                        None,
                        _energy(result.get("energy")),
                    )
                )
                session.finish([task])
                progress.advance("measure", f"run {i + 1}: p50 {measured[-1].p50_ms:.4f} ms")
        finally:
            if owns:
                transport.close()
    threads = result.get("threads")
    return ProgramMeasurement(
        name,
        tuple(measured),
        result.get("runtime_version"),
        result.get("fingerprint"),
        threads if isinstance(threads, int) and not isinstance(threads, bool) else None,
    )
