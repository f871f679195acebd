"""A chain's ``schedule:``: when Vertex AI Pipelines and Cloud Composer start it.

``schedule: {cron: "0 3 * * *", timezone: Europe/Paris}`` (or the cron text alone) becomes a
Vertex AI pipeline schedule and the Airflow DAG's timetable. The cron text is checked here,
field by field, so a typo fails when the chain is compiled, not when a scheduler first
reads it. ``beamforge chain`` itself runs when it is called and ignores the schedule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from typing import Annotated

from transforms.core.config import FieldError, Within

# (name, low, high, names for values) of the five fields, as cron (and Vertex, Airflow) read them.
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    ),
    ("day of week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_TERM = re.compile(r"(\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/([0-9]+))?\Z")


@dataclasses.dataclass
class Schedule:
    """When the chain runs on a scheduler.

    Attributes:
        cron: Five-field cron text (minute hour day-of-month month day-of-week).
        timezone: IANA time zone the cron is read in.
        max_concurrent_runs: Runs of the chain allowed at once.
        start: First day (``YYYY-MM-DD``) the schedule may fire; default: when it is created.
        catchup: Whether Airflow runs the intervals missed since ``start``.
    """

    cron: str
    timezone: str = "UTC"
    max_concurrent_runs: Annotated[int, Within(1, 100)] = 1
    start: str | None = None
    catchup: bool = False

    def validate(self) -> None:
        problem = cron_problem(self.cron)
        if problem:
            raise FieldError("cron", f"{self.cron!r} is not valid cron: {problem}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise FieldError(
                "timezone", f"{self.timezone!r} is not an IANA time zone (e.g. UTC, Europe/Paris)"
            ) from None
        if self.start is not None:
            try:
                dt.date.fromisoformat(self.start)
            except ValueError:
                raise FieldError(
                    "start", f"got {self.start!r}; expected a date, YYYY-MM-DD"
                ) from None


def cron_problem(text: str) -> str:
    """What is wrong with a five-field cron expression ('' when nothing is)."""
    fields = text.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for field, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for term in field.split(","):
            match = _TERM.match(term)
            if not match:
                return f"{name} {term!r} is not a value, range, list or step"
            base, step = match.groups()
            if step is not None and int(step) == 0:
                return f"{name} {term!r}: a step must be at least 1"
            if base == "*":
                continue
            bounds = []
            for part in base.split("-"):
                value = _value(part, names)
                if value is None or not low <= value <= high:
                    allowed = f"{low}-{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
                    return f"{name} {part!r} is out of range; expected {allowed}"
                bounds.append(value)
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                return f"{name} range {base!r} runs backwards"
    return ""


def _value(part: str, names: tuple[str, ...]) -> int | None:
    if part.isdigit():
        return int(part)
    upper = part.upper()
    if upper in names:
        # Month names count from 1, day names from 0 (SUN).
        return names.index(upper) + (1 if len(names) == 12 else 0)
    return None
