"""``evaluate``: the top-1 accuracy of an ExecuTorch program on the validation split of a dataset, run
through the ExecuTorch runtime (``chamlab evaluate --pte PATH --data PATH``; ``adapt`` calls it for its
``model.pte``).

What is fed to the program (:func:`evaluate_program`):

* **examples**: the training oracle's validation split (:func:`chamlab.chamnet.training.schedule.split`:
  seed, ``val_fraction``, ``max_train``, ``max_val``), never a test file. The split's fields come from
  the caller's schedule, else the manifest's ``accuracy.split``, else the schedule defaults; ``limit``
  keeps the first N of the split (a seeded random subset: the split is a permutation).
* **input mapping**: the program's manifest (``model.json`` beside ``model.pte``, or the one given) when
  there is one, else the oracle's mapping derived from the dataset and the program's input shape
  (:func:`~chamlab.host.workflows.manifest.input_spec`: pixels / 255, normalised by the mean and
  standard deviation of the same split's *training* part, grey replicated to C channels, bilinear
  resize; ``mean``/``std`` override the normalisation). Either way the images are mapped by the
  oracle's own :func:`~chamlab.chamnet.training.data.to_input`, so the figure is comparable with the
  oracle's PyTorch accuracy of the same weights on the same split.
* **runtime**: the ExecuTorch Python runtime of this host (the pybindings the agent's runner uses), in
  a child process: its thread pool never shares a process with torch training, and a program that
  crashes the runtime fails the evaluation (:class:`EvaluationError`), not chamlab. The program runs at
  its own batch size (a last partial batch is padded; the padding's outputs are dropped).
* **on a device** (``device``: ``chamlab evaluate --target NAME``, ``adapt --evaluate-on target``): the
  host still loads the program to check it, maps the images itself (the same ``to_input``) into
  float32 batch files, and pushes them with the program and the agent's python files to the device's
  ``workdir``; ``python -m chamlab.agent.evaluate`` runs them through the device's own ExecuTorch
  runtime (its ``python``, pinned to its ``affinity``, holding the host's lock of the device as a
  measurement does) and the host pulls the predicted classes back. Only devices whose runner is a
  python module (``shim``, ``torch-cuda``, with ExecuTorch importable by that python) can do it; an
  ``executor_runner``-only device is an :class:`~chamlab.core.errors.InputError` naming it. The
  pushed folder is removed afterwards.

Bad input is :class:`~chamlab.core.errors.InputError` (exit 2): a missing program or dataset, a
program that is not ExecuTorch, a manifest for another program, more dataset classes than program
outputs (:class:`~chamlab.chamnet.training.data.ClassCountError`), an input the dataset cannot map to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chamlab.chamnet.training.data import Dataset, Normalisation, check_classes, load_dataset
from chamlab.chamnet.training.schedule import Schedule, split
from chamlab.core.errors import ChamlabError, ConfigError, DataFileError, InputError
from chamlab.host.measurement.networks import check_program_file

if TYPE_CHECKING:
    from chamlab.host.devices.transports import DeviceConfig

from .manifest import (
    InputSpec,
    Manifest,
    Split,
    find_manifest,
    input_spec,
    manifest_path,
    normalisation_of,
    read_manifest,
    sha256_of,
)

#: seconds the child process may take before the evaluation fails
DEFAULT_TIMEOUT_S = 3600.0
METHOD = "forward"


class EvaluationError(ChamlabError):
    """Running the program failed (it crashed the runtime, or the runtime rejected it)."""


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
    """The accuracy of one program on one split, and how it was obtained."""

    program: Path
    sha256: str
    dataset: str
    dataset_digest: str
    split: Split
    n: int  # images evaluated
    n_split: int  # images in the split (n < n_split with ``limit``)
    correct: int
    input: InputSpec
    mapping: str  # "manifest" (and its path) or "oracle" (derived from the dataset's training split)
    manifest: Path | None
    runtime: str
    runtime_version: str | None
    threads: int
    batch: int
    seconds: float  # wall time of the whole evaluation
    run_seconds: float  # of which the child process (runtime start, mapping and execution)
    device: str = "host"  # where the runtime ran: "host", or the devices.toml name it ran on
    #: the manifest's recorded accuracies (runtime, dtype, top1_pct) when they are of this same split
    recorded: tuple[tuple[str, str, float], ...] = ()
    notes: tuple[str, ...] = ()
    indices: tuple[int, ...] = ()  # the dataset examples evaluated, in order
    predictions: tuple[int, ...] = ()  # the program's predicted class of each

    @property
    def accuracy_pct(self) -> float:
        """Top-1 accuracy in percent (the unit of the oracle)."""
        return 100.0 * self.correct / self.n

    def to_json(self) -> dict[str, Any]:
        return {
            "program": str(self.program),
            "sha256": self.sha256,
            "dataset": self.dataset,
            "dataset_digest": self.dataset_digest,
            "split": self.split.model_dump(mode="json"),
            "accuracy_pct": self.accuracy_pct,
            "correct": self.correct,
            "n": self.n,
            "n_split": self.n_split,
            "input": self.input.model_dump(mode="json"),
            "mapping": self.mapping,
            "manifest": str(self.manifest) if self.manifest else None,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "device": self.device,
            "threads": self.threads,
            "batch": self.batch,
            "seconds": round(self.seconds, 3),
            "run_seconds": round(self.run_seconds, 3),
            "recorded": [{"runtime": r, "dtype": d, "top1_pct": a} for r, d, a in self.recorded],
            "notes": list(self.notes),
        }


def evaluate_program(
    pte: Path,
    data: str | Path,
    *,
    manifest: Path | Manifest | None = None,
    use_manifest: bool = True,
    schedule: Schedule | None = None,
    seed: int | None = None,
    limit: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    threads: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    device: DeviceConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Top-1 accuracy of the ExecuTorch program ``pte`` on the validation split of ``data`` (``digits``,
    an IDX or ImageFolder directory), through the ExecuTorch runtime in a child process (module
    docstring).

    ``manifest``: the program's manifest (a path or a loaded one); default the ``.json`` beside ``pte``
    when it is a chamlab model manifest (``use_manifest=False``: never). ``schedule``: the split's seed,
    ``val_fraction``, ``max_train`` and ``max_val`` (default: the manifest's split, else
    :class:`Schedule`'s); ``seed`` replaces its seed. ``limit``: evaluate the first N images of the
    split. ``mean``/``std``: the per-channel normalisation without a manifest (default: the training
    split's, as the oracle does).
    ``threads``: the runtime's thread-pool size (default: the runtime's own). ``device``: run the
    program on that device's runtime instead of this host's (module docstring); ``progress`` receives
    a line per step of it."""
    t0 = time.perf_counter()
    _check_options(limit, threads, mean, std)
    pte = Path(pte)
    _check_file(pte)
    if device is not None:
        check_evaluation_device(device)
    notes: list[str] = []
    man, man_path = _manifest(pte, manifest, use_manifest, notes)
    if man is not None and man.input.known and mean is not None:
        raise InputError(
            f"--mean/--std apply to a program without a manifest; {man_path or 'the manifest'} fixes "
            "the normalisation",
            hint="leave them out, or pass --no-manifest to evaluate with your own",
        )
    with _Runtime(pte, threads, timeout_s) as runtime:  # loads the program while the data is read
        sha256 = sha256_of(pte)
        meta = runtime.meta()
        shape = _input_shape(pte, meta["inputs"])
        num_outputs = _num_outputs(pte, meta["outputs"], shape)
        if man is not None:
            _check_manifest(man, man_path, pte, sha256, shape)
        if schedule is None:
            schedule = man.accuracy.split.schedule() if man is not None and man.accuracy else Schedule()
        if seed is not None:
            schedule = dataclasses.replace(schedule, seed=seed)
        prescale = man.input.resize.prescale_side if man is not None else None
        dataset = load_dataset(data, image_size=prescale or int(max(shape[2:])))
        check_classes(dataset, num_outputs, f"program {pte}")
        _, val_idx = split(len(dataset), schedule)
        spec, mapping = _input_mapping(man, man_path, dataset, schedule, shape, mean, std, notes)
        _check_mapping(dataset, spec, pte)
        if man is not None:
            _check_labels(dataset, man, man_path)
        idx = val_idx[:limit] if limit is not None else val_idx
        if device is None:
            preds, run_seconds = runtime.run(dataset.images[idx], spec, normalisation_of(spec))
    if device is not None:
        preds, run_seconds, meta = _run_on_device(
            device, pte, dataset.images[idx], spec, threads, timeout_s, progress or (lambda _: None)
        )
    correct = int((preds == dataset.labels[idx]).sum())
    split_rec = Split.of(dataset, schedule)
    recorded: tuple[tuple[str, str, float], ...] = ()
    if (
        man is not None
        and man.accuracy is not None
        and limit is None
        and _same_split(man.accuracy.split, split_rec)
    ):
        recorded = tuple((f.runtime, f.dtype, f.top1_pct) for f in man.accuracy.figures)
    return EvaluationReport(
        program=pte,
        sha256=sha256,
        dataset=dataset.name,
        dataset_digest=dataset.digest,
        split=split_rec,
        n=len(idx),
        n_split=len(val_idx),
        correct=correct,
        input=spec,
        mapping=mapping,
        manifest=man_path,
        runtime="executorch",
        runtime_version=meta["runtime_version"],
        threads=int(meta["threads"]),
        device=device.name if device is not None else "host",
        batch=spec.batch,
        seconds=time.perf_counter() - t0,
        run_seconds=run_seconds,
        recorded=recorded,
        notes=tuple(notes),
        indices=tuple(int(i) for i in idx),
        predictions=tuple(int(p) for p in preds),
    )


def _check_options(
    limit: int | None, threads: int | None, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> None:
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if (mean is None) != (std is None):
        raise InputError("give --mean and --std together (one value per image channel each)")


def _input_mapping(
    man: Manifest | None,
    man_path: Path | None,
    dataset: Dataset,
    schedule: Schedule,
    shape: tuple[int, ...],
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    notes: list[str],
) -> tuple[InputSpec, str]:
    """How the images are mapped to the program's input, and from what: the manifest's recorded
    mapping (``"manifest"``), else the oracle's mapping of ``dataset`` (``"oracle"``: the training
    split's normalisation, or ``mean``/``std`` when given); a manifest without one adds a note."""
    if man is not None and man.input.known:
        return man.input, "manifest"
    if man is not None:
        notes.append(
            f"{man_path or 'the manifest'} records no input normalisation (weights "
            f"{man.program.weights or 'unknown'}, no dataset): the data are mapped as the oracle does"
        )
    norm = _norm_option(mean, std, dataset) if mean is not None and std is not None else None
    return input_spec(dataset, schedule, shape, norm=norm), "oracle"


def _input_shape(pte: Path, inputs: list[dict[str, Any]]) -> tuple[int, ...]:
    if len(inputs) != 1:
        raise InputError(f"program {pte} takes {len(inputs)} inputs; evaluate feeds one image batch")
    shape = tuple(int(s) for s in inputs[0]["sizes"])
    if len(shape) != 4:
        raise InputError(
            f"program {pte} takes a {len(shape)}-D input {'x'.join(map(str, shape))}; images map onto a "
            "4-D input [B, C, H, W] only"
        )
    if inputs[0]["dtype"] != "float32":
        raise InputError(f"program {pte} takes {inputs[0]['dtype']} input; evaluate feeds float32 images")
    return shape


def _num_outputs(pte: Path, outputs: list[dict[str, Any]], shape: tuple[int, ...]) -> int:
    sizes = [t["sizes"] for t in outputs]
    if len(sizes) != 1 or len(sizes[0]) != 2 or sizes[0][0] != shape[0]:
        raise InputError(
            f"program {pte} returns {sizes}; evaluate reads one [B, classes] tensor of logits "
            f"(B = {shape[0]}, the input's batch)"
        )
    return int(sizes[0][1])


def _manifest(
    pte: Path, manifest: Path | Manifest | None, use: bool, notes: list[str]
) -> tuple[Manifest | None, Path | None]:
    if isinstance(manifest, Manifest):
        return manifest, None
    if manifest is not None:
        if not use:
            raise InputError("--manifest and --no-manifest contradict each other")
        return read_manifest(Path(manifest)), Path(manifest)
    if not use:
        return None, None
    found, why = find_manifest(pte)
    if why:
        notes.append(why)
    return found, manifest_path(pte) if found is not None else None


def _check_manifest(
    man: Manifest, where: Path | None, pte: Path, sha256: str, shape: tuple[int, ...]
) -> None:
    name = str(where) if where else "the manifest"
    if man.program.sha256 != sha256:
        raise InputError(
            f"{name} describes another program (sha256 {man.program.sha256[:12]}, {pte} has {sha256[:12]})",
            hint="give the manifest written with this program (--manifest PATH), or --no-manifest",
        )
    if tuple(man.input.shape) != shape:
        raise InputError(
            f"{name} says input.shape {man.input.shape} but program {pte} takes {list(shape)}",
            hint="the manifest does not belong to this program: --manifest PATH or --no-manifest",
        )


def _norm_option(mean: tuple[float, ...], std: tuple[float, ...], dataset: Dataset) -> Normalisation:
    c = dataset.channels
    if len(mean) != c or len(std) != c:
        raise InputError(
            f"--mean/--std need {c} value(s) each (dataset {dataset.name} has {c}-channel images), "
            f"got {len(mean)} and {len(std)}"
        )
    if any(not s > 0 for s in std):
        raise InputError(f"--std values must be positive, got {', '.join(map(str, std))}")
    return Normalisation(tuple(float(m) for m in mean), tuple(float(s) for s in std))


def _check_mapping(dataset: Dataset, spec: InputSpec, pte: Path) -> None:
    want = 1 if spec.color == "grey" else 3
    if dataset.channels != want:
        kind = "grey" if dataset.channels == 1 else f"{dataset.channels}-channel"
        raise InputError(
            f"dataset {dataset.name} has {kind} images but {pte}'s input takes {spec.color} images "
            f"(input.color {spec.color!r})",
            hint="evaluate a program on data of the kind it was trained on",
        )


def _check_labels(dataset: Dataset, man: Manifest, where: Path | None) -> None:
    check_classes(dataset, len(man.labels), f"program {man.program.file}")
    if all(label is None for label in man.labels):  # no dataset named the outputs
        return
    named = tuple(man.labels[: dataset.num_classes])
    if named != dataset.classes:
        raise InputError(
            f"dataset {dataset.name}'s classes {', '.join(dataset.classes)} are not "
            f"{where or 'the manifest'}'s labels {', '.join(str(x) for x in named)} (in output order)",
            hint="evaluate on the dataset the program was trained on",
        )


# -- on a device ------------------------------------------------------------------------------------------
#: images per pushed input file (rounded down to the program's batch): 4096 x 3 x 96 x 96 floats is 450 MB
CHUNK_IMAGES = 4096


def check_evaluation_device(device: DeviceConfig) -> None:
    """An error unless ``device`` can run a program's evaluation (its runner is a python module with
    a python set); the check :func:`evaluate_program` makes before any work."""
    if not device.uses_python:
        raise InputError(
            f'device {device.name} runs runner = "{device.runner}", which cannot evaluate a program: '
            "evaluation on a device needs the python shim and ExecuTorch there",
            hint=f"evaluate on this host (leave out the device), or give [devices.{device.name}] "
            'runner = "shim" and python = "/path/to/python3"',
        )
    if not device.runner_python():
        raise ConfigError(
            f"device {device.name}: evaluating on it needs the target's python",
            hint=f'set python = "/path/to/python3" in [devices.{device.name}] of devices.toml',
        )


def _run_on_device(
    device: DeviceConfig,
    pte: Path,
    images: np.ndarray,
    spec: InputSpec,
    threads: int | None,
    timeout_s: float,
    progress: Callable[[str], None],
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Map ``images`` with the oracle's ``to_input``, push them with the program and the agent to
    ``device``, run ``chamlab.agent.evaluate`` there, pull the predictions (module docstring):
    (predicted class per image, the device's seconds, its runtime version and thread count)."""
    import torch

    from chamlab.chamnet.training.data import to_input
    from chamlab.host.devices.session import device_lock, stage_agent

    shape = tuple(spec.shape)
    batch = shape[0]
    norm = normalisation_of(spec)
    per = max(batch, CHUNK_IMAGES // batch * batch)
    with tempfile.TemporaryDirectory(prefix="chamlab-evaluate-device-") as tmp:
        folder = Path(tmp) / "run"
        stage_agent(folder)
        shutil.copyfile(pte, folder / "model.pte")
        (folder / "inputs").mkdir()
        for i, b in enumerate(range(0, len(images), per)):
            x = to_input(images[b : b + per], shape, norm)
            if len(x) % batch:
                x = torch.cat([x, x.new_zeros((batch - len(x) % batch, *x.shape[1:]))])
            np.save(folder / "inputs" / f"inputs-{i:04d}.npy", x.numpy(), allow_pickle=False)
        lock = device_lock(device)
        lock.acquire(
            description=f"pid {os.getpid()}: evaluate {pte.name}",
            on_wait=lambda holder: progress(f"device {device.name} is busy ({holder}); waiting for it"),
        )
        try:
            progress(f"pushing {pte.name} and {len(images)} mapped images to {device.name}")
            meta = _push_and_run(device, pte, folder, Path(tmp) / "predictions.npy", threads, timeout_s)
        finally:
            lock.release()
        preds = np.load(Path(tmp) / "predictions.npy", allow_pickle=False)
    if len(preds) < len(images):
        raise EvaluationError(f"{device.name} returned {len(preds)} predictions for {len(images)} images")
    return preds[: len(images)], float(meta["seconds"]), meta


def _push_and_run(
    device: DeviceConfig, pte: Path, folder: Path, predictions: Path, threads: int | None, timeout_s: float
) -> dict[str, Any]:
    """Push ``folder`` to a fresh folder under the device's workdir, run the agent's evaluation there,
    pull its predictions to ``predictions``, remove the remote folder; the agent's done record."""
    import uuid

    from chamlab.core.errors import TransportError
    from chamlab.host.devices.session import cpu_mask

    python = device.runner_python()
    transport = device.open()
    try:
        remote = posixpath.join(device.workdir or transport.default_workdir(), f"evaluate-{uuid.uuid4().hex}")
        try:
            transport.push(folder, remote, timeout_s=timeout_s)
            argv = ["taskset", cpu_mask(device.affinity)] if device.affinity else []
            argv += ["env", f"PYTHONPATH={remote}/lib", python, "-m", "chamlab.agent.evaluate",
                     "--model_path", f"{remote}/model.pte", "--inputs", f"{remote}/inputs",
                     "--predictions", f"{remote}/predictions.npy",
                     "--cpu_threads", str(threads or 0)]  # fmt: skip
            res = transport.run(argv, timeout_s=timeout_s)
            done = [ln for ln in res.output.splitlines() if ln.startswith(_DONE)]
            if res.rc != 0 or not done:
                lines = [ln for ln in res.output.splitlines() if ln.strip()]
                why = lines[-1][-300:] if lines else f"exit {res.rc}"
                raise EvaluationError(
                    f"running {pte} through ExecuTorch on {device.name} failed (exit {res.rc}): {why}",
                    hint=f"check that `{python} -c 'import executorch, numpy'` works on {device.name}",
                )
            transport.pull(f"{remote}/predictions.npy", predictions, timeout_s=timeout_s)
            meta: dict[str, Any] = json.loads(done[-1].removeprefix(_DONE))
            return meta
        finally:
            with contextlib.suppress(TransportError, OSError):
                transport.run(["rm", "-rf", remote], timeout_s=60)
    finally:
        transport.close()


def _same_split(a: Split, b: Split) -> bool:
    return a.model_dump(exclude={"dataset"}) == b.model_dump(exclude={"dataset"})


# -- the child process -----------------------------------------------------------------------------------
_CHILD = "from chamlab.host.workflows.evaluate import child_main; child_main()"
_META, _DONE = "chamlab-evaluate-meta ", "chamlab-evaluate-done "
#: ExecuTorch ScalarType codes -> names (float32 is the one images are fed as)
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
           7: "float64", 11: "bool", 15: "bfloat16"}  # fmt: skip


def _check_file(pte: Path) -> None:
    """The checks :func:`~chamlab.host.measurement.networks.inspect_program` makes before loading."""
    check_program_file(pte, "evaluated")


class _Runtime:
    """The ExecuTorch runtime in a child process holding one loaded program: :meth:`meta` (its input
    and output tensors, read as soon as it is loaded), then :meth:`run` once. The child starts at
    once, so it loads while this process reads the dataset."""

    def __init__(self, pte: Path, threads: int | None, timeout_s: float) -> None:
        self.pte = pte
        self.timeout_s = timeout_s
        self._dir = tempfile.TemporaryDirectory(prefix="chamlab-evaluate-")
        self.folder = Path(self._dir.name)
        self._stderr = open(self.folder / "stderr.txt", "w+", encoding="utf-8")  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torch maps images; the runtime's pool computes
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(pte.resolve()), str(threads or 0)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.expired = False
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        self.proc.kill()

    def __enter__(self) -> _Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._timer.cancel()
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # end of input: the child exits
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stdin):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()
        self._dir.cleanup()

    def _line(self, prefix: str, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                out: dict[str, Any] = json.loads(line.removeprefix(prefix))
                return out
        rc = self.proc.wait()
        if self.expired:
            raise EvaluationError(f"evaluating {self.pte} took over {self.timeout_s:.0f} s; it was stopped")
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
        why = (
            f"the runtime crashed (signal {-rc})" if rc < 0 else (lines[-1][-300:] if lines else f"exit {rc}")
        )
        if what == "load":
            raise DataFileError(f"{self.pte} is not a loadable ExecuTorch program: {why}")
        raise EvaluationError(f"running {self.pte} with the ExecuTorch runtime failed: {why}")

    def meta(self) -> dict[str, Any]:
        """``inputs``/``outputs``: ``[{"sizes": [...], "dtype": "float32"}, ...]`` of ``forward``;
        ``runtime_version``; ``threads`` (the runtime's thread-pool size)."""
        meta = self._line(_META, "load")
        for key in ("inputs", "outputs"):
            meta[key] = [
                {"sizes": t["sizes"], "dtype": _DTYPES.get(t["dtype"], f"code {t['dtype']}")}
                for t in meta[key]
            ]
        return meta

    def run(self, images: np.ndarray, spec: InputSpec, norm: Normalisation) -> tuple[np.ndarray, float]:
        """The predicted class of each of ``images`` (uint8 ``N x c x h x w``) and the seconds the child
        took to map and run them."""
        assert self.proc.stdin is not None
        np.save(self.folder / "images.npy", np.ascontiguousarray(images), allow_pickle=False)
        request = {
            "images": str(self.folder / "images.npy"),
            "predictions": str(self.folder / "predictions.npy"),
            "shape": list(spec.shape),
            "mean": list(norm.mean),
            "std": list(norm.std),
        }
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the child is gone: _line says why
        done = self._line(_DONE, "run")
        return np.load(self.folder / "predictions.npy", allow_pickle=False), float(done["seconds"])


def child_main() -> None:
    """The child: load the program (``argv[1]``; ``argv[2]`` threads, 0: the runtime's default), print
    its tensors, read one request from stdin, map its images batch by batch with the oracle's
    ``to_input``, run each batch, save the argmax per image. End of input before a request: exit."""
    pte, threads = sys.argv[1], int(sys.argv[2])
    import torch

    from chamlab.chamnet.training.data import to_input

    torch.set_num_threads(1)
    try:
        from executorch.extension.pybindings import _C as rt
    except ImportError:  # a release that moves the compiled module: the public one
        from executorch.extension.pybindings import portable_lib as rt
    from importlib import metadata

    if threads > 0:
        rt._unsafe_reset_threadpool(threads)
    try:
        program = rt._load_program(pte)
        method = program.load_method(METHOD)
    except Exception as exc:  # the parent reports the last stderr line
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        raise SystemExit(1) from None
    meta = method.method_meta()

    def tensors(get: Any, n: int) -> list[dict[str, Any]]:
        return [{"sizes": [int(s) for s in get(i).sizes()], "dtype": int(get(i).dtype())} for i in range(n)]

    head = {
        "inputs": tensors(meta.input_tensor_meta, meta.num_inputs()),
        "outputs": tensors(meta.output_tensor_meta, meta.num_outputs()),
        "runtime_version": metadata.version("executorch"),
        "threads": int(rt._threadpool_get_thread_count()),
    }
    print(_META + json.dumps(head), flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return
    request = json.loads(line)
    t0 = time.perf_counter()
    images = np.load(request["images"], allow_pickle=False)
    shape = tuple(request["shape"])
    batch = shape[0]
    norm = Normalisation(tuple(request["mean"]), tuple(request["std"]))
    preds = np.empty(len(images), dtype=np.int64)
    for b in range(0, len(images), batch):
        part = images[b : b + batch]
        x = to_input(part, shape, norm)
        if len(part) < batch:  # pad the last batch; the padding's outputs are dropped
            x = torch.cat([x, x.new_zeros((batch - len(part), *x.shape[1:]))])
        [logits] = method.call([x])
        preds[b : b + len(part)] = logits[: len(part)].argmax(dim=1).numpy()
    np.save(request["predictions"], preds, allow_pickle=False)
    print(_DONE + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


__all__ = [
    "CHUNK_IMAGES",
    "DEFAULT_TIMEOUT_S",
    "EvaluationError",
    "EvaluationReport",
    "check_evaluation_device",
    "child_main",
    "evaluate_program",
]
