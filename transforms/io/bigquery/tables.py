"""BigQuery table references: ``project.dataset.table`` parsed and checked."""

from __future__ import annotations

import dataclasses
import re

__all__ = ["TableRef", "parse_table"]

# project ids: 6-30 chars, lowercase letters, digits, hyphens (older ones may hold a domain
# prefix "example.com:"); dataset and table ids: letters, digits and underscores.
_PROJECT = r"(?:[a-z][a-z0-9.\-]*:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]"
_DATASET = r"[A-Za-z0-9_]{1,1024}"
_TABLE = r"[A-Za-z0-9_\-{}$]{1,1024}"
_TABLE_REF = re.compile(
    rf"(?:(?P<project>{_PROJECT})[.:])?(?P<dataset>{_DATASET})\.(?P<table>{_TABLE})"
)


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A fully qualified BigQuery table."""

    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    def with_table(self, table: str) -> TableRef:
        """The table of the same dataset named ``table``."""
        return dataclasses.replace(self, table=table)


def parse_table(text: str, default_project: str | None = None) -> TableRef:
    """Parses ``project.dataset.table``, ``project:dataset.table`` or ``dataset.table``.

    Raises:
        ValueError: for a malformed reference, or one without a project when no default is
            given; the message shows the expected form.
    """
    match = _TABLE_REF.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"malformed BigQuery table {text!r}: expected 'project.dataset.table' (project: "
            "6-30 lowercase letters, digits or hyphens; dataset and table: letters, digits, "
            "underscores)"
        )
    project = match["project"] or default_project
    if not project:
        raise ValueError(f"BigQuery table {text!r} names no project: use 'project.dataset.table'")
    return TableRef(project=project, dataset=match["dataset"], table=match["table"])
