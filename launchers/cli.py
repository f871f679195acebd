"""The ``beamforge`` command line.

    beamforge validate SPEC
    beamforge run SPEC [--input PATH ...] [--output DIR] [--artifact DIR] [Beam options ...]
    beamforge template build|launch ...     (see launchers/cloud_commands.py)
    beamforge jobs wait|cancel|drain JOB ...
    beamforge chain [run] CHAIN.yaml [--target local|gcp]
    beamforge chain status|stop CHAIN.yaml [--target local|gcp]
    beamforge chain predict CHAIN.yaml --instances FILE.json|FILE.csv [--limit N]

Beam pipeline options (``--runner``, ``--direct_num_workers``, ...) pass through to Beam;
the local runner is used when none is named. With ``--runner DataflowRunner`` (or
``--dry-run``) the job goes to Dataflow with the spec's ``dataflow:`` settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beamforge", description="Raw data to training datasets with Apache Beam."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a job spec without running it")
    validate.add_argument("spec", help="path to the YAML spec (local or gs://)")
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
    run.add_argument("--quiet", action="store_true", help="print only the summary")
    run.add_argument(
        "--streaming",
        action="store_true",
        help="run the spec's streaming: section (arriving files or Pub/Sub) instead of a batch job",
    )
    from launchers import cloud_commands

    cloud_commands.add_run_flags(run)
    cloud_commands.add_parsers(sub)
    _add_chain_parser(sub)
    return parser


CHAIN_ACTIONS = ("run", "status", "stop", "predict")


def _add_chain_parser(sub: Any) -> None:
    chain = sub.add_parser(
        "chain",
        help="run a chain (dataset -> training -> gate -> upload -> deploy), or show its status",
        description="beamforge chain [run|status|stop|predict] CHAIN.yaml",
    )
    chain.add_argument("words", nargs="+", metavar="[ACTION] CHAIN", help="action and chain spec")
    chain.add_argument("--target", choices=["local", "gcp"], default="local")
    chain.add_argument(
        "--instances", help="predict: JSON file with a list of instances, or a CSV of raw rows"
    )
    chain.add_argument("--limit", type=int, default=1, help="predict: rows of a CSV to send")


def _read_instances(path: str, limit: int) -> list[Any]:
    import csv
    import json

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
    import json

    from launchers import chain as chains
    from transforms.config import SpecError

    words = list(args.words)
    action = words.pop(0) if words[0] in CHAIN_ACTIONS else "run"
    if len(words) != 1:
        print("error: expected beamforge chain [ACTION] CHAIN.yaml", file=sys.stderr)
        return EXIT_INVALID
    try:
        spec = chains.load_chain(words[0])
        chains.check_target(spec, args.target)
    except (SpecError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if action == "status":
        print(chains.format_status(spec, args.target, chains.chain_status(spec, args.target)))
        return EXIT_OK
    if action in ("stop", "predict"):
        if args.target != "local":
            print(f"error: chain {action} works on the local target", file=sys.stderr)
            return EXIT_INVALID
        state = chains.load_state(spec.state_path("local"), spec.name, "local")
        deployed = [
            state.steps[s.name].outputs
            for s in spec.steps
            if s.KIND == "deploy" and s.name in state.steps and state.steps[s.name].outputs
        ]
        if not deployed:
            print(f"error: {spec.name} has no deployed model on the local target", file=sys.stderr)
            return EXIT_FAILED
        from launchers import serving

        server = serving.LocalServer.from_json(deployed[-1]["server"])
        if action == "stop":
            stopped = serving.stop_server(server)
            print(f"{'stopped' if stopped else 'not running:'} server pid {server.pid}")
            return EXIT_OK
        if not args.instances:
            print("error: chain predict needs --instances FILE", file=sys.stderr)
            return EXIT_INVALID
        try:
            instances = _read_instances(args.instances, args.limit)
            predictions = serving.predict(server.predict_url, instances)
        except (OSError, ValueError, serving.ServerError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(json.dumps({"instances": instances, "predictions": predictions}, indent=2))
        return EXIT_OK
    logging.getLogger("launchers").setLevel(logging.INFO)

    def show(name: str, what: str) -> None:
        print(f"  {name:<12} {what}", file=sys.stderr, flush=True)

    print(f"chain {spec.name} ({args.target}) from {words[0]}", file=sys.stderr, flush=True)
    try:
        report = chains.run_chain(spec, target=args.target, on_step=show)
    except chains.ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(chains.format_status(spec, args.target, chains.chain_status(spec, args.target)))
    ran = ", ".join(report.ran) or "nothing"
    print(f"ran: {ran}; reused: {', '.join(report.skipped) or 'nothing'}")
    return EXIT_OK


class _Heartbeat:
    """Prints elapsed time while a long run is going, so a silent terminal means stuck."""

    def __init__(self, out: TextIO, every: float = 15.0) -> None:
        self._out = out
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._start = time.monotonic()

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            print(
                f"  ... running, {time.monotonic() - self._start:.0f} s elapsed",
                file=self._out,
                flush=True,
            )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def format_summary(manifest: dict[str, Any], seconds: float) -> str:
    """The end-of-run summary: rows per split, rejections by step and reason, paths."""
    counts = manifest["counts"]
    read = counts["read"]
    rate = read / seconds if seconds > 0 else 0.0
    lines = [f"{manifest['pipeline']}: {read:,} rows read in {seconds:.1f} s ({rate:,.0f} rows/s)"]
    for name, split in manifest["splits"].items():
        files = [p for paths in split["files"].values() for p in paths]
        lines.append(f"  {name:<8} {split['rows']:>10,} rows  {len(files)} file(s)")
    lines.append(f"  rejected {counts['total_rejected']:>9,} rows")
    for step, reasons in counts["rejected"].items():
        for reason, n in reasons.items():
            lines.append(f"    {step}: {reason}: {n:,}")
    lines.append(f"  dropped  {counts['total_dropped']:>9,} rows")
    for step, reasons in counts["dropped"].items():
        for reason, n in reasons.items():
            lines.append(f"    {step}: {reason}: {n:,}")
    output = manifest["run"]["output"]
    lines.append(f"  dataset   {output} (run {manifest['run']['id']})")
    lines.append(
        f"  artifact  {manifest['artifact']['path']} (sha256 {manifest['artifact']['sha256'][:12]})"
    )
    lines.append(
        f"  errors    {manifest['errors']['path']} ({manifest['errors']['count']:,} records)"
    )
    lines.append(f"  stats     {manifest['stats']}")
    lines.append(f"  manifest  {output.rstrip('/')}/manifest.json")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    from launchers import cloud_commands
    from transforms.config import SpecError

    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    takes_extra = args.command == "run" or getattr(args, "template_command", None) == "launch"
    if not takes_extra and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "jobs":
        return cloud_commands.jobs_command(args)
    if args.command == "chain":
        return chain_command(args)
    if args.command == "template" and args.template_command == "launch":
        return cloud_commands.template_launch(args, extra)
    from beam_pipelines.spec import load_spec

    try:
        spec = load_spec(args.spec)
    except (SpecError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.command == "validate":
        steps = len(spec.steps)
        print(
            f"{args.spec}: valid ({spec.name}: {steps} steps, splits {', '.join(spec.split.names)})"
        )
        return EXIT_OK
    if args.command == "template":
        return cloud_commands.template_build(args, spec)
    if cloud_commands.wants_dataflow(args, extra):
        return cloud_commands.run_on_dataflow(args, spec, extra)
    if args.streaming:
        return _run_streaming(args, spec, extra)

    from beam_pipelines.dataset import run_job
    from transforms.manifest import CountsMismatchError

    if not args.quiet:
        logging.getLogger("transforms").setLevel(logging.INFO)
        logging.getLogger("beam_pipelines").setLevel(logging.INFO)
        print(f"running {spec.name} from {args.spec}", file=sys.stderr, flush=True)
    try:
        with _Heartbeat(sys.stderr):
            result = run_job(
                spec,
                output=args.output,
                inputs=args.input,
                artifact_dir=args.artifact,
                beam_args=extra,
            )
    except (SpecError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except CountsMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        # Beam wraps worker exceptions; the balance check is raised inside the pipeline.
        if "CountsMismatchError" in str(exc):
            print(f"error: {str(exc).splitlines()[-1]}", file=sys.stderr)
            return EXIT_FAILED
        raise
    print(format_summary(result.manifest, result.seconds))
    return EXIT_OK


def _run_streaming(args: argparse.Namespace, spec: Any, extra: Sequence[str]) -> int:
    import json

    from beam_pipelines.streaming import describe, run_streaming, streaming_spec
    from transforms.config import SpecError
    from transforms.manifest import CountsMismatchError

    try:
        if not args.quiet:
            # A streaming run may go on for long before it prints its summary.
            line = describe(streaming_spec(spec), args.output)
            print(f"streaming {spec.name}: {line}", file=sys.stderr, flush=True)
        summary = run_streaming(
            spec, artifact_dir=args.artifact, output=args.output, beam_args=extra
        )
    except (SpecError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except CountsMismatchError as exc:
        # summary.json, written before the check, holds the counts and the problems.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(summary, indent=2, sort_keys=True) if summary else "streaming job submitted")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
