"""The ``beamforge`` command line.

    beamforge validate SPEC
    beamforge run SPEC [--input PATH ...] [--output DIR] [--artifact DIR] [--baseline RUN]
                  [Beam options ...]
    beamforge template build|launch ...     (see launchers/cloud_commands.py)
    beamforge jobs wait|cancel|drain JOB ...
    beamforge chain [run] CHAIN.yaml [--target local|gcp]
    beamforge chain status|stop CHAIN.yaml [--target local|gcp]
    beamforge chain predict CHAIN.yaml --instances FILE.json|FILE.csv [--limit N]
    beamforge chain compile CHAIN.yaml --to kfp|airflow [--target local|gcp] -o FILE
    beamforge chain submit CHAIN.yaml --to vertex [--wait] [--once]
    beamforge trigger build CHAIN.yaml -o DIR [--target local|gcp]   (launchers/ship_commands.py)
    beamforge cicd build CHAIN.yaml -o cloudbuild.yaml | cicd validate FILE
    beamforge serve build CHAIN.yaml -o DIR
    beamforge schema infer RUN -o schema.yaml | schema check FILE   (launchers/schema_commands.py)
    beamforge lineage DATASET|MODEL|ENDPOINT|RAW_FILE [--store FILE | --chain CHAIN.yaml]
    beamforge report RUN [--baseline RUN] -o report.html
    beamforge skew RUN --requests DIR|bq://TABLE [-o skew.json]
    beamforge predict CHAIN.yaml --input RAW --output DIR|bq://TABLE [--model DIR] [--key COL]
                      [Beam options ...]          (launchers/predict_commands.py)

Beam pipeline options (``--runner``, ``--direct_num_workers``, ...) pass through to Beam;
the local runner is used when none is named. With ``--runner DataflowRunner`` (or
``--dry-run``) the job goes to Dataflow with the spec's ``dataflow:`` settings.

A user's mistake (the spec, an input, the output, an artifact) is one line on stderr,
``error: <message>``, and exit code 2, wherever it is found: while loading the spec, while
planning, or inside the running pipeline. Exit codes are :class:`ExitCode`; what is
printed (the run summary, error lines, failures found by type) is :mod:`launchers.report`,
what the terminal shows while a run goes is :mod:`launchers.console`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers import (
    cloud_commands,
    lineage_commands,
    predict_commands,
    report_commands,
    schema_commands,
    ship_commands,
    skew_commands,
)
from launchers.console import (
    Heartbeat,
    HeldBeamErrors,
    HeldWorkerStderr,
    restore_signals,
    stop_on_signals,
)
from launchers.report import error, failure_of, format_summary

# Command groups that each add their parsers and run their own commands.
_COMMAND_MODULES: tuple[Any, ...] = (
    ship_commands,
    schema_commands,
    lineage_commands,
    report_commands,
    skew_commands,
    predict_commands,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beamforge", description="Raw data to training datasets with Apache Beam."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a job spec without running it")
    validate.add_argument("spec", help="path to the YAML spec (local or gs://)")
    validate.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a chain spec: a value for one of its parameters (repeatable)",
    )
    run = sub.add_parser(
        "run",
        help="run a job spec; unrecognised --options go to Beam",
        description="Run a job spec. Arguments not listed here are Beam pipeline options.",
    )
    run.add_argument("spec", help="path to the YAML spec (local or gs://)")
    run.add_argument(
        "--input", action="append", help="input file or glob (repeatable); overrides source.path"
    )
    run.add_argument("--output", help="output prefix (local or gs://); overrides output.path")
    run.add_argument("--artifact", help="apply this fitted artifact directory instead of fitting")
    run.add_argument(
        "--baseline",
        metavar="RUN",
        help="the finished run (run or output folder, or 'previous') drift is measured "
        "against; overrides validation.baseline",
    )
    run.add_argument("--quiet", action="store_true", help="print only the summary")
    run.add_argument(
        "--streaming",
        action="store_true",
        help="run the spec's streaming: section (arriving files or Pub/Sub) instead of a batch job",
    )
    cloud_commands.add_run_flags(run)
    cloud_commands.add_parsers(sub)
    _add_chain_parser(sub)
    for module in _COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


CHAIN_ACTIONS = ("run", "status", "stop", "predict", "compile", "submit")


def _add_chain_parser(sub: Any) -> None:
    chain = sub.add_parser(
        "chain",
        help="run a chain (dataset -> training -> gate -> upload -> deploy), or show its status",
        description="beamforge chain [run|status|stop|predict|compile|submit] CHAIN.yaml",
    )
    chain.add_argument("words", nargs="+", metavar="[ACTION] CHAIN", help="action and chain spec")
    chain.add_argument("--target", choices=["local", "gcp"], default="local")
    chain.add_argument(
        "--instances", help="predict: JSON file with a list of instances, or a CSV of raw rows"
    )
    chain.add_argument("--limit", type=int, default=1, help="predict: rows of a CSV to send")
    chain.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for one of the chain's parameters (repeatable)",
    )
    chain.add_argument("--to", help="compile: the orchestrator (kfp or airflow); submit: vertex")
    chain.add_argument(
        "-o", "--output", help="compile: the file to write; submit: keep the compiled pipeline"
    )
    chain.add_argument("--wait", action="store_true", help="submit: wait for the run to end")
    chain.add_argument(
        "--once", action="store_true", help="submit: one run, even if the chain has a schedule"
    )
    chain.add_argument(
        "--timeout", type=float, help="submit --wait: seconds to wait (the run goes on after)"
    )


def _read_instances(path: str, limit: int) -> list[Any]:
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows: list[Any] = []
            for row in reader:
                if len(rows) >= limit:
                    break
                # An empty CSV field is a missing value, as the dataset reader takes it.
                rows.append({k: (v if v != "" else None) for k, v in row.items()})
            return rows
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of instances or {{'instances': [...]}}")
    return data


def chain_command(args: argparse.Namespace) -> int:
    """``beamforge chain ...``; returns the exit code."""
    from launchers import chain as chains
    from transforms.core.config import SpecError

    words = list(args.words)
    action = words.pop(0) if words[0] in CHAIN_ACTIONS else "run"
    if len(words) != 1:
        # e.g. a misspelt action, taken for a second chain file.
        return error(
            f"expected beamforge chain [ACTION] CHAIN.yaml, got {' '.join(args.words)!r}; "
            f"ACTION is one of {', '.join(CHAIN_ACTIONS)}"
        )
    try:
        from launchers.chain.parameters import parse_assignments

        spec = chains.load_chain(words[0], parse_assignments(args.param))
        if action != "compile":
            chains.check_target(spec, "gcp" if action == "submit" else args.target)
    except OSError as exc:
        # The chain file itself cannot be read (missing, a directory, no permission).
        return error(f"{words[0]}: cannot be read: {exc.strerror or exc}")
    except SpecError as exc:
        return error(exc)
    if action == "compile":
        return _chain_compile(args, spec)
    if action == "submit":
        return _chain_submit(args, spec)
    if action == "status":
        print(chains.format_status(spec, args.target, chains.chain_status(spec, args.target)))
        return ExitCode.OK
    if action in ("stop", "predict"):
        if args.target != "local":
            return error(f"chain {action} works on the local target")
        state = chains.load_state(spec.state_path("local"), spec.name, "local")
        deployed = [
            state.steps[s.name].outputs
            for s in spec.steps
            if s.KIND == "deploy" and s.name in state.steps and state.steps[s.name].outputs
        ]
        if not deployed:
            return error(f"{spec.name} has no deployed model on the local target", ExitCode.FAILED)
        from launchers import serving

        server = serving.LocalServer.from_json(deployed[-1]["server"])
        # A canary deployment serves behind a local endpoint: predict_url is its address,
        # and stopping the chain's serving stops the endpoint too.
        endpoint = deployed[-1].get("endpoint")
        if action == "stop":
            stopped = serving.stop_server(server)
            print(f"{'stopped' if stopped else 'not running:'} server pid {server.pid}")
            if endpoint:
                router = serving.LocalServer.from_json(endpoint)
                ended = serving.stop_server(router)
                print(f"{'stopped' if ended else 'not running:'} endpoint pid {router.pid}")
            return ExitCode.OK
        if not args.instances:
            return error("chain predict needs --instances FILE")
        try:
            instances = _read_instances(args.instances, args.limit)
        except (OSError, ValueError) as exc:
            return error(f"{args.instances}: cannot be read as instances: {exc}")
        try:
            predictions = serving.predict(str(deployed[-1]["predict_url"]), instances)
        except serving.ServerError as exc:
            return error(exc, ExitCode.FAILED)
        print(json.dumps({"instances": instances, "predictions": predictions}, indent=2))
        return ExitCode.OK
    logging.getLogger("launchers").setLevel(logging.INFO)

    def show(name: str, what: str) -> None:
        print(f"  {name:<12} {what}", file=sys.stderr, flush=True)

    print(f"chain {spec.name} ({args.target}) from {words[0]}", file=sys.stderr, flush=True)
    try:
        report = chains.run_chain(spec, target=args.target, on_step=show)
    except chains.ChainError as exc:
        return error(exc, ExitCode(exc.exit_code))
    print(chains.format_status(spec, args.target, chains.chain_status(spec, args.target)))
    ran = ", ".join(report.ran) or "nothing"
    print(f"ran: {ran}; reused: {', '.join(report.skipped) or 'nothing'}")
    return ExitCode.OK


def _chain_compile(args: argparse.Namespace, spec: Any) -> int:
    from launchers.chain.compile import ORCHESTRATORS, compile_chain
    from transforms.core.config import SpecError

    if args.to not in ORCHESTRATORS:
        got = f"--to {args.to}" if args.to else "no --to"
        return error(f"chain compile needs --to {' or '.join(ORCHESTRATORS)}; got {got}")
    what = "dags/NAME.py" if args.to == "airflow" else "PIPELINE.yaml"
    if not args.output:
        return error(f"chain compile needs -o {what}")
    problem = _output_problem(args.output, spec.origin, airflow=args.to == "airflow")
    if problem:
        return error(f"-o {args.output}: {problem}")
    try:
        compile_chain(spec, to=args.to, target=args.target, output=args.output)
    except SpecError as exc:
        return error(exc)
    except OSError as exc:
        return error(f"{args.output}: cannot be written: {exc.strerror or exc}")
    kind = "Airflow DAG" if args.to == "airflow" else "kfp pipeline"
    print(
        f"{args.output}: {kind} of chain {spec.name} "
        f"({len(spec.steps)} steps, {args.target} target)"
    )
    return ExitCode.OK


def _output_problem(output: str, chain_file: str, *, airflow: bool) -> str:
    """Why a compiled file cannot go to ``output`` ('' when it can)."""
    if os.path.abspath(output) == os.path.abspath(chain_file) or (
        os.path.exists(output) and os.path.samefile(output, chain_file)
    ):
        return "is the chain file itself; write the compiled file elsewhere"
    if airflow and not output.endswith(".py"):
        return "Airflow loads DAGs only from .py files; name it NAME.py"
    return ""


def _chain_submit(args: argparse.Namespace, spec: Any) -> int:
    import os
    import tempfile

    from launchers.chain.compile import compile_chain
    from launchers.chain.submit import PipelineRunError, submit_chain
    from transforms.core.config import SpecError

    if args.to != "vertex":
        got = f"--to {args.to}" if args.to else "no --to"
        return error(f"chain submit needs --to vertex; got {got}")
    if args.output:
        problem = _output_problem(args.output, spec.origin, airflow=False)
        if problem:
            return error(f"-o {args.output}: {problem}")
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        return error(f"--timeout: got {args.timeout}; expected seconds, more than 0")
    logging.getLogger("launchers").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as folder:
        # The SDK reads the pipeline into the request when the job is built.
        template = args.output or os.path.join(folder, "pipeline.yaml")
        try:
            compile_chain(spec, to="kfp", target="gcp", output=template)
            result = submit_chain(
                spec,
                template_path=template,
                wait=args.wait,
                timeout=args.timeout,
                once=args.once,
                on_state=lambda state: print(f"  {state}", file=sys.stderr, flush=True),
            )
        except SpecError as exc:
            return error(exc)
        except PipelineRunError as exc:
            return error(exc, ExitCode(exc.exit_code))
        except OSError as exc:
            if args.output and exc.filename is not None:
                return error(f"{args.output}: cannot be written: {exc.strerror or exc}")
            return error(f"Vertex AI or Cloud Storage cannot be reached: {exc}", ExitCode.FAILED)
    print(f"{result.kind} {result.name} ({result.state}): {result.url}")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code (an :class:`ExitCode`).

    A user error anywhere in the command is printed as one line, ``error: <message>``, and
    returns its code; any other exception propagates with its traceback.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    takes_extra = args.command in ("run", "predict") or (
        getattr(args, "template_command", None) == "launch"
    )
    if not takes_extra and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "predict":
        args.beam_args = extra  # Beam pipeline options for the scoring job
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    previous = stop_on_signals()
    try:
        code = _command(args, extra)
        # What is still buffered is written here, where a reader gone is handled.
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        # run_job's cleanup (the run's folder, the output's lock) ran on the way out.
        return error("interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return _reader_gone()
    except Exception as exc:
        failure = failure_of(exc)
        if failure is None:
            raise
        return error(failure.message, failure.code)
    finally:
        restore_signals(previous)


def _reader_gone() -> int:
    # `beamforge ... | head`: the reader closed the pipe. Python's recipe: point stdout at
    # /dev/null so the interpreter's last flush does not fail too, and exit quietly.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return ExitCode.FAILED


def _command(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "jobs":
        return cloud_commands.jobs_command(args)
    if args.command == "chain":
        return chain_command(args)
    for module in _COMMAND_MODULES:
        if args.command in module.COMMANDS:
            return int(module.command(args))
    if args.command == "template" and args.template_command == "launch":
        return cloud_commands.template_launch(args, extra)
    from beam_pipelines.spec import load_spec, load_yaml

    if args.command == "validate" and _is_chain(load_yaml(args.spec, what="spec file")):
        from launchers import chain as chains
        from launchers.chain.parameters import parse_assignments

        chain = chains.load_chain(args.spec, parse_assignments(args.param))
        names = ", ".join(step.name for step in chain.steps)
        print(f"{args.spec}: valid chain ({chain.name}: {len(chain.steps)} steps, {names})")
        return ExitCode.OK
    spec = load_spec(args.spec)
    if args.command == "validate":
        steps = len(spec.steps)
        print(
            f"{args.spec}: valid ({spec.name}: {steps} steps, splits {', '.join(spec.split.names)})"
        )
        return ExitCode.OK
    if args.command == "template":
        return cloud_commands.template_build(args, spec)
    if cloud_commands.wants_dataflow(args, extra):
        return cloud_commands.run_on_dataflow(args, spec, extra)
    if args.streaming:
        return _run_streaming(args, spec, extra)

    from beam_pipelines.dataset import run_job

    if not args.quiet:
        logging.getLogger("transforms").setLevel(logging.INFO)
        logging.getLogger("beam_pipelines").setLevel(logging.INFO)
        print(f"running {spec.name} from {args.spec}", file=sys.stderr, flush=True)
    # User errors and failed balances (CountsMismatchError, also from inside the pipeline)
    # are reported by main().
    workers = any("multi_processing" in arg for arg in extra)
    if workers:
        # Each worker's start-up warnings (unparsed launcher options, no persistent
        # directory) are relayed through this logger; its errors still show.
        logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
            logging.ERROR
        )
    with HeldBeamErrors(), HeldWorkerStderr(workers) as stderr, Heartbeat(stderr):
        result = run_job(
            spec,
            output=args.output,
            inputs=args.input,
            artifact_dir=args.artifact,
            beam_args=extra,
            baseline=args.baseline,
        )
    output = result.manifest["run"]["output"]
    if "://" not in output:
        # What the run read and wrote, in the output's ML Metadata store (beamforge lineage).
        from launchers.lineage import STORE_FILE, record_dataset_run

        record_dataset_run(result.manifest, os.path.join(output, STORE_FILE))
    print(format_summary(result.manifest, result.seconds))
    return ExitCode.OK


def _run_streaming(args: argparse.Namespace, spec: Any, extra: Sequence[str]) -> int:
    from beam_pipelines.streaming import (
        check_fresh_output,
        describe,
        run_streaming,
        streaming_spec,
    )

    # As for batch runs, main() reports user errors and CountsMismatchError (summary.json,
    # written before the balance check, holds the counts and the problems). A used output
    # folder is refused before the banner, so the refusal is the only line.
    check_fresh_output(args.output or streaming_spec(spec).output.path)
    if not args.quiet:
        # A streaming run may go on for long before it prints its summary.
        line = describe(streaming_spec(spec), args.output)
        print(f"streaming {spec.name}: {line}", file=sys.stderr, flush=True)
    with HeldBeamErrors():
        summary = run_streaming(
            spec, artifact_dir=args.artifact, output=args.output, beam_args=extra
        )
    print(json.dumps(summary, indent=2, sort_keys=True) if summary else "streaming job submitted")
    return ExitCode.OK


__all__ = ["CHAIN_ACTIONS", "chain_command", "main"]


def _is_chain(data: object) -> bool:
    # A chain spec lists steps and reads no source; a job spec always has a source.
    return isinstance(data, dict) and "steps" in data and "source" not in data


if __name__ == "__main__":
    sys.exit(main())
