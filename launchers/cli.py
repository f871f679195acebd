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

A user's mistake (the spec, an input, the output, an artifact) is one line on stderr,
``error: <message>``, and exit code 2, wherever it is found: while loading the spec, while
planning, or inside the running pipeline. Exit codes are :class:`ExitCode`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TextIO

from launchers.exit_codes import ExitCode


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
    from transforms.core.config import SpecError

    words = list(args.words)
    action = words.pop(0) if words[0] in CHAIN_ACTIONS else "run"
    if len(words) != 1:
        print("error: expected beamforge chain [ACTION] CHAIN.yaml", file=sys.stderr)
        return ExitCode.USER_ERROR
    try:
        spec = chains.load_chain(words[0])
        chains.check_target(spec, args.target)
    except OSError as exc:
        # The chain file itself cannot be read (missing, a directory, no permission).
        print(f"error: {words[0]}: cannot be read: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USER_ERROR
    if action == "status":
        print(chains.format_status(spec, args.target, chains.chain_status(spec, args.target)))
        return ExitCode.OK
    if action in ("stop", "predict"):
        if args.target != "local":
            print(f"error: chain {action} works on the local target", file=sys.stderr)
            return ExitCode.USER_ERROR
        state = chains.load_state(spec.state_path("local"), spec.name, "local")
        deployed = [
            state.steps[s.name].outputs
            for s in spec.steps
            if s.KIND == "deploy" and s.name in state.steps and state.steps[s.name].outputs
        ]
        if not deployed:
            print(f"error: {spec.name} has no deployed model on the local target", file=sys.stderr)
            return ExitCode.FAILED
        from launchers import serving

        server = serving.LocalServer.from_json(deployed[-1]["server"])
        if action == "stop":
            stopped = serving.stop_server(server)
            print(f"{'stopped' if stopped else 'not running:'} server pid {server.pid}")
            return ExitCode.OK
        if not args.instances:
            print("error: chain predict needs --instances FILE", file=sys.stderr)
            return ExitCode.USER_ERROR
        try:
            instances = _read_instances(args.instances, args.limit)
        except (OSError, ValueError) as exc:
            print(f"error: {args.instances}: cannot be read as instances: {exc}", file=sys.stderr)
            return ExitCode.USER_ERROR
        try:
            predictions = serving.predict(server.predict_url, instances)
        except serving.ServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return ExitCode.FAILED
        print(json.dumps({"instances": instances, "predictions": predictions}, indent=2))
        return ExitCode.OK
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
    return ExitCode.OK


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


# ---------------------------------------------------------------------------------------------
# Failures: typed errors, found wherever Beam put them


@dataclasses.dataclass(frozen=True)
class Failure:
    """What the CLI prints and returns for an exception it recognises.

    Attributes:
        code: The exit code.
        message: One line, printed as ``error: <message>``.
    """

    code: ExitCode
    message: str


def _typed_codes() -> dict[type[BaseException], ExitCode]:
    # Imported here: the CLI's own start-up stays light. A new user-error type only has to
    # subclass InputError (or one of these) to be reported as one.
    from transforms.core.artifact import ArtifactError
    from transforms.core.config import SpecError
    from transforms.core.errors import InputError
    from transforms.core.manifest import CountsMismatchError

    return {
        InputError: ExitCode.USER_ERROR,
        SpecError: ExitCode.USER_ERROR,
        ArtifactError: ExitCode.USER_ERROR,
        CountsMismatchError: ExitCode.FAILED,
    }


def _code_for(cls: type[BaseException]) -> ExitCode | None:
    for base, code in _typed_codes().items():
        if issubclass(cls, base):
            return code
    return None


# Beam appends this to the message of an exception raised inside a DoFn.
_STEP_SUFFIX = re.compile(r" \[while running '[^\n]*'\]$")


def _one_line(text: str) -> str:
    return " ".join(_STEP_SUFFIX.sub("", text.strip()).split())


def _in_pipeline(exc: BaseException) -> bool:
    """Whether Beam re-raised ``exc`` on its way out of a DoFn.

    On the in-process FnApiRunner, ``DoFnRunner._reraise_augmented`` raises a copy of an
    exception raised inside a DoFn, its message suffixed with ``[while running 'step']``:
    of the same type when the type can be built from one message, else a RuntimeError. The
    original is the copy's ``__context__``; the copy carries ``_tagged_with_step``.
    """
    return bool(getattr(exc, "_tagged_with_step", False))


def _typed_failure(exc: BaseException) -> Failure | None:
    # Walk from Beam's copies and wrappers to the exception the code raised; stop at
    # anything else, so a bug raised while handling a user error stays a bug.
    found: Failure | None = None
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = _code_for(type(current))
        if code is not None:
            found = Failure(code, _one_line(str(current)))
            if not _in_pipeline(current):
                return found  # the original
        elif not (type(current) is RuntimeError and _in_pipeline(current)):
            break
        current = current.__cause__ or current.__context__
    return found


# An exception line of a formatted traceback: ``module.Type: message`` at column 0.
_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*))?")
_OWN_PACKAGES = ("transforms", "beam_pipelines", "launchers")


def _resolve(name: str) -> type[BaseException] | None:
    """The exception class a traceback names, if it is one of this project's."""
    parts = name.split(".")
    if parts[0] not in _OWN_PACKAGES:
        return None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
        return None
    return None


def _remote_failure(exc: BaseException) -> Failure | None:
    """A typed error raised in another process, from the traceback Beam sends back.

    With ``--direct_running_mode=multi_processing`` a DoFn runs in a worker process and the
    FnApiRunner raises ``RuntimeError(traceback text)`` in the launcher: the exception object
    is gone and only its formatted traceback crosses the process boundary. The exception
    lines of that text (``transforms.core.errors.InputError: message``, outermost last) are
    walked as :func:`_typed_failure` walks ``__context__``: the type each names is resolved
    to a class of this project and looked up by type, never by message.
    """
    if type(exc) is not RuntimeError or not exc.args or not isinstance(exc.args[0], str):
        return None
    text = exc.args[0]
    if "Traceback (most recent call last):" not in text:
        return None
    lines = [
        m.groups()
        for line in text.splitlines()
        if line and not line[0].isspace() and (m := _EXCEPTION_LINE.fullmatch(line))
    ]
    found: Failure | None = None
    for name, message in reversed(lines):
        tagged = bool(_STEP_SUFFIX.search(message or ""))
        cls = _resolve(name)
        code = _code_for(cls) if cls is not None else None
        if code is not None:
            found = Failure(code, _one_line(message or name))
            if not tagged:
                return found
        elif not (name == "RuntimeError" and tagged):
            break
    return found


def failure_of(exc: BaseException) -> Failure | None:
    """The failure the CLI reports for ``exc``, or None for a code error (re-raised).

    Recognised, wherever they were raised (before the run, inside a DoFn in this process or
    in a worker process): :class:`transforms.core.errors.InputError` and its subclasses,
    :class:`transforms.core.config.SpecError`, :class:`transforms.core.artifact.ArtifactError` (exit
    code 2) and :class:`transforms.core.manifest.CountsMismatchError` (exit code 1). A plain
    ValueError raised before the pipeline runs (planning checks that do not raise a typed
    error yet) is taken as a user error too; raised inside the pipeline it is a bug.
    """
    failure = _typed_failure(exc) or _remote_failure(exc)
    if failure is not None:
        return failure
    if isinstance(exc, ValueError) and not _in_pipeline(exc):
        return Failure(ExitCode.USER_ERROR, _one_line(str(exc)))
    return None


class _HeldBeamErrors(logging.Filter):
    """Holds Beam's error log records while a run goes, until its outcome is known.

    Beam logs an exception raised inside a DoFn, with its traceback, before the run fails
    with it. For a user error the CLI prints one line instead, so the records are dropped;
    for anything else (success, a bug) they are emitted as they would have been.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []
        self._handlers: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("apache_beam") and record.levelno >= logging.ERROR:
            self.held.append(record)
            return False
        return True

    def __enter__(self) -> _HeldBeamErrors:
        self._handlers = list(logging.getLogger().handlers)
        for handler in self._handlers:
            handler.addFilter(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        user_error = exc is not None and failure_of(exc) is not None
        if not user_error:
            for record in self.held:
                for handler in self._handlers:
                    if record.levelno >= handler.level:
                        handler.handle(record)
        self.held.clear()


class _HeldWorkerStderr:
    """Holds what worker processes write to stderr while a run goes (multi-process runs).

    Beam's SDK workers print the traceback of an exception raised in a DoFn straight to
    their stderr, which they inherit from this process. While the run goes, file descriptor
    2 points at a temporary file (this process's own messages still reach the terminal);
    afterwards the held text is written out, unless the run failed with a user error, which
    the CLI reports in one line.
    """

    # Where this process's own messages go while fd 2 is held (a signal handler writes here).
    terminal_fd = 2

    def __init__(self, active: bool) -> None:
        self._active = active
        self._saved = -1
        self._held: Any = None
        self._stream: TextIO | None = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []

    def __enter__(self) -> TextIO:
        if not self._active:
            return sys.stderr
        import tempfile

        sys.stderr.flush()
        self._held = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._held.fileno(), 2)
        _HeldWorkerStderr.terminal_fd = self._saved
        self._stream = os.fdopen(os.dup(self._saved), "w", buffering=1)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                self._handlers.append((handler, handler.setStream(self._stream)))
        return self._stream

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._active:
            return
        for handler, stream in self._handlers:
            handler.setStream(stream)
        assert self._stream is not None
        self._stream.close()
        os.dup2(self._saved, 2)
        _HeldWorkerStderr.terminal_fd = 2
        os.close(self._saved)
        self._held.seek(0)
        text = self._held.read().decode("utf-8", "replace")
        self._held.close()
        if text and not (exc is not None and failure_of(exc) is not None):
            sys.stderr.write(text)
            sys.stderr.flush()


def _stop_on_signals() -> dict[int, Any]:
    """Makes Ctrl-C and SIGTERM (what schedulers and Kubernetes send first) stop the command
    cleanly: a run's folder is deleted and the output's lock released
    (:func:`transforms.io.commit.abort_held`), one line is printed and the process exits 130.

    Exiting from the handler, rather than raising into whatever frame is running, is what
    makes this reliable: the local runner's code would catch or re-wrap an exception raised
    at an arbitrary point.

    Returns:
        The handlers replaced, to put back.
    """
    import signal

    def stop(signum: int, frame: Any) -> None:
        from transforms.io.commit import abort_held

        abort_held()
        line = f"error: stopped by {signal.Signals(signum).name}\n".encode()
        os.write(_HeldWorkerStderr.terminal_fd, line)
        os._exit(ExitCode.INTERRUPTED)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code (an :class:`ExitCode`).

    A user error anywhere in the command is printed as one line, ``error: <message>``, and
    returns its code; any other exception propagates with its traceback.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    takes_extra = args.command == "run" or getattr(args, "template_command", None) == "launch"
    if not takes_extra and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    previous = _stop_on_signals()
    try:
        return _command(args, extra)
    except KeyboardInterrupt:
        # run_job's cleanup (the run's folder, the output's lock) ran on the way out.
        print("error: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        failure = failure_of(exc)
        if failure is None:
            raise
        print(f"error: {failure.message}", file=sys.stderr)
        return failure.code
    finally:
        import signal

        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _command(args: argparse.Namespace, extra: list[str]) -> int:
    from launchers import cloud_commands

    if args.command == "jobs":
        return cloud_commands.jobs_command(args)
    if args.command == "chain":
        return chain_command(args)
    if args.command == "template" and args.template_command == "launch":
        return cloud_commands.template_launch(args, extra)
    from beam_pipelines.spec import load_spec

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
    with _HeldBeamErrors(), _HeldWorkerStderr(workers) as stderr, _Heartbeat(stderr):
        result = run_job(
            spec,
            output=args.output,
            inputs=args.input,
            artifact_dir=args.artifact,
            beam_args=extra,
        )
    print(format_summary(result.manifest, result.seconds))
    return ExitCode.OK


def _run_streaming(args: argparse.Namespace, spec: Any, extra: Sequence[str]) -> int:
    import json

    from beam_pipelines.streaming import describe, run_streaming, streaming_spec

    # As for batch runs, main() reports user errors and CountsMismatchError (summary.json,
    # written before the balance check, holds the counts and the problems).
    if not args.quiet:
        # A streaming run may go on for long before it prints its summary.
        line = describe(streaming_spec(spec), args.output)
        print(f"streaming {spec.name}: {line}", file=sys.stderr, flush=True)
    with _HeldBeamErrors():
        summary = run_streaming(
            spec, artifact_dir=args.artifact, output=args.output, beam_args=extra
        )
    print(json.dumps(summary, indent=2, sort_keys=True) if summary else "streaming job submitted")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
