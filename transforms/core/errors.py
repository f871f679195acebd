"""The one error record shape of the project.

Every step that can reject a row emits an :class:`ErrorRecord` instead of dropping the row
or failing the bundle. Records are written to the job's dead-letter sink as JSON lines and
carry the original payload, so they can be fixed and replayed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

# Reason codes used by readers. Steps use their own short snake_case codes.
WRONG_FIELD_COUNT = "wrong_field_count"
UNPARSEABLE_VALUE = "unparseable_value"
BAD_ENCODING = "bad_encoding"
MALFORMED_RECORD = "malformed_record"
MISSING_COLUMN = "missing_column"
# A float that is NaN, infinite or beyond its column type's range (source.allow_non_finite).
NON_FINITE = "non_finite"
# A CSV quote opened on the record's line and never closed (or not within csv.max_record_bytes).
UNTERMINATED_QUOTE = "unterminated_quote"
# A CSV record longer than csv.max_record_bytes.
RECORD_TOO_LARGE = "record_too_large"


class InputError(ValueError):
    """A user's input, output location or artifact cannot be used as given.

    Raised before work where the problem can be seen then, else by the step that meets it.
    The message is one line that names the file, key or location and what was expected;
    the CLI prints it as it is and exits with its code for user errors.

    Attributes:
        location: The file, ``file:line``, key or location at fault.
        problem: What is wrong and what was expected.
    """

    def __init__(self, location: str, problem: str | None = None) -> None:
        # Beam re-raises a worker's exception as ``type(exc)(message + step)``: the
        # one-argument form rebuilds the parts, so the launcher still gets this type.
        if problem is None:
            location, _, problem = location.partition(": ")
        self.location = location
        self.problem = problem
        super().__init__(f"{location}: {problem}" if problem else location)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Beam pickles exceptions raised in workers back to the launcher.
        return (type(self), (self.location, self.problem))


def utc_now_iso() -> str:
    """Returns the current UTC time as an ISO-8601 string with a ``Z`` suffix."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """A row that did not make it into the dataset, and why.

    Attributes:
        pipeline: Name of the job (the spec's ``name``).
        step: Step that rejected the row: ``read`` for readers, else the step name.
        reason: Short machine-readable reason code, e.g. ``out_of_range``.
        message: Human-readable explanation naming the column and what was expected.
        payload: The original record, replayable: the raw line for text formats, else the
            row as JSON.
        source: Where the record came from: ``path:line`` for files, a message id for
            streams.
        event_time: Event time of the record, if known (ISO-8601).
        processing_time: When the record was rejected (ISO-8601, UTC).
    """

    pipeline: str
    step: str
    reason: str
    message: str
    payload: str
    source: str
    event_time: str | None = None
    processing_time: str = dataclasses.field(default_factory=utc_now_iso)

    def to_dict(self) -> dict[str, Any]:
        """Returns the record as a plain dict (the JSON and BigQuery row shape)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Returns the record as one line of JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorRecord:
        """Builds a record from :meth:`to_dict` output."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


_NON_FINITE_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _strict(value: Any) -> Any:
    # NaN and infinities as the strings the readers parse back to the same float: the
    # payload stays strict JSON and replays to the same row.
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE_TEXT[repr(value)]
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def row_payload(row: Mapping[str, Any]) -> str:
    """Serialises a row for :attr:`ErrorRecord.payload` as strict JSON.

    Values JSON has no literal for become strings: NaN and infinities ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``; dates, times and other objects their ``str``.
    """
    try:
        return json.dumps(row, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(
            _strict(dict(row)), ensure_ascii=False, sort_keys=True, default=str, allow_nan=False
        )
