"""The error hierarchy of chamlab.

It lives in ``core`` (which imports nothing of ours) so that every package (``operators``,
``chamnet``, ``host``) raises and catches the same classes. ``agent`` does not import it: it runs on
the target and depends on nothing of ours.

Every error carries a one-line message that names the offending file, key or value, and a ``hint``
that says what to do next. The CLI prints both and exits with ``exit_code``:

* ``2``: bad input (unknown name, malformed file, missing LUT entries): fix the input and re-run.
* ``1``: the work itself failed (export, transport, measurement, an OS error while writing).

``130`` (interrupted) is the CLI's own: it is not an error class.
"""

from __future__ import annotations


class ChamlabWarning(UserWarning):
    """Warnings issued by chamlab itself (tests turn them into errors)."""


class ChamlabError(Exception):
    """Base class: a message plus an optional hint naming the next command to run."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class InputError(ChamlabError):
    """Bad input from the user: a name, a file or a value. Exit code 2."""

    exit_code = 2


class UnknownNameError(InputError, KeyError):
    """A registry lookup failed; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...], *, hint: str | None = None):
        listed = ", ".join(sorted(known)) or "(none)"
        super().__init__(f"unknown {kind} {name!r}; known: {listed}", hint=hint)
        self.kind = kind
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return ChamlabError.__str__(self)


class DuplicateNameError(ChamlabError, ValueError):
    """A registry already holds this name (registries never override silently)."""


class ConfigError(InputError):
    """devices.toml (or another config file) is malformed or names an unknown key."""


class ArchError(InputError):
    """An architecture string or vector does not belong to the search space."""


class DataFileError(InputError):
    """A chamlab data file (LUT, power trace, search history, ...) is missing, corrupt, foreign (not of
    the expected ``chamlab.kind``) or of a schema version this chamlab cannot read."""


class LutError(DataFileError):
    """A LUT file is missing, corrupt, foreign (not a chamlab LUT) or of an unknown schema."""


class MissingLutEntriesError(InputError):
    """A prediction needs operators that the LUT does not hold."""

    def __init__(self, message: str, missing: list[str], *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.missing = tuple(missing)


class NoEnergyError(InputError):
    """An energy prediction was asked for where the LUT holds no energy (the device had no power
    reader when it was profiled)."""


class OutputPathError(InputError):
    """An output path cannot be written (missing parent, no permission, a directory)."""


class WriteError(ChamlabError):
    """Writing an output failed while the work was done (disk full, I/O error). Exit code 1: the
    measurements are kept where they were (the run directory), so re-running only writes them."""


class DeviceBusyError(InputError):
    """The device is locked by another chamlab run and the caller asked not to wait (``--no-wait``)."""


class ExportError(ChamlabError):
    """Exporting an operator or network to an artifact failed."""


class TransportError(ChamlabError):
    """Pushing, running or pulling on a target failed."""


class MeasurementError(ChamlabError):
    """The agent could not measure an artifact (runner failed or produced no result)."""
