"""Table spaces (``--space table:PATH``): bring your own benchmark as one row per architecture.

A Parquet or CSV file whose columns are:

* ``accuracy`` (required): the oracle; each look-up during a search counts as one query;
* ``latency_ms`` / ``energy_mj`` (optional): free costs standing in for the latency/energy predictors;
* every other column, except those whose name starts with ``_``, is a *dimension*: integer and float
  columns are ordinal (their sorted distinct values), string and boolean columns categorical
  (one-hot encoded by the search engine). ``dims=("a", "b")`` chooses the dimensions explicitly;
* ``_network`` (optional): rows with the same value are one network under several names (a cell
  written two isomorphic ways, an identity layer moved within a stage): the search asks one row
  of each network (``equivalence_key``); without it every row is its own network.

The space is the set of rows (not the product of the dimensions' values): ``enumerate`` yields the
rows in file order, ``sample`` draws rows, ``validate`` rejects a combination that is not a row. An
architecture is the tuple of its dimension values (Python ``int``/``float``/``str``/``bool``), and
its string form is ``name=value,name=value``. Missing or repeated columns, duplicate architectures,
NaNs, empty tables, unknown ``dims``, an accuracy outside ``accuracy_range`` (default
:data:`ACCURACY_RANGE`, percent), a negative cost, a text column that names the rows (a distinct value
in every row) or has more than :data:`MAX_CATEGORIES` values, and rows of one ``_network`` whose
accuracies differ are :class:`~chamlab.core.errors.DataFileError` naming file, column and row (the
rules in docs/spaces.md). A table whose accuracy is the same in every row warns once
(:class:`TableWarning`). :attr:`TableSpace.digest` is the content's SHA-256, part of a search run's
identity (an edited table is not resumed as the old one).

A table space has no operators: it stands in for a network space wherever the engine only needs
dimensions, candidates and costs (see :mod:`chamlab.chamnet.search`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chamlab.core.errors import ArchError, ChamlabWarning, DataFileError, InputError

from .base import Arch, Dimension

if TYPE_CHECKING:
    import pandas as pd

ACCURACY = "accuracy"
COSTS = ("latency_ms", "energy_mj")
NETWORK = "_network"
RESERVED = (ACCURACY, *COSTS)
PREFIX = "table:"
#: the interval a table's accuracies lie in unless it states another: percent (a fraction fits too)
ACCURACY_RANGE = (0.0, 100.0)
#: the largest accuracy bound a table may state (beyond, the GP's standardisation overflows)
MAX_MAGNITUDE = 1e12
#: the most values a categorical (text) dimension may have: each is a feature of every candidate
MAX_CATEGORIES = 128
#: a text column with a distinct value in every one of at least this many rows names the rows
ID_MIN_ROWS = 16


class TableWarning(ChamlabWarning):
    """A table the search can use but not learn from (every accuracy equal)."""


def _native(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame; unreadable files are DataFileErrors naming the file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataFileError(
            f"table space file {path} does not exist (or is not a file)",
            hint="give a CSV or Parquet file with one row per architecture",
        )
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataFileError(f"table space file {path}: unknown format {suffix!r}; use .csv or .parquet")
    try:
        header = _header(path, suffix)
    except Exception as exc:  # csv/pyarrow raise many types for a malformed file
        raise DataFileError(f"table space file {path} cannot be read: {_first_line(exc)}") from exc
    check_header(header, str(path))
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        raise DataFileError(f"table space file {path} cannot be read: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _header(path: Path, suffix: str) -> list[str]:
    """The column names as the file spells them (pandas renames a repeated CSV header ``a`` to
    ``a.1``, so they are read before pandas sees the file)."""
    if suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def check_header(columns: Sequence[str], what: str) -> None:
    """A column named twice is a :class:`DataFileError` naming it (which of the two is the accuracy,
    or the dimension?)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(columns):
        if name in seen:
            raise DataFileError(
                f"{what}: column {name!r} appears twice (columns {seen[name] + 1} and {i + 1} of the header)",
                hint="rename or drop one of them: every column name must be unique",
            )
        seen[name] = i


def _check_categories(s: pd.Series, col: str, what: str, *, chosen: bool) -> None:
    """A text column is a categorical dimension (one feature per value in every candidate row):
    one with a distinct value in every row names the rows (an identifier, refused unless ``chosen``
    by --dims), and one of more than :data:`MAX_CATEGORIES` values would take memory in proportion
    to rows x values. Counting the values takes memory in proportion to the rows only."""
    n, distinct = len(s), int(s.nunique(dropna=False))
    if distinct == n and n >= ID_MIN_ROWS and not chosen:
        raise DataFileError(
            f"{what}: column {col!r} has a distinct text value in every one of its {n} rows "
            f"(e.g. {s.iloc[0]!r}): it names the rows, it is not a dimension",
            hint=f"rename it `_{col}` (columns starting with `_` are not dimensions), drop it, or "
            "choose the dimension columns with --dims",
        )
    if distinct > MAX_CATEGORIES:
        raise DataFileError(
            f"{what}: column {col!r} has {distinct} distinct text values: as a categorical dimension "
            f"each would be one feature of every candidate (at most {MAX_CATEGORIES})",
            hint=f"if its values have an order make the column numeric; if it names the rows rename it "
            f"`_{col}` or leave it out of --dims",
        )


def _check_networks(
    networks: Sequence[Any], accuracy: np.ndarray, rows: Sequence[Arch], dims: Sequence[Dimension], what: str
) -> None:
    """Rows with one ``_network`` value are one network: their accuracies must be equal (the search
    asks one of them, so a better row among them could never win)."""
    first: dict[Any, int] = {}
    for i, net in enumerate(networks):
        j = first.setdefault(net, i)
        if accuracy[i] != accuracy[j]:
            text = [",".join(f"{d.name}={v}" for d, v in zip(dims, rows[k], strict=True)) for k in (j, i)]
            raise DataFileError(
                f"{what}: rows {j} ({text[0]}) and {i} ({text[1]}) are one {NETWORK} {net!r} but their "
                f"accuracies differ ({accuracy[j]:g} and {accuracy[i]:g})",
                hint=f"one network has one accuracy: average repeated measurements, or give the rows "
                f"different {NETWORK} values",
            )


@dataclasses.dataclass(frozen=True, eq=False)
class TableSpace:
    """One row per architecture (see the module docstring). Build with :meth:`read` or :meth:`from_frame`."""

    name: str
    dimensions: tuple[Dimension, ...]
    rows: tuple[Arch, ...]
    accuracy: np.ndarray
    costs: Mapping[str, np.ndarray]
    description: str = ""
    networks: tuple[Any, ...] | None = None  # the _network column: one value per row

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {a: i for i, a in enumerate(self.rows)})

    @classmethod
    def read(
        cls,
        path: Path,
        dims: Sequence[str] | None = None,
        *,
        accuracy_range: tuple[float, float] = ACCURACY_RANGE,
    ) -> TableSpace:
        path = Path(path)
        return cls.from_frame(
            read_frame(path), name=f"{PREFIX}{path}", dims=dims, what=str(path), accuracy_range=accuracy_range
        )

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        name: str = "table",
        dims: Sequence[str] | None = None,
        what: str = "table",
        accuracy_range: tuple[float, float] = ACCURACY_RANGE,
    ) -> TableSpace:
        """The table ``df`` as a space, after every check of the module docstring (each failure a
        :class:`DataFileError` naming ``what``, the column and the row); ``accuracy_range``: the
        interval every accuracy lies in (default percent, which a fraction fits too)."""
        columns = [str(c) for c in df.columns]
        check_header(columns, what)
        lo, hi = (float(v) for v in accuracy_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi and max(abs(lo), abs(hi)) <= MAX_MAGNITUDE):
            raise InputError(
                f"--accuracy-range {lo:g},{hi:g} must be two finite numbers LO < HI, "
                f"within +-{MAX_MAGNITUDE:g}"
            )
        if ACCURACY not in columns:
            raise DataFileError(
                f"{what} has no {ACCURACY!r} column (columns: {', '.join(columns) or 'none'})",
                hint="name the measured accuracy column `accuracy`",
            )
        dim_names = _dimension_names(columns, dims, what)
        if len(df) == 0:
            raise DataFileError(f"{what} has no rows")
        _check_values(df, dim_names, (lo, hi), what)
        dimensions = _dimensions_of(df, dim_names, chosen=dims is not None, what=what)
        rows = _rows_of(df, dimensions, what)
        accuracy = df[ACCURACY].to_numpy(dtype=float)
        costs = {c: df[c].to_numpy(dtype=float) for c in COSTS if c in columns}
        networks = tuple(_native(v) for v in df[NETWORK]) if NETWORK in columns else None
        if networks is not None:
            _check_networks(networks, accuracy, rows, dimensions, what)
        if len(rows) > 1 and float(np.ptp(accuracy)) == 0.0:
            warnings.warn(
                f"{what}: every row has accuracy {accuracy[0]:g}: no architecture is more accurate than "
                "another, so the search can only return a feasible one",
                TableWarning,
                stacklevel=2,
            )
        n_net = f", {len(set(networks))} networks" if networks is not None else ""
        return cls(
            name,
            tuple(dimensions),
            tuple(rows),
            accuracy,
            costs,
            f"table of {len(rows)} architectures over {len(dimensions)} dimensions{n_net}",
            networks,
        )

    @property
    def digest(self) -> str:
        """SHA-256 of the table's content as the search sees it (dimensions, rows, accuracies, costs,
        ``_network``): part of a run's identity, so a table edited in place is not resumed as if it
        were the table the history was asked of."""
        got: str | None = self.__dict__.get("_digest")
        if got is None:
            h = hashlib.sha256()
            h.update(json.dumps([[d.name, d.categorical] for d in self.dimensions]).encode())
            h.update(repr(self.rows).encode())
            h.update(np.ascontiguousarray(self.accuracy, dtype="<f8").tobytes())
            for name in sorted(self.costs):
                h.update(name.encode())
                h.update(np.ascontiguousarray(self.costs[name], dtype="<f8").tobytes())
            h.update(repr(self.networks).encode())
            got = h.hexdigest()
            object.__setattr__(self, "_digest", got)
        return got

    # -- the space interface ----------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def references(self) -> Mapping[str, Arch]:
        return {}

    def row(self, arch: Sequence[Any]) -> int:
        idx: dict[Arch, int] = self._index  # type: ignore[attr-defined]
        try:
            return idx[tuple(arch)]
        except (KeyError, TypeError):
            raise ArchError(f"{self.name}: {self.format_values(arch)} is not a row of the table") from None

    def validate(self, arch: Sequence[Any]) -> Arch:
        if len(arch) != len(self.dimensions):
            raise ArchError(f"{self.name}: an arch has {len(self.dimensions)} values, got {len(arch)}")
        return self.rows[self.row(arch)]

    def resolve(self, text: str) -> Arch:
        return self.parse(text)

    def enumerate(self) -> Iterator[Arch]:
        yield from self.rows

    def sample(self, rng: np.random.Generator, n: int) -> list[Arch]:
        return [self.rows[int(i)] for i in rng.integers(0, len(self.rows), size=n)]

    def encode(self, arch: Arch) -> np.ndarray:
        """Ordinal value index over (choices - 1), one value per dimension (categories by their sorted
        order: the search engine one-hots categorical dimensions instead)."""
        out = np.zeros(len(self.dimensions))
        for i, (d, v) in enumerate(zip(self.dimensions, self.validate(arch), strict=True)):
            out[i] = d.index(v) / (len(d.values) - 1) if len(d.values) > 1 else 0.0
        return out

    def format_values(self, arch: Sequence[Any]) -> str:
        return ",".join(f"{d.name}={v}" for d, v in zip(self.dimensions, arch, strict=False))

    def format(self, arch: Arch) -> str:
        return self.format_values(self.validate(arch))

    def parse(self, text: str) -> Arch:
        parts = dict(p.split("=", 1) for p in text.split(",") if "=" in p)
        if set(parts) != {d.name for d in self.dimensions}:
            raise ArchError(
                f"{self.name}: arch {text!r} must name every dimension once: "
                + ",".join(f"{d.name}=..." for d in self.dimensions)
            )
        values = []
        for d in self.dimensions:
            raw = parts[d.name].strip()
            match = [v for v in d.values if str(v) == raw]
            if not match:
                raise ArchError(f"{self.name}: {d.name}={raw} is not a value of the table")
            values.append(match[0])
        return self.validate(values)

    def equivalence_key(self, arch: Arch) -> Any:
        """The row's ``_network`` value (rows with one value are one network), else the arch itself."""
        if self.networks is None:
            return self.validate(arch)
        return ("network", self.networks[self.row(arch)])

    def accuracy_of(self, arch: Arch) -> float:
        return float(self.accuracy[self.row(arch)])

    def cost_of(self, arch: Arch, column: str) -> float:
        if column not in self.costs:
            raise DataFileError(
                f"{self.name} has no {column!r} column, so it cannot be constrained on it "
                f"(cost columns: {', '.join(self.costs) or 'none'})"
            )
        return float(self.costs[column][self.row(arch)])


def is_table_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_dims(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def parse_accuracy_range(text: str | None) -> tuple[float, float]:
    """``--accuracy-range LO,HI`` (None: :data:`ACCURACY_RANGE`)."""
    if text is None:
        return ACCURACY_RANGE
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise InputError(
            f"--accuracy-range {text!r} must be two numbers LO,HI (e.g. 0,1 for fractions)"
        ) from None
    return lo, hi


def _dimension_names(columns: list[str], dims: Sequence[str] | None, what: str) -> list[str]:
    """The dimension columns: ``dims`` when given (each a column, neither the oracle nor a cost, none
    twice), else every column that is not reserved and does not start with ``_``."""
    if dims is None:
        names = [c for c in columns if c not in RESERVED and not c.startswith("_")]
    else:
        names = [d.strip() for d in dims if d.strip()]
        for d in names:
            if d not in columns:
                raise DataFileError(f"{what}: --dims names {d!r}, which is not a column")
            if d in RESERVED:
                raise DataFileError(f"{what}: --dims names {d!r}, which is the oracle or a cost column")
        if len(set(names)) != len(names):
            raise DataFileError(f"{what}: --dims repeats a column ({','.join(names)})")
    if not names:
        raise DataFileError(f"{what} has no dimension columns (only {', '.join(columns)})")
    return names


def _check_values(
    df: pd.DataFrame, dim_names: list[str], accuracy_range: tuple[float, float], what: str
) -> None:
    """No missing value in a column the search uses; the accuracy and the costs numeric and finite,
    the accuracy within ``accuracy_range``, no cost negative (each failure names column and row)."""
    import pandas as pd

    lo, hi = accuracy_range
    columns = [str(c) for c in df.columns]
    costs = [c for c in COSTS if c in columns]
    used = [*dim_names, ACCURACY, *costs, *([NETWORK] if NETWORK in columns else [])]
    for col in used:
        bad = df[col].isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataFileError(
                f"{what}: column {col!r} has {int(bad.sum())} missing value(s) (NaN), first at row {row}",
                hint="drop or fill those rows",
            )
    for col in (ACCURACY, *costs):
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise DataFileError(f"{what}: column {col!r} must be numeric, got {df[col].dtype}")
        values = df[col].to_numpy(dtype=float)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise DataFileError(
                f"{what}: column {col!r} holds an infinite value ({values[row]}) at row {row}"
            )
        if col == ACCURACY:
            out = (values < lo) | (values > hi)
            if out.any():
                row = int(np.flatnonzero(out)[0])
                raise DataFileError(
                    f"{what}: column {ACCURACY!r} is {values[row]:g} at row {row}, outside the table's "
                    f"accuracy range [{lo:g}, {hi:g}] ({int(out.sum())} row(s) outside)",
                    hint="accuracy is a percentage (or a fraction) of correct predictions: "
                    "fix those rows, or state the table's range with --accuracy-range LO,HI",
                )
        elif (values < 0).any():
            row = int(np.flatnonzero(values < 0)[0])
            raise DataFileError(
                f"{what}: column {col!r} is negative ({values[row]:g}) at row {row} "
                f"({int((values < 0).sum())} negative row(s)): a cost is 0 or more",
                hint="fix those rows (a measurement that failed is no row)",
            )


def _dimensions_of(df: pd.DataFrame, dim_names: list[str], *, chosen: bool, what: str) -> list[Dimension]:
    """One dimension per column: boolean and text columns categorical (a text column checked to be
    no row identifier, :func:`_check_categories`), numeric ones ordinal; values sorted."""
    import pandas as pd

    dimensions = []
    for col in dim_names:
        s = df[col]
        if pd.api.types.is_bool_dtype(s):
            values: list[Any] = sorted({bool(v) for v in s})
            categorical = True
        elif pd.api.types.is_numeric_dtype(s):
            values = sorted({_native(v) for v in s})
            categorical = False
        else:
            _check_categories(s, col, what, chosen=chosen)
            values = sorted({str(v) for v in s})
            categorical = True
        dimensions.append(Dimension(col, tuple(values), categorical=categorical))
    return dimensions


def _rows_of(df: pd.DataFrame, dimensions: list[Dimension], what: str) -> list[Arch]:
    """Each row's architecture (its dimensions' values); two rows of one architecture are an error."""
    cols = []
    for dim in dimensions:
        conv: Any = _native
        if dim.categorical:
            conv = bool if isinstance(dim.values[0], bool) else str
        cols.append([conv(v) for v in df[dim.name]])
    rows = list(zip(*cols, strict=True))
    seen: dict[Arch, int] = {}
    for i, r in enumerate(rows):
        if r in seen:
            text = ",".join(f"{d.name}={v}" for d, v in zip(dimensions, r, strict=True))
            raise DataFileError(
                f"{what}: rows {seen[r]} and {i} are the same architecture ({text})",
                hint="keep one row per architecture (average repeated runs), or add the missing "
                "dimension column",
            )
        seen[r] = i
    return rows
