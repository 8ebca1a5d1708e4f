"""The project's exception hierarchy: one base, specific subclasses.

The command-line tools catch :class:`AslError` in one place (:func:`asl_capture.cli.run.main`),
print ``ClassName: message`` and exit with the class's :attr:`AslError.exit_code` (1 = verification
failed, 2 = usage or unreadable input, or a tool's own documented code).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class AslError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code: int = EXIT_USAGE


class UsageError(AslError):
    """The command line or a configuration value is wrong."""


class CborError(AslError):
    """Bytes are not the deterministic CBOR this format requires."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} at byte {offset}")
        self.offset = offset


class TruncatedCbor(CborError):
    """The input ended inside a CBOR item."""


class FormatError(CborError):
    """Well-formed CBOR that breaks the record format (docs/FORMAT.md); names the offending field.

    ``field`` is the field's path inside the decoded value, e.g. ``argv[0]`` or ``inputs.entries``
    (empty for the value as a whole); the message is ``<field>: <what is wrong>``.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field


class KeyFileError(AslError):
    """A key file is missing, unreadable, malformed, too permissive or wrongly encrypted."""


class StoreError(AslError):
    """The provenance directory or its object store cannot be used."""


class ChainError(AslError):
    """The chain file cannot be read or appended to. ``record`` is the index of the item at fault,
    when one is (a corrupt item)."""

    def __init__(self, message: str, *, record: int | None = None) -> None:
        super().__init__(message)
        self.record = record


class TornTailError(ChainError):
    """The chain ends with a partial record (a crash while appending)."""

    def __init__(self, path: str, *, offset: int, length: int, records: int, zeros: bool = False) -> None:
        what = "zero-filled tail" if zeros else "torn tail"
        super().__init__(
            f"{path}: {what} of {length} bytes at byte offset {offset} after {records} whole "
            f"record(s); run 'asl-chain repair' to truncate it"
        )
        self.offset = offset
        self.length = length
        self.records = records


class CheckpointError(ChainError):
    """A record was appended but the signed checkpoint could not be updated (the older one holds)."""

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


class CaptureError(AslError):
    """A step could not be captured (a snapshot failed, an input is unreadable)."""


class SnapshotError(CaptureError):
    """A tree could not be snapshotted: unreadable file, permission error, unstable file."""


class VerificationError(AslError):
    """A verification check failed; names the record and the check."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, check: str = "", record: int | None = None) -> None:
        where = f"record {record}: " if record is not None else ""
        label = f"[{check}] " if check else ""
        super().__init__(f"{label}{where}{message}")
        self.check = check
        self.record = record


class RecordWriteError(AslError):
    """The command ran but its record could not be appended (the chain is unchanged)."""

    exit_code = 125


class AgentError(AslError):
    """The signing agent of an enclosing capture cannot be reached or refused a request."""


class ReleaseError(AslError):
    """Publishing was refused: the ISO does not verify, the release key signed the build, the versioning
    rule, or a release of that version exists already."""

    exit_code = EXIT_FAILED


class ImageError(AslError):
    """An ISO or squashfs image cannot be read: not an image, truncated, corrupt, or claiming absurd sizes."""
