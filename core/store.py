"""The one Parquet-with-metadata store behind every chamlab data file.

LUTs, power traces, calibrations, search histories and accuracy tables are all plain Parquet files
(readable as-is by pandas, pyarrow, DuckDB and Polars) whose key-value metadata says what they are:

* ``chamlab.kind``: the registered :class:`TableKind` (``latency-lut``, ``power-trace``, ...);
* ``chamlab.schema_version``: an integer, written as a decimal string;
* ``chamlab.tool_version``: the chamlab version that wrote the file;
* further ``chamlab.*`` keys owned by the kind (JSON text where structured, e.g. provenance).

Reading (:func:`read_table`) checks step by step and says what is wrong, naming the file: missing,
not Parquet, another kind, a version newer than this chamlab, columns missing or of the wrong type.
A file of an older version goes through the kind's registered *upgraders*, one version step at a
time, so old files keep working; writing (:func:`write_table`) always produces the current version,
atomically (temporary file + rename).

A kind is registered once, loudly (a duplicate name is an error), in :data:`KINDS`; tests build a
fresh :class:`KindRegistry`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataFileError, DuplicateNameError
from .files import atomic_path
from .registry import Registry

KIND_KEY = "chamlab.kind"
VERSION_KEY = "chamlab.schema_version"
TOOL_KEY = "chamlab.tool_version"

#: An upgrader takes the table and the ``chamlab.*`` metadata of version ``v`` and returns them at ``v + 1``.
Upgrader = Callable[[pa.Table, dict[str, str]], tuple[pa.Table, dict[str, str]]]


def tool_version() -> str:
    try:
        return metadata.version("chamlab")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass
class TableKind:
    """One kind of data file: its name, current schema version and schema, and how to upgrade.

    ``schema``: the current Arrow schema; reading selects and casts to it (extra columns are dropped),
    writing casts to it. ``None`` for free-form tables (only kind and version are checked).
    ``what``: a human name for messages ("LUT"); ``make_hint``: the command that makes such a file;
    ``error``: the :class:`DataFileError` subclass raised for this kind.
    """

    name: str
    version: int
    schema: pa.Schema | None
    what: str
    make_hint: str = ""
    error: type[DataFileError] = DataFileError
    upgraders: dict[int, Upgrader] = dataclasses.field(default_factory=dict)

    def upgrader(self, from_version: int) -> Callable[[Upgrader], Upgrader]:
        """Decorator: register the step ``from_version -> from_version + 1``."""
        if not 1 <= from_version < self.version:
            raise ValueError(f"{self.name}: cannot upgrade from {from_version} (current {self.version})")
        if from_version in self.upgraders:
            raise DuplicateNameError(f"{self.name}: an upgrader from version {from_version} exists")

        def deco(fn: Upgrader) -> Upgrader:
            self.upgraders[from_version] = fn
            return fn

        return deco

    def upgrade(
        self, table: pa.Table, meta: dict[str, str], version: int, path: Path
    ) -> tuple[pa.Table, dict[str, str]]:
        while version < self.version:
            step = self.upgraders.get(version)
            if step is None:
                raise self.error(
                    f"{self.what} {path} has schema version {version}, which this chamlab cannot upgrade "
                    f"(it reads {self.version} and upgrades from {sorted(self.upgraders) or 'none'})",
                    hint=self.make_hint or None,
                )
            table, meta = step(table, dict(meta))
            version += 1
        return table, meta


class KindRegistry:
    """The registry of table kinds (a :class:`~.registry.Registry` of :class:`TableKind`): duplicate
    names are errors, unknown names list the known."""

    def __init__(self) -> None:
        self._kinds: Registry[TableKind] = Registry("table kind")

    def register(
        self,
        name: str,
        *,
        version: int,
        schema: pa.Schema | None,
        what: str,
        make_hint: str = "",
        error: type[DataFileError] = DataFileError,
    ) -> TableKind:
        if version < 1:
            raise ValueError("schema versions start at 1")
        return self._kinds.add(name, TableKind(name, version, schema, what, make_hint, error))

    def get(self, name: str) -> TableKind:
        return self._kinds.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)


KINDS = KindRegistry()


@dataclasses.dataclass
class StoredTable:
    """A table read from the store, upgraded to its kind's current version.

    ``meta``: the ``chamlab.*`` metadata other than kind/version/tool version (upgraded too);
    ``read_version``: the version the file was written with.
    """

    table: pa.Table
    meta: dict[str, str]
    path: Path
    read_version: int

    def meta_json(self, key: str, default: Any = None) -> Any:
        """A JSON metadata value; a malformed one is a :class:`DataFileError` naming file and key."""
        raw = self.meta.get(key)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{self.path}: metadata {key} is not valid JSON ({exc})") from exc


def peek_kind(path: Path) -> tuple[str, str]:
    """``(kind, version)`` of a chamlab Parquet file without reading its data (``""`` when absent)."""
    meta = pq.read_schema(path).metadata or {}
    return meta.get(KIND_KEY.encode(), b"").decode(), meta.get(VERSION_KEY.encode(), b"").decode()


def read_table(path: Path, kind: TableKind) -> StoredTable:
    """Read, check and upgrade one file of ``kind``; every failure is ``kind.error`` naming the file."""
    path = Path(path)
    err = kind.error
    hint = kind.make_hint or None
    if not path.exists():
        raise err(f"{kind.what} {path} does not exist", hint=hint)
    if path.is_dir():
        raise err(f"{kind.what} path {path} is a directory; give a file path", hint=hint)
    try:
        pf = pq.ParquetFile(path)
        raw_meta = pf.schema_arrow.metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise err(
            f"{kind.what} {path} is not a readable Parquet file ({exc})",
            hint="restore it from a backup, or re-create it"
            + (f": {kind.make_hint}" if kind.make_hint else ""),
        ) from exc
    meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw_meta.items()}
    found = meta.get(KIND_KEY, "")
    if found != kind.name:
        raise err(
            f"{path} is a Parquet file but not a chamlab {kind.what} (metadata {KIND_KEY}={found!r}, "
            f"expected {kind.name!r})",
            hint=hint,
        )
    raw_version = meta.get(VERSION_KEY, "")
    try:
        version = int(raw_version)
    except ValueError:
        raise err(f"{kind.what} {path}: metadata {VERSION_KEY}={raw_version!r} is not an integer") from None
    if version > kind.version:
        raise err(
            f"{kind.what} {path} has schema version {version}, newer than this chamlab reads "
            f"({kind.version}); it was written by chamlab {meta.get(TOOL_KEY, 'unknown')}",
            hint="upgrade chamlab (pip install -U chamlab) to read it",
        )
    try:
        table = pf.read()
    except (pa.ArrowException, OSError) as exc:
        raise err(f"{kind.what} {path} is corrupt: {exc}", hint=hint) from exc
    own = {
        k: v
        for k, v in meta.items()
        if k.startswith("chamlab.") and k not in (KIND_KEY, VERSION_KEY, TOOL_KEY)
    }
    table = table.replace_schema_metadata(None)
    table, own = kind.upgrade(table, own, version, path)
    if kind.schema is not None:
        missing = [f.name for f in kind.schema if f.name not in table.column_names]
        if missing:
            raise err(f"{kind.what} {path} lacks column(s) {', '.join(missing)}", hint=hint)
        try:
            table = table.select(kind.schema.names).cast(kind.schema)
        except (pa.ArrowException, ValueError) as exc:
            raise err(f"{kind.what} {path} has columns of the wrong type: {exc}", hint=hint) from exc
    return StoredTable(table, own, path, version)


def write_table(
    path: Path, kind: TableKind, table: pa.Table, meta: Mapping[str, str | Any] | None = None
) -> None:
    """Write ``table`` as the current version of ``kind``, atomically.

    ``meta`` keys must start with ``chamlab.``; a value that is not a string is written as JSON.
    """
    if kind.schema is not None:
        table = table.select(kind.schema.names).cast(kind.schema)
    out: dict[str, str] = {}
    for key, value in (meta or {}).items():
        if not key.startswith("chamlab.") or key in (KIND_KEY, VERSION_KEY, TOOL_KEY):
            raise ValueError(f"metadata key {key!r} must start with 'chamlab.' and not be a reserved key")
        out[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    out.update({KIND_KEY: kind.name, VERSION_KEY: str(kind.version), TOOL_KEY: tool_version()})
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in out.items()})
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp, compression="zstd")
