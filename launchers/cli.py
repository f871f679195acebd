"""The ``beamforge`` command line.

    beamforge validate SPEC
    beamforge run SPEC [--input PATH ...] [--output DIR] [--artifact DIR] [Beam options ...]
    beamforge template build|launch ...     (see launchers/cloud_commands.py)
    beamforge jobs wait|cancel|drain JOB ...

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
    from launchers import cloud_commands

    cloud_commands.add_run_flags(run)
    cloud_commands.add_parsers(sub)
    return parser


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
    root = manifest["stats"].rsplit("/", 1)[0]
    lines.append(f"  dataset   {root}")
    lines.append(
        f"  artifact  {manifest['artifact']['path']} (sha256 {manifest['artifact']['sha256'][:12]})"
    )
    lines.append(
        f"  errors    {manifest['errors']['path']} ({manifest['errors']['count']:,} records)"
    )
    lines.append(f"  stats     {manifest['stats']}")
    lines.append(f"  manifest  {root}/manifest.json")
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


if __name__ == "__main__":
    sys.exit(main())
