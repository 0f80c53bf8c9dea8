"""``model.json``: the manifest beside an exported ``model.pte``, enough for an app to call the program
with no other file (every field: docs/manifest.md).

:func:`build_manifest` assembles it, :func:`write_manifest` writes it atomically, :func:`read_manifest`
reads and validates it (an error names the file, the field and what is wrong), :func:`find_manifest`
finds the one beside a program. The input mapping (:class:`InputSpec`) is the training oracle's
(:func:`chamlab.chamnet.training.data.to_input`) written down as data: :func:`input_spec` derives it
from a dataset's training split, :func:`normalisation_of` turns it back into the oracle's
:class:`~chamlab.chamnet.training.data.Normalisation`, so ``chamlab evaluate`` feeds a program exactly
what its manifest tells an app to feed it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chamlab.chamnet.training.data import Dataset, Normalisation
from chamlab.chamnet.training.schedule import Schedule
from chamlab.core.errors import DataFileError, InputError
from chamlab.core.files import atomic_write_text
from chamlab.core.store import tool_version

if TYPE_CHECKING:
    from chamlab.chamnet.training import TrainingOracle

FORMAT = "chamlab-model"
SCHEMA_VERSION = 1
#: the oracle's pixel scale: uint8 pixels / 255
PIXEL_SCALE = 1.0 / 255.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resize(_Strict):
    """How an image reaches the input's ``H x W`` (as :func:`chamlab.chamnet.training.data.to_input`)."""

    method: Literal["bilinear"] = "bilinear"
    #: anti-aliased (a triangle filter as wide as the scale) when an image is shrunk; plain when grown
    antialias_when_shrinking: bool = True
    #: pixel centres at half-pixel offsets (``align_corners=False`` in torch, OpenCV's INTER_LINEAR)
    align_corners: Literal[False] = False
    #: the whole image is stretched to ``H x W``: no crop, no padding, aspect ratio not kept
    keep_aspect: Literal[False] = False
    #: ImageFolder data: each image was first resized (Pillow bilinear) to a square of this side, then to
    #: ``H x W``; None: the images were used at their own size (digits, IDX files)
    prescale_side: int | None = Field(default=None, ge=1)


class InputSpec(_Strict):
    """The program's input and how to compute it from an image (steps in docs/manifest.md)."""

    shape: list[int]  # [B, C, H, W]
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    #: multiply the integer pixels (0..255) by it first
    scale: float = Field(default=PIXEL_SCALE, gt=0)
    #: per colour channel (grey: 1 value; rgb: 3, in R, G, B order), subtracted after the scale
    #: (mean, std and color are None together: no dataset, e.g. a program with chamlab's seeded weights)
    mean: list[float] | None
    #: per colour channel, divided by after the mean
    std: list[float] | None
    #: grey: one channel, replicated to C after normalising; rgb: R, G, B (averaged to one when C is 1)
    color: Literal["grey", "rgb"] | None
    resize: Resize = Resize()

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) != 4 or any(s < 1 for s in v):
            raise ValueError(f"must be four positive sizes [B, C, H, W], got {v}")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not s > 0 for s in v):
            raise ValueError(f"every standard deviation must be positive, got {v}")
        return v

    @model_validator(mode="after")
    def _channels(self) -> InputSpec:
        unset = [name for name in ("mean", "std", "color") if getattr(self, name) is None]
        if unset:
            if len(unset) < 3:
                raise ValueError("mean, std and color are null together (no dataset) or all given")
            return self
        want = 1 if self.color == "grey" else 3
        for name in ("mean", "std"):
            if len(getattr(self, name)) != want:
                got = len(getattr(self, name))
                raise ValueError(f"{name} must have {want} value(s) for color {self.color!r}, got {got}")
        if self.color == "rgb" and self.shape[1] not in (1, 3):
            raise ValueError(
                f"rgb images map onto 1 or 3 channels, not the {self.shape[1]} of shape {self.shape}"
            )
        return self

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def known(self) -> bool:
        """The mapping from images is known (False: no dataset; mean, std and color are null)."""
        return self.mean is not None

    @classmethod
    def without_data(cls, shape: Sequence[int]) -> InputSpec:
        """The input of a program whose weights were not trained on a dataset (``weights: random``):
        its shape only."""
        return cls(shape=[int(s) for s in shape], mean=None, std=None, color=None)


class OutputSpec(_Strict):
    shape: list[int]  # [B, K]
    dtype: Literal["float32"] = "float32"
    #: unnormalised class scores: the predicted class is the argmax (softmax for probabilities)
    meaning: Literal["logits"] = "logits"

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or any(s < 1 for s in v):
            raise ValueError(f"must be two positive sizes [B, K], got {v}")
        return v


class ProgramSpec(_Strict):
    file: str  # the program's file name, beside the manifest
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dtype: Literal["fp32", "int8"] = "fp32"
    quant_recipe: str | None = None  # int8: the quantization recipe
    #: "trained" (the oracle's weights), "random" (a latency skeleton: not a usable classifier)
    weights: Literal["trained", "random"] | None = None


class Split(_Strict):
    """The examples an accuracy was measured on: the training oracle's split of ``dataset``
    (:func:`chamlab.chamnet.training.schedule.split` with these fields of its schedule)."""

    name: Literal["val"] = "val"
    dataset: str
    digest: str | None = None  # the dataset's content digest
    # a manifest without these keys means the schedule defaults (chamlab writes every key)
    seed: int = Schedule.seed
    val_fraction: float = Field(default=Schedule.val_fraction, gt=0, lt=1)
    max_train: int = Field(default=Schedule.max_train, ge=1)
    max_val: int = Field(default=Schedule.max_val, ge=1)

    @classmethod
    def of(cls, dataset: Dataset, schedule: Schedule) -> Split:
        return cls(
            dataset=dataset.name,
            digest=dataset.digest,
            seed=schedule.seed,
            val_fraction=schedule.val_fraction,
            max_train=schedule.max_train,
            max_val=schedule.max_val,
        )

    def schedule(self) -> Schedule:
        """A schedule with this split (its other fields are the defaults: the split does not use them)."""
        return Schedule(
            seed=self.seed, val_fraction=self.val_fraction, max_train=self.max_train, max_val=self.max_val
        )


class AccuracyFigure(_Strict):
    runtime: Literal["pytorch", "executorch"]  # pytorch: the trained module; executorch: the program
    runtime_version: str | None = None
    dtype: Literal["fp32", "int8"]
    top1_pct: float = Field(ge=0, le=100)
    n: int | None = Field(default=None, ge=1)  # images evaluated
    #: executorch: where the runtime ran, "host" (the machine that ran chamlab) or a devices.toml name
    device: str | None = None


class Accuracy(_Strict):
    split: Split
    figures: list[AccuracyFigure] = []

    def of(self, runtime: str, dtype: str) -> float | None:
        """The top-1 accuracy (percent) measured with ``runtime`` at ``dtype``, None when not measured."""
        return next((f.top1_pct for f in self.figures if f.runtime == runtime and f.dtype == dtype), None)


class Latency(_Strict):
    device: str
    backend: str
    dtype: Literal["fp32", "int8"] = "fp32"
    threads: int = Field(ge=1)
    batch: int = Field(ge=1)
    measured_ms: float | None = Field(default=None, gt=0)  # median over runs of each run's p50
    runs_ms: list[float] = []
    unstable: bool = False
    predicted_ms: float | None = None


class RuntimeSpec(_Strict):
    name: Literal["executorch"] = "executorch"
    version: str | None = None
    backend: str | None = None  # the delegate the program was lowered to, e.g. xnnpack
    threads: int | None = Field(default=None, ge=1)  # the thread-pool size the latency was measured at


class SpaceFit(_Strict):
    """The space's input resolutions and classifier outputs (a fitted space's, e.g. ``--fit``)."""

    resolution: list[int]  # the input sides the space searched (the program's is input.shape[2:])
    classes: int = Field(ge=1)  # classifier outputs (output.shape[1])


class ArchSpec(_Strict):
    space: str  # the space's name with its parameters (``chamnet-mbv2@res=32-96,classes=10``)
    arch: str  # the space's string form (``chamlab predict --space S --arch A``)
    values: dict[str, Any] = {}
    fit: SpaceFit | None = None


class Manifest(_Strict):
    format: Literal["chamlab-model"]
    schema_version: Literal[1]
    program: ProgramSpec
    input: InputSpec
    output: OutputSpec
    #: output index -> class name (None: an output no dataset class maps to)
    labels: list[str | None]
    accuracy: Accuracy | None = None
    latency: Latency | None = None
    runtime: RuntimeSpec = RuntimeSpec()
    arch: ArchSpec | None = None
    chamlab_version: str
    created_at: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(self.labels) != self.output.shape[1]:
            raise ValueError(
                f"labels has {len(self.labels)} entries but the output has {self.output.shape[1]} classes"
            )
        if self.output.shape[0] != self.input.shape[0]:
            raise ValueError(
                f"output batch {self.output.shape[0]} differs from input batch {self.input.shape[0]}"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_spec(
    dataset: Dataset,
    schedule: Schedule,
    shape: Sequence[int],
    *,
    prescale_side: int | None = None,
    norm: Normalisation | None = None,
) -> InputSpec:
    """The training oracle's mapping of ``dataset`` onto an input of ``shape`` ``[B, C, H, W]``: scale
    1/255, the mean and standard deviation of ``schedule``'s training split (``norm`` overrides them),
    the dataset's colour. ``prescale_side``: the side an ImageFolder dataset was loaded at (the oracle's
    ``image_size``; default: none for digits and IDX data, else the larger of H and W)."""
    from chamlab.chamnet.training.schedule import split

    if norm is None:
        train_idx, _ = split(len(dataset), schedule)
        norm = Normalisation.of(dataset.images[train_idx])
    if dataset.channels not in (1, 3):
        raise InputError(f"dataset {dataset.name} has {dataset.channels}-channel images; chamlab maps 1 or 3")
    folder = dataset.name.startswith("imagefolder:")  # digits and IDX images are used at their own size
    prescale_side = (prescale_side or int(max(shape[2:]))) if folder else None
    try:
        return InputSpec(
            shape=[int(s) for s in shape],
            mean=list(norm.mean),
            std=list(norm.std),
            color="grey" if dataset.channels == 1 else "rgb",
            resize=Resize(prescale_side=prescale_side),
        )
    except ValidationError as exc:
        raise InputError(
            f"dataset {dataset.name} cannot be mapped onto an input of shape {list(shape)}: {_first(exc)}"
        ) from None


def oracle_input_spec(oracle: TrainingOracle, shape: Sequence[int]) -> InputSpec:
    """The input mapping a :class:`~chamlab.chamnet.training.TrainingOracle` trained and evaluated its
    networks with, for an input of ``shape`` (what ``adapt`` writes into ``model.json``)."""
    return input_spec(oracle.dataset, oracle.schedule, shape, prescale_side=oracle.data.image_size)


def normalisation_of(spec: InputSpec) -> Normalisation:
    """The oracle's :class:`Normalisation` (of pixels / 255) that computes ``spec``'s
    ``(pixel * scale - mean) / std``."""
    if spec.mean is None or spec.std is None:
        raise InputError("the input mapping records no normalisation (no dataset): give one")
    if spec.scale == PIXEL_SCALE:
        return Normalisation(tuple(spec.mean), tuple(spec.std))
    k = spec.scale * 255.0  # (p*s - m)/d == (p/255 - m/k)/(d/k)
    return Normalisation(tuple(m / k for m in spec.mean), tuple(s / k for s in spec.std))


def build_manifest(
    pte: Path,
    *,
    input: InputSpec,
    num_outputs: int,
    classes: Sequence[str],
    dtype: str = "fp32",
    quant_recipe: str | None = None,
    weights: str | None = None,
    arch: ArchSpec | None = None,
    accuracy: Accuracy | None = None,
    latency: Latency | None = None,
    runtime: RuntimeSpec | None = None,
) -> Manifest:
    """The manifest of the program ``pte`` (hashed here): ``input`` (e.g. :func:`input_spec`), its
    ``num_outputs`` logits, the dataset's ``classes`` (output index i is ``classes[i]``; outputs past
    them are labelled None), the program's ``dtype``, and what is known of its accuracy, latency and
    runtime (None: unknown). Raises :class:`InputError` naming the field for inconsistent values."""
    if len(classes) > num_outputs:
        raise InputError(f"{len(classes)} classes do not fit the program's {num_outputs} outputs")
    labels: list[str | None] = [*classes, *([None] * (num_outputs - len(classes)))]
    runtime = runtime or RuntimeSpec(version=_executorch_version())
    try:
        return Manifest(
            format=FORMAT,
            schema_version=SCHEMA_VERSION,
            program=ProgramSpec(
                file=Path(pte).name,
                sha256=sha256_of(pte),
                dtype=dtype,
                quant_recipe=quant_recipe,
                weights=weights,
            ),
            input=input,
            output=OutputSpec(shape=[input.batch, num_outputs]),
            labels=labels,
            accuracy=accuracy,
            latency=latency,
            runtime=runtime,
            arch=arch,
            chamlab_version=tool_version(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    except ValidationError as exc:
        raise InputError(f"manifest of {pte}: {_first(exc)}") from None


def manifest_path(pte: Path) -> Path:
    """Where the manifest of ``pte`` lives: beside it, ``.json`` for ``.pte`` (``model.json``)."""
    return Path(pte).with_suffix(".json")


def write_manifest(path: Path, manifest: Manifest | dict[str, Any]) -> Path:
    """Validate ``manifest`` and write it to ``path`` atomically (a failure leaves ``path`` as it was)."""
    if not isinstance(manifest, Manifest):
        manifest = _validate(manifest, Path(path))
    atomic_write_text(Path(path), json.dumps(manifest.to_json(), indent=2) + "\n")
    return Path(path)


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path``, validated. A missing file is :class:`InputError`; a file that is not
    JSON or not a valid manifest is :class:`DataFileError` naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"cannot read manifest {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise DataFileError(f"manifest {path} is not JSON: {exc}") from None
    return _validate(body, path)


def find_manifest(pte: Path) -> tuple[Manifest | None, str | None]:
    """The manifest beside ``pte`` (:func:`manifest_path`) and a note: ``(None, None)`` when there is no
    such file, ``(None, why)`` when the file there is not a chamlab model manifest (e.g. another tool's
    JSON; its ``format`` is not ``chamlab-model``). A file that says it is a manifest but is invalid is
    an error (:func:`read_manifest`)."""
    path = manifest_path(pte)
    if not path.is_file():
        return None, None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"{path} is not a readable JSON file: not used as the program's manifest"
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        return None, f'{path} is not a chamlab model manifest (no "format": "{FORMAT}"): not used'
    return _validate(body, path), None


def _validate(body: Any, path: Path) -> Manifest:
    if not isinstance(body, dict):
        raise DataFileError(f"manifest {path} must hold a JSON object, not {type(body).__name__}")
    version = body.get("schema_version")
    if body.get("format") == FORMAT and isinstance(version, int) and version > SCHEMA_VERSION:
        raise DataFileError(
            f"manifest {path} has schema_version {version}; this chamlab ({tool_version()}) reads "
            f"{SCHEMA_VERSION}",
            hint="upgrade chamlab",
        )
    try:
        return Manifest.model_validate(body)
    except ValidationError as exc:
        raise DataFileError(f"manifest {path}: {_first(exc)}") from None


def _first(exc: ValidationError) -> str:
    """The first error of ``exc`` as ``field a.b: message (got X)``."""
    e = exc.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "missing":
        return f"field {loc!r} is missing"
    if e["type"] == "extra_forbidden":
        return f"field {loc!r} is unknown (see docs/manifest.md for the fields)"
    got = e.get("input")
    shown = repr(got) if not isinstance(got, dict) else "an object"
    return f"field {loc!r}: {msg} (got {shown[:80]})" if loc else f"{msg}"


def _executorch_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("executorch")
    except metadata.PackageNotFoundError:
        return None


__all__ = [
    "FORMAT",
    "PIXEL_SCALE",
    "SCHEMA_VERSION",
    "Accuracy",
    "AccuracyFigure",
    "ArchSpec",
    "InputSpec",
    "Latency",
    "Manifest",
    "OutputSpec",
    "ProgramSpec",
    "Resize",
    "RuntimeSpec",
    "SpaceFit",
    "Split",
    "build_manifest",
    "find_manifest",
    "input_spec",
    "manifest_path",
    "normalisation_of",
    "oracle_input_spec",
    "read_manifest",
    "sha256_of",
    "write_manifest",
]
