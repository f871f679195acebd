"""``beamforge schema``: the data schema a run's input is validated against.

- ``beamforge schema infer RUN -o schema.yaml``: a readable schema from a finished run's input
  statistics (types, presence, value domains, ranges, drift and skew thresholds) for a user
  to edit and name in a job spec's ``validation: {schema: ...}``;
- ``beamforge schema check FILE``: whether a schema file is valid, without a run.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error

COMMANDS = ("schema",)


def add_parsers(sub: Any) -> None:
    """Adds the schema subcommand to ``beamforge``'s parser."""
    schema = sub.add_parser("schema", help="the data schema runs are validated against")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    infer = schema_sub.add_parser(
        "infer", help="write a schema from a finished run's input statistics"
    )
    infer.add_argument("run", help="a dataset output folder, its manifest.json or its run folder")
    infer.add_argument("-o", "--output", required=True, metavar="FILE", help="the schema (YAML)")
    check = schema_sub.add_parser("check", help="check a schema file")
    check.add_argument("file", help="the schema (YAML)")


def command(args: argparse.Namespace) -> int:
    """Runs ``beamforge schema ...``; returns the exit code."""
    from beam_pipelines.spec import load_yaml
    from transforms.core.config import SpecError
    from transforms.core.errors import InputError
    from transforms.validation.schema import parse_schema

    try:
        if args.schema_command == "check":
            schema = parse_schema(load_yaml(args.file, what="data schema"), origin=args.file)
            print(f"{args.file}: valid data schema ({len(schema.columns)} columns)")
            return ExitCode.OK
        return _infer(args.run, args.output)
    except (SpecError, InputError) as exc:
        return error(exc)
    except BrokenPipeError:
        raise  # the reader went away: the CLI ends quietly
    except OSError as exc:
        return error(f"{exc.filename or args.output}: {exc.strerror or exc}")


def _infer(run: str, output: str) -> int:
    from beam_pipelines.dataset.validation import baseline_stats
    from transforms.core.dataset_folder import resolve_run
    from transforms.io.output_folder import enclosing_dataset
    from transforms.validation.schema import infer_schema, schema_to_yaml

    if os.path.isdir(output):
        return error(f"{output}: is a directory; give the schema file to write")
    holder = enclosing_dataset(output)
    if holder is not None:
        # The next run into that folder would refuse a file it did not write.
        return error(
            f"{output}: is inside the dataset folder {holder}, which its runs rewrite; write "
            "the schema elsewhere (e.g. beside the job spec)"
        )
    manifest_path, manifest = resolve_run(run)
    stats, ref = baseline_stats(manifest_path, manifest)
    schema = infer_schema(stats["all"])
    header = (
        f"Data schema of pipeline {manifest.get('pipeline', '?')}, inferred by beamforge schema "
        f"infer from run {ref['run']} ({_rows(manifest)} rows).\n"
        "Edit the expectations and thresholds; name this file in a job spec's "
        "validation: {schema: ...}."
    )
    text = schema_to_yaml(schema, header=header)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{output}: data schema of {len(schema.columns)} columns from run {ref['run']}")
    return ExitCode.OK


def _rows(manifest: dict[str, Any]) -> str:
    read = manifest.get("counts", {}).get("read")
    return f"{read:,}" if isinstance(read, int) else json.dumps(read)
