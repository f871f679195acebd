"""``beamforge predict``: score raw files or a BigQuery table with a chain's trained model.

    beamforge predict CHAIN.yaml --input RAW [--input RAW ...] --output DIR|bq://P.D.T
                      [--model DIR] [--key COL ...] [--format parquet|jsonl]
                      [--errors DIR] [--param NAME=VALUE ...] [Beam options ...]
                      [--runner DataflowRunner ... [--dry-run]]

The model is the one the chain last trained and uploaded on the local target (its state
file names the model directory), unless ``--model DIR`` (local or gs://) names another. The
raw rows are read as the chain's dataset spec reads them (its ``source`` section), the
transform artifact in the model directory turns them into features, and Beam's RunInference
scores them (:mod:`beam_pipelines.predict`). The local runner is the default; with
``--runner DataflowRunner`` the job goes to Dataflow with the dataset spec's ``dataflow:``
settings, and ``--dry-run`` builds that job offline without submitting it.

Exit codes: 0 done (or submitted, or dry-run), 2 a user error (no such chain, no model
trained yet, a missing input, an unknown ``--key``, ...) as one line, 1 counts that do not
balance.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error

__all__ = ["COMMANDS", "NoModelError", "add_parsers", "chain_model_dir", "command"]

COMMANDS = ("predict",)
_TARGET = "local"
_DATAFLOW = "DataflowRunner"


class NoModelError(ValueError):
    """The chain has no trained model on the local target yet."""


def add_parsers(sub: Any) -> None:
    """Adds the predict subcommand to ``beamforge``'s parser."""
    parser = sub.add_parser(
        "predict",
        help="score raw files or a BigQuery table with the chain's model (Beam RunInference)",
        description="Read raw rows as the chain's dataset spec does, apply the model's "
        "transform artifact, score with RunInference, write one prediction per good row, "
        "the bad rows to the errors and a manifest that balances. Other --flags are Beam "
        "pipeline options (the local runner unless --runner names another).",
    )
    parser.add_argument("chain", help="the chain spec (YAML) whose model and dataset spec are used")
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="PATH|bq://PROJECT.DATASET.TABLE",
        help="raw files or globs (local or gs://; repeatable), or one BigQuery table",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR|bq://PROJECT.DATASET.TABLE",
        help="the output folder (manifest.json, predictions/, errors/), or a BigQuery table "
        "whose rows are replaced by the predictions",
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="a model directory (model.joblib and artifact/; local or gs://) instead of the "
        "chain's last trained model",
    )
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="COLUMN",
        help="an input column copied to every prediction (repeatable; default: the source "
        "file and line)",
    )
    parser.add_argument(
        "--format",
        choices=["parquet", "jsonl"],
        default="parquet",
        help="the prediction files' format (default: %(default)s)",
    )
    parser.add_argument(
        "--errors",
        metavar="DIR",
        help="with a BigQuery --output: the folder for the errors and the manifest "
        "(default: predict/TABLE under the chain's workdir)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for one of the chain's parameters (repeatable)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build the Dataflow job offline and print it; nothing is submitted or written",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def command(args: argparse.Namespace) -> int:
    """Runs ``beamforge predict ...``; returns the exit code."""
    from beam_pipelines.predict import run_predict
    from launchers.chain import SpecError as ChainSpecError
    from transforms.core.artifact import ArtifactError
    from transforms.core.config import SpecError
    from transforms.core.errors import InputError

    beam_args = list(getattr(args, "beam_args", []))
    # An unknown option is reported as this command's one error line, not also as Beam's
    # warning; Beam's RunInference warns on every model load that it cannot measure memory
    # (its optional model manager does not import here), which says nothing about the run.
    logging.getLogger("apache_beam.options.pipeline_options").setLevel(logging.ERROR)
    logging.getLogger().addFilter(_quiet_memory_warning)
    if args.errors is not None and not args.output.startswith("bq://"):
        return error(
            "--errors: only for a bq:// --output; a folder output keeps its errors in its "
            "run folder"
        )
    try:
        chain = _load_chain(args.chain, args.param)
        model_dir = args.model or chain_model_dir(chain)
        spec = _dataset_spec(chain)
        run_folder = args.errors
        if args.output.startswith("bq://") and run_folder is None:
            table = args.output[len("bq://") :].replace(".", "_").replace(":", "_")
            run_folder = os.path.join(chain.workdir, "predict", table)
        if _names_dataflow(beam_args):
            beam_args = _dataflow_args(spec, beam_args, dry_run=args.dry_run)
        elif args.dry_run:
            # As `beamforge run --dry-run`: the dry run is Dataflow's, so it implies the
            # runner; its missing settings are reported as what the dry run needs.
            try:
                beam_args = _dataflow_args(spec, beam_args, dry_run=True)
            except SpecError as exc:
                raise InputError(
                    "--dry-run",
                    "builds a Dataflow job (it implies --runner DataflowRunner) and needs its "
                    f"settings: {exc}",
                ) from None
        if not args.quiet:
            logging.getLogger("beam_pipelines").setLevel(logging.INFO)
            print(f"scoring with {model_dir}", file=sys.stderr, flush=True)
        result = run_predict(
            model_dir,
            args.input,
            args.output,
            source=spec.source if spec is not None and spec.source.bigquery is None else None,
            keys=args.key,
            output_format=args.format,
            run_folder=run_folder,
            beam_args=beam_args,
            dry_run=args.dry_run,
        )
    except (NoModelError, InputError, SpecError, ChainSpecError, ArtifactError) as exc:
        return error(exc)
    except OSError as exc:
        return error(f"{exc.filename or args.chain}: {exc.strerror or exc}")
    if args.dry_run:
        from launchers.dataflow.submit import dry_run_job

        print(dry_run_job(result.pipeline_result.job).summary())
        return ExitCode.OK
    if not result.manifest:
        print(f"submitted; the job commits {result.manifest_path} when it finishes")
        return ExitCode.OK
    print(_summary(result.manifest, result.seconds, result.manifest_path))
    return ExitCode.OK


def _quiet_memory_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Resource module is not available")


def chain_model_dir(chain: Any) -> str:
    """The model directory the chain last trained (or uploaded) on the local target.

    The last completed step, in chain order, whose recorded outputs name a ``model_dir``
    (an upload step's, else the train step's). The train step rewrites its model directory
    in place, so the model there is refused unless every step that judges or ships it (a
    gate on the train step's metrics, its upload, that upload's deploy) completed after it
    was trained: after a gate rejected a retrained model, or a canary was rolled back, the
    directory holds the model that did not pass.

    Raises:
        NoModelError: if no such step completed yet, or a step after the train step did not
            pass with the model now in the directory.
    """
    from launchers.chain.state import COMPLETED, load_state

    path = chain.state_path(_TARGET)
    state = load_state(path, chain.name, _TARGET)
    for step in reversed(chain.steps):
        recorded = state.steps.get(step.name)
        if recorded is not None and recorded.status == COMPLETED:
            model_dir = recorded.outputs.get("model_dir")
            if isinstance(model_dir, str) and model_dir:
                _check_model_passed(chain, state, step, model_dir)
                return model_dir
    raise NoModelError(
        f"chain {chain.name}: no model trained yet on the {_TARGET} target (state {path}); "
        f"run `beamforge chain {chain.origin}` first or give --model DIR"
    )


def _check_model_passed(chain: Any, state: Any, found: Any, model_dir: str) -> None:
    """Refuses the model if a step that judges or ships it did not complete after training.

    Raises:
        NoModelError: naming the first such step and its status.
    """
    from launchers.chain.state import COMPLETED, PENDING

    train_name = found.name if found.KIND == "train" else getattr(found, "model", None)
    trained = state.steps.get(train_name) if isinstance(train_name, str) else None
    if trained is None:
        return
    uploads = {
        s.name for s in chain.steps if s.KIND == "upload" and getattr(s, "model", "") == train_name
    }
    for step in chain.steps:
        judges = (
            (step.KIND == "gate" and step.metrics == train_name)
            or step.name in uploads
            or (step.KIND == "deploy" and step.model in uploads)
        )
        if not judges:
            continue
        recorded = state.steps.get(step.name)
        status = recorded.status if recorded is not None else PENDING
        # A step that finished before the model was trained judged an earlier model.
        if status == COMPLETED and recorded.finished < trained.finished:
            status = "not rerun since the model was trained"
        if status != COMPLETED:
            raise NoModelError(
                f"chain {chain.name}: the model in {model_dir} did not pass step {step.name} "
                f"({status}); rerun the chain or give --model DIR"
            )


def _load_chain(path: str, params: Sequence[str]) -> Any:
    from launchers import chain as chains
    from launchers.chain.parameters import parse_assignments

    if not os.path.isfile(path):
        raise NoModelError(f"{path}: no such chain spec file")
    return chains.load_chain(path, parse_assignments(params))


def _dataset_spec(chain: Any) -> Any:
    """The job spec of the chain's first dataset step (how its raw data is read), or None."""
    from beam_pipelines.spec import load_spec
    from launchers.chain import DatasetStep

    for step in chain.steps:
        if isinstance(step, DatasetStep):
            return load_spec(step.spec)
    return None


def _names_dataflow(beam_args: Sequence[str]) -> bool:
    for i, arg in enumerate(beam_args):
        if arg == f"--runner={_DATAFLOW}" or (
            arg == "--runner" and i + 1 < len(beam_args) and beam_args[i + 1] == _DATAFLOW
        ):
            return True
    return False


def _dataflow_args(spec: Any, beam_args: Sequence[str], *, dry_run: bool) -> list[str]:
    """Beam arguments for Dataflow: the dataset spec's ``dataflow:`` settings, then flags."""
    from beam_pipelines.spec import JobSpec
    from launchers.dataflow.settings import DataflowSettings, default_job_name, resolve_settings

    settings: DataflowSettings
    settings, rest = resolve_settings(spec.dataflow if spec is not None else None, beam_args)
    args = settings.beam_args()
    if settings.job_name is None:
        name = spec.name if isinstance(spec, JobSpec) else "beamforge"
        args.append(f"--job_name={default_job_name(name.replace('_', '-') + '-predict')}")
    args += rest
    if dry_run:
        args.append("--dry_run=True")
    return args


def _summary(manifest: dict[str, Any], seconds: float, path: str) -> str:
    counts = manifest["counts"]
    read = counts["read"]
    rate = read / seconds if seconds > 0 else 0.0
    out = manifest["predictions"]
    where = out.get("bigquery", {}).get("table") or f"{len(out.get('files', []))} file(s)"
    lines = [
        f"{manifest['pipeline']}: {read:,} rows read in {seconds:.1f} s ({rate:,.0f} rows/s)",
        f"  predicted {counts['total_written']:>9,} rows  {where}",
        f"  rejected  {counts['total_rejected']:>9,} rows",
    ]
    for step, reasons in counts["rejected"].items():
        for reason, n in reasons.items():
            lines.append(f"    {step}: {reason}: {n:,}")
    lines.append(f"  dropped   {counts['total_dropped']:>9,} rows")
    lines.append(f"  manifest  {path}")
    lines.append(f"  errors    {manifest['errors']['path']}")
    return "\n".join(lines)
