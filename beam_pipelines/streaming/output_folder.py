"""The streaming output folder: a run writes into one that no earlier run wrote.

Streaming outputs are appended bundle by bundle (no manifest, no commit: a Dataflow job writes
them for as long as it runs), and a bounded local run checks its ledger against everything the
folder holds. A second run into the same folder would add its counts to the first one's and
mix both runs' rows and windows, so :func:`check_fresh_output` refuses it before any work.
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from transforms.core.errors import InputError

# What a streaming run writes under its output folder (see the package's docstring).
_RUN_FILES = ("counts/*", "rows/*", "errors/*", "aggregates/*/*", "summary.json")


def earlier_run_files(root: str) -> list[str]:
    """The files of an earlier streaming run under ``root`` (local or gs://), sorted."""
    patterns = [FileSystems.join(root, *pattern.split("/")) for pattern in _RUN_FILES]
    found: list[str] = []
    for result in FileSystems.match(patterns):
        found += [m.path for m in result.metadata_list]
    return sorted(found)


def check_fresh_output(root: str) -> None:
    """Refuses an output folder that holds an earlier streaming run's files.

    Raises:
        InputError: naming the folder (the CLI prints it as one line, exit code 2).
    """
    if earlier_run_files(root):
        raise InputError(
            root,
            "holds the files of an earlier streaming run; give a new output folder or remove it",
        )


__all__ = ["check_fresh_output", "earlier_run_files"]
