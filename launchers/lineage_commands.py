"""``beamforge lineage TARGET [--store FILE | --chain CHAIN.yaml [--target local|gcp]] [--json]``.

For a dataset, model or endpoint, the path back to the raw files (endpoint <- deploy <-
model <- upload <- model <- train <- dataset <- dataset_run <- raw files, each with its
identity); for a raw file, the datasets, models and endpoints made from it
(:mod:`launchers.lineage`). The store is a SQLite file (``--store``; by default
the one in a dataset target's output folder, else ``metadata.sqlite``), or a chain's: ``{workdir}/metadata.sqlite`` on the local target,
Vertex ML Metadata on the gcp target.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error

COMMANDS = ("lineage",)


def add_parsers(sub: Any) -> None:
    """Adds the lineage subcommand to ``beamforge``'s parser."""
    parser = sub.add_parser(
        "lineage",
        help="what a dataset, model or endpoint was made from, or what a raw file made",
    )
    parser.add_argument(
        "target",
        help="a dataset (output folder, run folder or manifest.json), a model (folder, "
        "gs:// URI, local: name or Vertex AI model), an endpoint (URL or Vertex AI "
        "endpoint) or a raw input file",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--store",
        metavar="FILE",
        help="the ML Metadata SQLite file (default: a dataset target's "
        "{output}/metadata.sqlite, which beamforge run writes, else metadata.sqlite)",
    )
    where.add_argument(
        "--chain",
        metavar="CHAIN.yaml",
        help="read the chain's store: {workdir}/metadata.sqlite, or Vertex ML Metadata "
        "with --target gcp",
    )
    parser.add_argument(
        "--target",
        dest="chain_target",
        choices=["local", "gcp"],
        default="local",
        help="the chain's target, with --chain (default: %(default)s)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for one of the chain's parameters, with --chain (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def command(args: argparse.Namespace) -> int:
    """Runs ``beamforge lineage``; returns the exit code."""
    from launchers.lineage import LineageError, lineage
    from transforms.core.config import SpecError
    from transforms.core.errors import InputError

    try:
        store, where = _store(args)
        lines, data = lineage(store, args.target, where)
    except (LineageError, SpecError, InputError) as exc:
        return error(exc)
    except BrokenPipeError:
        raise  # the reader went away: the CLI ends quietly
    except OSError as exc:
        return error(f"{exc.filename or args.target}: {exc.strerror or exc}")
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else "\n".join(lines))
    return ExitCode.OK


def _store(args: argparse.Namespace) -> tuple[Any, str]:
    from launchers.lineage import LineageError
    from launchers.lineage.sqlite_store import SqliteStore

    if args.chain is None:
        if args.chain_target != "local" or args.param:
            raise LineageError("--target and --param go with --chain")
        path = args.store or _default_store(args.target)
        return SqliteStore(path, create=False), path
    from launchers.chain import check_target, load_chain
    from launchers.chain.parameters import parse_assignments
    from launchers.lineage import STORE_FILE

    spec = load_chain(args.chain, parse_assignments(args.param))
    check_target(spec, args.chain_target)
    if args.chain_target == "local":
        path = f"{spec.workdir.rstrip('/')}/{STORE_FILE}"
        return SqliteStore(path, create=False), path
    from launchers import vertex
    from launchers.lineage.vertex_store import VertexStore

    gcp = spec.gcp
    assert gcp is not None
    vertex.init(
        vertex.VertexSettings(
            project=gcp.project,
            region=gcp.region,
            staging_bucket=gcp.staging_bucket,
            service_account=gcp.service_account,
            api_endpoint=gcp.api_endpoint,
        )
    )
    where = f"Vertex ML Metadata of {gcp.project} in {gcp.region}"
    return VertexStore(gcp.project, gcp.region), where


def _default_store(target: str) -> str:
    """The store beside a local dataset ``target`` (``beamforge run`` keeps it in the output
    folder), else ``metadata.sqlite`` in the working directory."""
    import os

    from launchers.lineage import STORE_FILE
    from transforms.io.output_folder import enclosing_dataset

    if "://" not in target:
        folder = target if os.path.isdir(target) else os.path.dirname(target) or "."
        for candidate in (folder, enclosing_dataset(folder)):
            if candidate is not None and os.path.isfile(os.path.join(candidate, STORE_FILE)):
                return os.path.join(candidate, STORE_FILE)
    return STORE_FILE


__all__ = ["COMMANDS", "add_parsers", "command"]
