"""``beamforge skew``: training data against the requests the served model really saw.

    beamforge skew RUN --requests DIR|bq://PROJECT.DATASET.TABLE [-o skew.json]
                   [--schema schema.yaml] [--split train]

The logged raw instances (:mod:`launchers.serving.request_log`) are parsed with the run's
input schema exactly as the prediction server parses them (the transform artifact's input
types, :func:`transforms.core.values.convert_values`), summarised with
:class:`~transforms.ops.stats.DatasetStats`, and each input column is measured against the
run's input statistics of ``--split``: L-infinity for string, boolean, date and time columns,
Jensen-Shannon for numeric ones, as TFDV and Vertex AI Model Monitoring measure skew. The
thresholds are the schema's ``skew`` entries, else 0.3 per measure.

An instance with a value its column cannot take was refused by the server: the model never
saw it, so it is left out of the statistics and counted per column and reason. Keys that are
no input column are counted too (the server ignores them).

The result (``-o``, else stdout) has ``validation.json``'s shape with one skew pair,
``training_vs_serving``, measuring every column, plus a ``serving`` section with the counts.
A column over its threshold is also an anomaly of kind ``skew``. A column without a value
in any instance used (a key never logged, or always null), or in the training split, is not
measured (value null) and listed in ``serving.columns_without_values``.

Exit codes: 0 no column over its threshold, 3 (:attr:`ExitCode.STOPPED`, like the chain's
gate) some column over it, 2 an input that cannot be used (a run without input statistics,
an empty or unreadable request log, a schema naming a column the run does not have, ...),
each a one-line error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error

__all__ = ["ALL", "COMMANDS", "SERVING_PAIR", "SkewInputError", "add_parsers", "command", "skew"]

COMMANDS = ("skew",)
SERVING_PAIR = "training_vs_serving"
# --split all: the statistics of every row of the run (unless a split is called that).
ALL = "all"
# Instances converted and summarised at a time: bounded memory, whatever the log's size.
_CHUNK = 10_000


class SkewInputError(ValueError):
    """An input of ``beamforge skew`` cannot be used (the message names it)."""


def add_parsers(sub: Any) -> None:
    """Adds the skew subcommand to ``beamforge``'s parser."""
    parser = sub.add_parser(
        "skew",
        help="training data against logged serving requests: skew per input column",
        description="Measure every input column of the logged serving requests against the "
        "run's input statistics (L-infinity for categorical columns, Jensen-Shannon for "
        "numeric ones). Exit code 3 when a column is over its threshold.",
    )
    parser.add_argument(
        "run", help="the training run: a dataset output folder, its manifest.json or its run folder"
    )
    parser.add_argument(
        "--requests",
        required=True,
        metavar="DIR|bq://PROJECT.DATASET.TABLE",
        help="the prediction server's request log (BEAMFORGE_REQUEST_LOG)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the result (JSON) here instead of stdout"
    )
    parser.add_argument(
        "--schema",
        metavar="SCHEMA.yaml",
        help="a data schema whose skew entries set per-column measures and thresholds "
        "(default: 0.3 for every column)",
    )
    parser.add_argument(
        "--split",
        default="train",
        help=f"the run's split the requests are compared with, or {ALL} for every row "
        "(default: %(default)s)",
    )


def command(args: argparse.Namespace) -> int:
    """Runs ``beamforge skew ...``; returns the exit code."""
    from launchers.serving.request_log import RequestLogError
    from transforms.core.artifact import ArtifactError
    from transforms.core.config import SpecError
    from transforms.core.errors import InputError

    if args.output is not None and os.path.isdir(args.output):
        return error(f"{args.output}: is a directory; give the file to write")
    try:
        result = skew(args.run, args.requests, schema_path=args.schema, split=args.split)
        text = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        if args.output is None:
            sys.stdout.write(text)
        else:
            folder = os.path.dirname(os.path.abspath(args.output))
            os.makedirs(folder, exist_ok=True)
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
    except (SkewInputError, RequestLogError, SpecError, InputError, ArtifactError) as exc:
        return error(exc)
    except BrokenPipeError:
        raise  # the reader went away: the CLI ends quietly
    except OSError as exc:
        return error(f"{exc.filename or args.output}: {exc.strerror or exc}")
    print(_summary(result, args.output), file=sys.stderr)
    return ExitCode.STOPPED if result["summary"]["skewed_columns"] else ExitCode.OK


def skew(
    run: str, requests: str, *, schema_path: str | None = None, split: str = "train"
) -> dict[str, Any]:
    """Training-serving skew of a run's input columns against a request log.

    Args:
        run: The training run (dataset output folder, its manifest or its run folder).
        requests: The request log: a folder of JSONL files or ``bq://project.dataset.table``.
        schema_path: A data schema file whose ``skew`` entries set measures and thresholds.
        split: The run's split the requests are compared with, or ``all`` for every row
            (the input statistics' ``all``).

    Returns:
        ``validation.json``'s shape (``skew.training_vs_serving`` holds every column's
        measurement) with ``split`` and a ``serving`` section: the log, the instances read,
        used and refused (per column and reason), unknown keys, unreadable records and the
        columns without a value on one side (not measured: value null).

    Raises:
        SkewInputError: a run without input statistics or that split, an empty request log,
            no instance the input schema takes, a schema naming a column the run does not
            have (or with another type).
        InputError: a run that did not finish or cannot be read.
        ArtifactError: a transform artifact that cannot be read.
        RequestLogError: a request log that cannot be read.
        SpecError: a schema file that is not a valid data schema.
    """
    from transforms.core.dataset_folder import resolve_run
    from transforms.validation.result import validate

    manifest_path, manifest = resolve_run(run)
    training = _training_stats(manifest_path, manifest, split)
    input_schema, allow_non_finite = _input_schema(manifest)
    data_schema, schema_ref = _schema(schema_path, training, input_schema)
    serving, counts = _serving_stats(requests, input_schema, allow_non_finite)
    result = validate(
        serving,
        schema=_skew_only(data_schema, serving),
        skew={SERVING_PAIR: (training, serving)},
        run=str((manifest.get("run") or {}).get("id", "")),
        schema_ref=schema_ref,
    )
    empty = [
        name
        for name in result["skew"][SERVING_PAIR]
        if not _has_values(training[name]) or not _has_values(serving[name])
    ]
    counts["columns_without_values"] = empty
    return {**_not_measured(result, empty), "split": split, "serving": counts}


def _has_values(col_stats: Mapping[str, Any]) -> bool:
    return bool(col_stats.get("count"))


def _not_measured(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``result`` with the skew of ``names`` not measured: value null, not over, no anomaly.

    A column without a value on one side (never logged, or null in every instance; or
    never set in training) has nothing to compare. Validation would rate it 1.0 (values
    against none is drift there); for skew that mostly says the logger left the key out,
    so it is reported as not measured, as the documentation promises.
    """
    if not names:
        return result
    measured = result["skew"][SERVING_PAIR]
    for name in names:
        measured[name] = {**measured[name], "value": None, "over": False}
        measured[name]["max_difference_value"] = None
    anomalies = [
        a for a in result["anomalies"] if not (a["kind"] == "skew" and a["column"] in names)
    ]
    skewed = [name for name in result["summary"]["skewed_columns"] if name not in names]
    summary = {**result["summary"], "anomalies": len(anomalies), "skewed_columns": skewed}
    summary["ok"] = not anomalies
    return {**result, "anomalies": anomalies, "summary": summary}


def _training_stats(manifest_path: str, manifest: Mapping[str, Any], split: str) -> dict[str, Any]:
    from transforms.core import files

    stats_path = manifest.get("stats")
    if not isinstance(stats_path, str):
        raise SkewInputError(f"{manifest_path}: lists no statistics (key stats is missing)")
    raw = files.read_bytes(stats_path)
    if raw is None:
        raise SkewInputError(f"{stats_path}: does not exist: the run has no statistics")
    try:
        stats = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise SkewInputError(f"{stats_path}: is not valid JSON ({exc})") from None
    section = stats.get("input") if isinstance(stats, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("splits"), dict):
        raise SkewInputError(
            f"{stats_path}: holds no input statistics (key input): the run was made by a "
            "beamforge that did not record them; run it again"
        )
    splits = section["splits"]
    if split not in splits:
        if split == ALL and isinstance(section.get("all"), dict):
            return dict(section["all"])
        raise SkewInputError(
            f"--split {split}: the run has no such split; its splits are "
            f"{', '.join(splits)} (or {ALL}: every row)"
        )
    return dict(splits[split])


def _input_schema(manifest: Mapping[str, Any]) -> tuple[Any, frozenset[str]]:
    """The input columns' Arrow schema and non-finite allowance, from the run's artifact."""
    from transforms.core.artifact import read_artifact
    from transforms.core.dataset_folder import resolve_artifact_dir
    from transforms.core.schema import arrow_schema
    from transforms.ops.registry import build_step

    artifact_dir = (manifest.get("artifact") or {}).get("path")
    if not isinstance(artifact_dir, str):
        raise SkewInputError("the run's manifest names no artifact (key artifact.path)")
    artifact = read_artifact(resolve_artifact_dir(artifact_dir), build_step)
    return arrow_schema(artifact.input_schema), frozenset(artifact.allow_non_finite)


def _schema(
    path: str | None, training: Mapping[str, Any], input_schema: Any
) -> tuple[Any, dict[str, str] | None]:
    """The data schema, checked against the run's input columns, and its reference."""
    import hashlib

    from beam_pipelines.spec import load_yaml
    from transforms.core import files
    from transforms.core.config import SpecError
    from transforms.validation.schema import parse_schema

    if path is None:
        return None, None
    try:
        schema = parse_schema(load_yaml(path, what="data schema"), origin=path)
    except SpecError as exc:
        raise (exc if exc.source else exc.located(path)) from None
    names = input_schema.names
    for name, column in schema.columns.items():
        if name not in names:
            raise SkewInputError(
                f"{path}: columns.{name}: no such input column in the run; its input "
                f"columns are {', '.join(names)}"
            )
        observed = (training.get(name) or {}).get("type")
        if observed is not None and observed != column.type:
            raise SkewInputError(
                f"{path}: columns.{name}.type: {column.type}, but the run's column is {observed}"
            )
    raw = files.read_bytes(path) or b""
    return schema, {"path": path, "sha256": hashlib.sha256(raw).hexdigest()}


def _skew_only(schema: Any, serving: Mapping[str, Any]) -> Any:
    """A schema with only the skew settings of ``schema`` for every column of ``serving``.

    ``validate`` checks the data against every expectation of a schema it is given; here
    the schema only says how each column's skew is measured. The serving data's presence,
    range and values are a run's validation, not this comparison's.
    """
    from transforms.validation.schema import ColumnSchema, DataSchema

    if schema is None:
        return None
    columns = {}
    for name, col_stats in serving.items():
        given = schema.columns.get(name)
        columns[name] = ColumnSchema(
            type=str(col_stats.get("type")),
            skew=given.skew if given is not None else None,
            skew_source=given.skew_source if given is not None else ColumnSchema.skew_source,
        )
    return DataSchema(columns)


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _serving_stats(
    requests: str, input_schema: Any, allow_non_finite: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Statistics of the logged instances that the input schema takes, and the counts."""
    import pyarrow as pa

    from launchers.serving.request_log import LogReader
    from transforms.core.values import convert_values, rejected_mask
    from transforms.ops.stats import DatasetStats

    reader = LogReader(requests)
    stats = DatasetStats(input_schema)
    accumulator = stats.create_accumulator()
    names = set(input_schema.names)
    refused: dict[str, dict[str, int]] = {}
    unknown: dict[str, int] = {}
    used = 0
    for chunk in _chunks(reader.instances(), _CHUNK):
        columns = {}
        problems: dict[int, list[Any]] = {}
        for field in input_schema:
            converted = convert_values(
                [row.get(field.name) for row in chunk],
                field.type,
                allow_non_finite=field.name in allow_non_finite,
                strings_as_text=True,
                binary_base64=True,
            )
            columns[field.name] = converted.array
            for i, rejection in converted.rejected.items():
                problems.setdefault(i, []).append(rejection)
                reasons = refused.setdefault(field.name, {})
                reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
        for row in chunk:
            for key in row:
                if key not in names:
                    unknown[key] = unknown.get(key, 0) + 1
        batch = pa.RecordBatch.from_pydict(columns, schema=input_schema)
        if problems:
            batch = batch.filter(pa.array(~rejected_mask(len(chunk), problems)))
        used += batch.num_rows
        accumulator = stats.add_batch(accumulator, batch)
    counts = {
        "requests": requests,
        "instances": reader.records,
        "used": used,
        "refused": reader.records - used,
        "refused_values": {k: dict(sorted(v.items())) for k, v in sorted(refused.items())},
        "unknown_keys": dict(sorted(unknown.items())),
        "unreadable_records": reader.unreadable,
    }
    if reader.records == 0:
        raise SkewInputError(
            f"{requests}: the request log holds no instances"
            + (f" ({reader.unreadable} unreadable records)" if reader.unreadable else "")
        )
    if used == 0:
        worst = max(refused, key=lambda k: sum(refused[k].values()))
        raise SkewInputError(
            f"{requests}: none of the {reader.records} logged instances fits the run's input "
            f"schema (column {worst}: {sum(refused[worst].values())} refused values)"
        )
    return stats.extract_output(accumulator), counts


def _summary(result: Mapping[str, Any], output: str | None) -> str:
    serving = result["serving"]
    measured = result["skew"][SERVING_PAIR]
    lines = [
        f"skew of run {result['run']} ({result['split']}) against {serving['used']:,} logged "
        f"instances in {serving['requests']}"
        + (f" ({serving['refused']:,} refused)" if serving["refused"] else "")
    ]
    width = max((len(name) for name in measured), default=0)
    for name, m in measured.items():
        value = "n/a" if m["value"] is None else f"{m['value']:.4f}"
        threshold = "none" if m["threshold"] is None else f"{m['threshold']:g}"
        flag = "  SKEW" if m["over"] else ""
        lines.append(
            f"  {name:<{width}}  {m['measure']:<14} {value:>8}  (threshold {threshold}){flag}"
        )
    skewed = result["summary"]["skewed_columns"]
    lines.append(
        f"skewed columns: {', '.join(skewed)}" if skewed else "no column over its threshold"
    )
    if output is not None:
        lines.append(f"written to {output}")
    return "\n".join(lines)
