"""What every transport provides: its devices.toml model, a factory, and one small protocol.

A transport module (``local.py``, and later ``ssh.py``, ``adb.py``) owns three things and registers
them together in :data:`TRANSPORTS`::

    @TRANSPORTS.register("local")
    class LocalConfig(DeviceConfig):       # its devices.toml keys (common ones inherited)
        transport: Literal["local"] = "local"
        def open(self) -> Transport: ...   # the factory

so adding a transport touches one module and its tests. Remote paths are POSIX strings on the target.
Every call has a deadline (``timeout_s``); a call that fails raises
:class:`~chamlab.core.errors.TransportError` naming the target and what was attempted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from chamlab.agent.measure import MeasurePolicy
from chamlab.core.registry import Registry
from chamlab.operators.base import Backend, Dtype


@dataclasses.dataclass(frozen=True)
class RunResult:
    rc: int
    output: str  # stdout and stderr, interleaved as the target produced them


class Transport(Protocol):
    """Move files to and from a target and run argv lists on it."""

    target: str
    #: True when the target is this machine's own CPU: exporting while it measures would disturb it
    shares_host_cpu: bool

    def push(self, local: Path, remote: str, *, timeout_s: float) -> None:
        """Copy a file or a directory tree to ``remote`` (parents are created)."""

    def pull(self, remote: str, local: Path, *, timeout_s: float) -> None:
        """Copy one remote file to ``local`` (written atomically)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float,
        on_line: Callable[[str], None] | None = None,
        hold_stdin: bool = False,
    ) -> RunResult:
        """Run ``argv`` (a list, never a shell string) on the target; stream lines to ``on_line``.

        ``hold_stdin``: keep the command's standard input open until it ends and close it when the
        host stops waiting (deadline, Ctrl-C, a dropped link). The device driver ends itself and its
        runner when its standard input closes, so no orphan keeps measuring.
        """

    def default_workdir(self) -> str:
        """Where run directories go on the target when devices.toml sets no ``workdir``."""

    def close(self) -> None: ...


_AFFINITY = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


class DeviceConfig(BaseModel):
    """The devices.toml keys every transport shares (frozen, strict; unknown keys are errors).

    Subclasses (one per transport) add their own keys and implement :meth:`open`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    transport: str
    description: str = ""
    backend: Backend = Backend.XNNPACK
    dtype: Dtype = Dtype.FP32
    threads: int = Field(1, ge=1, le=256)
    runner: str = Field(
        "shim",
        description='"shim" (python -m chamlab.agent.runner), "torch-cuda" (python -m '
        'chamlab.agent.torch_runner), "executor_runner" (the host file runner_path, pushed and cached on '
        "the target) or the absolute path of an executor_runner already on the target",
    )
    runner_path: str = Field(
        "", description='host file of the executor_runner for runner = "executor_runner"'
    )
    python: str = Field("", description="the target's python for the shim and torch-cuda runners")
    torch_mode: Literal["graph", "eager"] = Field(
        "graph", description="torch-cuda: time CUDA-graph replays (graph) or plain launches (eager)"
    )
    torch_device: str = Field(
        "cuda", description='torch-cuda: the torch device ("cuda", "cuda:1"; "cpu" runs eagerly, wall clock)'
    )
    # sysfs roots of the device state recorded with every row (empty: the kernel's standard paths)
    cpufreq_root: str = ""
    thermal_root: str = ""
    power_supply_root: str = ""
    workdir: str = Field("", description="parent of run directories on the target")
    affinity: str = ""
    op_timeout_s: float = Field(300.0, ge=0)
    cooldown_between_ops_s: float = Field(0.0, ge=0)
    measure: MeasurePolicy = MeasurePolicy()
    tags: tuple[str, ...] = Field((), description="labels `chamlab farm run --only TAG` selects by")
    ray_resource: str = Field("", description="Ray custom resource of the node that has it (farm)")

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = tuple(v)
        if isinstance(v, tuple) and not all(isinstance(t, str) and t for t in v):
            raise ValueError("must be a list of non-empty strings")
        return v

    # power (see docs/devices.md and chamlab.agent.power): empty = latency only
    power_reader: Literal["", "battery", "rapl", "nvml"] = ""
    power_root: str = Field("", description="sysfs root of the reader (battery, rapl) or NVML GPU index")
    power_window_s: float = Field(0.0, ge=0, description="energy window per op (0: the reader's minimum)")
    power_settle_s: float = Field(
        0.0,
        ge=0,
        description="executor_runner: seconds skipped at each window's start (0: 2.5 battery, 0.5 rapl)",
    )
    battery_current_sign: Literal["auto", "discharge_positive", "discharge_negative"] = "auto"

    # heat (see docs/devices.md#heat and agent/driver.sh): 0 / "" = off
    cool_below_c: float = Field(
        0.0, ge=0, lt=150, description="wait before each op until the zone reads below this (C); 0 = no wait"
    )
    thermal_zone: str = Field(
        "", description='the zone the wait reads: its directory name or its type; "" = the hottest zone'
    )
    cool_wait_max_s: float = Field(300.0, gt=0, description="the longest wait for the zone to cool (s)")
    min_freq_khz: int | Literal["max"] = Field(
        0,
        description='a window whose checked CPUs ran under this frequency (kHz; "max": their recorded '
        "maximum, cpuinfo_max_freq) is throttled and re-measured; 0 = no check",
    )

    @field_validator("backend", "dtype", mode="before")
    @classmethod
    def _enum_from_toml(cls, v: Any, info: ValidationInfo) -> Any:
        enum = {"backend": Backend, "dtype": Dtype}[str(info.field_name)]
        if isinstance(v, str) and not isinstance(v, enum):
            try:
                return enum(v)
            except ValueError:
                raise ValueError(f"must be one of {', '.join(m.value for m in enum)}") from None
        return v

    @field_validator("affinity")
    @classmethod
    def _affinity(cls, v: str) -> str:
        if v and not _AFFINITY.fullmatch(v):
            raise ValueError("must be a CPU list such as '0', '0-3' or '0,2'")
        return v

    @field_validator("thermal_zone")
    @classmethod
    def _thermal_zone(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("must be a zone's directory name (thermal_zone0) or its type (cpu-thermal)")
        return v

    @field_validator("min_freq_khz")
    @classmethod
    def _min_freq(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 100_000_000:
            raise ValueError('must be a frequency in kHz, "max" or 0 (no check)')
        return v

    @field_validator("torch_device")
    @classmethod
    def _torch_device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            raise ValueError('must be "cuda", "cuda:N" or "cpu"')
        return v

    @model_validator(mode="after")
    def _runner(self) -> DeviceConfig:
        if self.runner == "executor_runner" and not self.runner_path:
            raise ValueError(
                'runner = "executor_runner" needs runner_path, the host file of the executor_runner binary '
                "to push (see docs/android.md)"
            )
        if self.runner_path and self.runner != "executor_runner":
            raise ValueError(
                f'runner_path is only used with runner = "executor_runner" (runner is {self.runner!r})'
            )
        if self.runner not in RUNNER_KINDS and not self.runner.startswith("/"):
            known = ", ".join(f'"{k}"' for k, _ in RUNNER_KINDS.items())  # in registration order
            raise ValueError(
                f"runner {self.runner!r} must be {known} or the "
                "absolute path of an executor_runner on the target"
            )
        if self.runner_kind == "executor_runner" and self.power_reader == "nvml":
            raise ValueError('power_reader nvml needs python on the target: use runner = "torch-cuda"')
        if self.heat_checked and self.runner_kind == "torch-cuda":
            raise ValueError(
                "cool_below_c and min_freq_khz gate on a thermal zone and the CPUs' cpufreq; the "
                "torch-cuda runner times a GPU, whose clocks they do not see: leave them unset, or use "
                'runner = "shim" or "executor_runner"'
            )
        return self

    @property
    def heat_checked(self) -> bool:
        """Whether the driver gates each op on the temperature or checks its frequency."""
        return bool(self.cool_below_c) or self.min_freq_khz != 0

    def heat_flags(self) -> list[str]:
        """The shim's heat flags (agent/heat.py; the same settings as :meth:`heat_env`); none when off."""
        env = self.heat_env()
        if not env:
            return []
        flags = ["--cool_below_c", repr(self.cool_below_c), "--cool_wait_max_s", repr(self.cool_wait_max_s)]
        if self.thermal_zone:
            flags += ["--thermal_zone", self.thermal_zone]
        if env["MIN_FREQ_KHZ"] != "":
            flags += ["--min_freq_khz", str(env["MIN_FREQ_KHZ"])]
        if env["FREQ_CPUS"]:
            flags += ["--freq_cpus", ",".join(str(env["FREQ_CPUS"]).split())]
        return flags

    def heat_env(self) -> dict[str, object]:
        """The driver's heat settings (agent/driver.sh); empty when off."""
        if not self.heat_checked:
            return {}
        cpus: list[int] = []
        for part in filter(None, self.affinity.split(",")):
            lo, _, hi = part.partition("-")
            cpus += range(int(lo), int(hi or lo) + 1)
        return {
            "COOL_BELOW_MC": round(self.cool_below_c * 1000),
            "THERMAL_ZONE": self.thermal_zone,
            "COOL_WAIT_MAX_CS": max(1, round(self.cool_wait_max_s * 100)),
            "MIN_FREQ_KHZ": self.min_freq_khz or "",
            # the CPUs the runner is pinned to are the ones whose frequency counts ("" = every CPU)
            "FREQ_CPUS": " ".join(str(c) for c in sorted(set(cpus))),
        }

    @property
    def runner_kind(self) -> str:
        """A name in :data:`RUNNER_KINDS`: ``shim``, ``torch-cuda`` or ``executor_runner`` (a pushed
        host file or a path on the target)."""
        if self.runner in RUNNER_KINDS:
            return self.runner
        return "executor_runner"

    @property
    def uses_python(self) -> bool:
        """Whether the runner is a python module (shim, torch-cuda) that needs ``python`` on the target."""
        return RUNNER_KINDS.get(self.runner_kind).module is not None

    def state_flags(self) -> list[str]:
        """The shim's sysfs-root flags (only the roots devices.toml sets)."""
        out: list[str] = []
        for key in ("cpufreq_root", "thermal_root", "power_supply_root"):
            if getattr(self, key):
                out += [f"--{key}", getattr(self, key)]
        return out

    def power_flags(self) -> list[str]:
        """The shim runner's power flags for this device (none when no reader is configured)."""
        if not self.power_reader:
            return []
        flags = ["--power_reader", self.power_reader]
        if self.power_root:
            flags += ["--power_root", self.power_root]
        if self.power_window_s:
            flags += ["--power_window_s", str(self.power_window_s)]
        if self.battery_current_sign != "auto":
            flags += ["--battery_current_sign", self.battery_current_sign]
        return flags

    def runner_python(self) -> str:
        """The python that runs the shim *on the target*. Never the host's own interpreter unless
        the target is the host (only the local transport overrides this default)."""
        return self.python

    def open(self) -> Transport:
        raise NotImplementedError


C = TypeVar("C", bound=type[DeviceConfig])


@dataclasses.dataclass(frozen=True)
class RunnerKind:
    """A kind of runner (devices.toml ``runner``) as the host drives it. The registry lives here,
    host-side: ``agent/`` imports nothing of ours, and its driver.sh knows the kinds by name only
    (``RUNNER_KIND``: shim, torch-cuda or executor_runner)."""

    module: str | None  # the python module the target runs (-m); None: a native executor_runner


#: runner kind -> how it runs (``DeviceConfig.runner_kind``)
RUNNER_KINDS: Registry[RunnerKind] = Registry("runner kind")
RUNNER_KINDS.add("shim", RunnerKind("chamlab.agent.runner"))
RUNNER_KINDS.add("torch-cuda", RunnerKind("chamlab.agent.torch_runner"))
RUNNER_KINDS.add("executor_runner", RunnerKind(None))


class TransportRegistry:
    """A loud registry: transport name -> its config model (whose ``open()`` is the factory)."""

    def __init__(self) -> None:
        self._configs: Registry[type[DeviceConfig]] = Registry("transport")

    def register(self, name: str) -> Callable[[C], C]:
        def deco(cls: C) -> C:
            if name in self._configs:
                self._configs.add(name, cls)  # DuplicateNameError naming the class registered first
            if cls.open is DeviceConfig.open:
                raise TypeError(f"{cls.__name__} must implement open() (the transport factory)")
            self._configs.add(name, cls)
            return cls

        return deco

    def config_class(self, name: str) -> type[DeviceConfig]:
        return self._configs.get(name)

    def names(self) -> list[str]:
        return self._configs.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._configs


TRANSPORTS = TransportRegistry()
