"""A chain's ``schedule:``: when Vertex AI Pipelines and Cloud Composer start it.

``schedule: {cron: "0 3 * * *", timezone: Europe/Paris}`` (or the cron text alone) becomes a
Vertex AI pipeline schedule and the Airflow DAG's timetable. The cron text is checked here,
field by field, so a typo fails when the chain is compiled, not when a scheduler first
reads it. ``beamforge chain`` itself runs when it is called and ignores the schedule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import zoneinfo
from typing import Annotated, Any

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
        if self.timezone not in _zones():
            raise FieldError(
                "timezone", f"{self.timezone!r} is not an IANA time zone (e.g. UTC, Europe/Paris)"
            )
        if self.start is not None:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.start):
                raise FieldError("start", f"got {self.start!r}; expected a date, YYYY-MM-DD")
            try:
                day = dt.date.fromisoformat(self.start)
            except ValueError:
                raise FieldError(
                    "start", f"got {self.start!r}; expected a date, YYYY-MM-DD"
                ) from None
            if day.year < 1970:
                raise FieldError("start", f"got {self.start!r}; expected a date from 1970 on")
        if self.catchup and self.start is None:
            raise FieldError("catchup", "catching up needs a start date to catch up from")


@functools.cache
def _zones() -> frozenset[str]:
    # The IANA names schedulers know; not the system's own links such as localtime.
    return frozenset(
        zone
        for zone in zoneinfo.available_timezones()
        if zone not in ("localtime", "posixrules", "Factory")
        and not zone.startswith(("posix/", "right/"))
    )


def schedule_section(data: Any) -> Any:
    """The ``schedule:`` mapping: the cron text alone is a shorthand, a YAML date is text."""
    if isinstance(data, str):
        return {"cron": data}
    if isinstance(data, dict) and isinstance(data.get("start"), dt.date):
        return {**data, "start": data["start"].isoformat()}
    return data


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
    days, months = _values(fields[2], 1, 31, ()), _values(fields[3], 1, 12, _FIELDS[3][3])
    # With a day of week too, cron fires on either: only a day of month alone can never fire.
    if (
        fields[2] != "*"
        and fields[4] == "*"
        and not any(day <= _LONGEST[month] for day in days for month in months)
    ):
        return f"day of month {fields[2]!r} never falls in month {fields[3]!r}: it never fires"
    return ""


# The longest each month gets (February in a leap year).
_LONGEST = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def _values(field: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    """The values a checked cron field takes."""
    out: set[int] = set()
    for term in field.split(","):
        match = _TERM.match(term)
        assert match is not None
        base, step = match.groups()
        if base == "*":
            first, last = low, high
        else:
            # Checked already: every part is a value in range.
            parts = [_value(part, names) or 0 for part in base.split("-")]
            first = parts[0]
            # "5/15" runs from 5 to the end, "5-20" to 20, "5" is 5 alone.
            last = parts[1] if len(parts) == 2 else (high if step is not None else first)
        out.update(range(first, last + 1, int(step or 1)))
    return out


def _value(part: str, names: tuple[str, ...]) -> int | None:
    if part.isdigit():
        return int(part)
    upper = part.upper()
    if upper in names:
        # Month names count from 1, day names from 0 (SUN).
        return names.index(upper) + (1 if len(names) == 12 else 0)
    return None
