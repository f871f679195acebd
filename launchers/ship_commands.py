"""``beamforge trigger|cicd|serve``: what ships a chain around the pipeline itself.

- ``beamforge trigger build CHAIN.yaml -o DIR [--target local|gcp]``: the Cloud Function that
  starts the chain on new objects in a bucket (:mod:`launchers.trigger`);
- ``beamforge cicd build CHAIN.yaml -o cloudbuild.yaml`` and ``beamforge cicd validate FILE``:
  the Cloud Build config that tests and ships every commit (:mod:`launchers.cicd`);
- ``beamforge serve build CHAIN.yaml -o DIR``: the serving image's build context and its
  Kubernetes manifests (:mod:`launchers.gke`).

Each reads its own section of the chain spec and writes nothing when it finds a problem.
"""

from __future__ import annotations

import argparse
from typing import Any

from beam_pipelines.exit_codes import ExitCode
from launchers.report import error

COMMANDS = ("trigger", "cicd", "serve")


def add_parsers(sub: Any) -> None:
    """Adds the trigger, cicd and serve subcommands to ``beamforge``'s parser."""
    trigger = sub.add_parser("trigger", help="the Cloud Function that starts a chain on new data")
    trigger_sub = trigger.add_subparsers(dest="trigger_command", required=True)
    build = trigger_sub.add_parser("build", help="write the function's deployable folder")
    _chain_arguments(build, "DIR", "the function's folder: new, empty or an earlier build's")
    build.add_argument(
        "--target",
        choices=["local", "gcp"],
        default="gcp",
        help="gcp: the function submits the compiled pipeline to Vertex AI Pipelines and "
        "deploy.sh deploys it; local: it runs beamforge chain in this project's Python "
        "(default: %(default)s)",
    )

    cicd = sub.add_parser("cicd", help="the chain's Cloud Build config: write it or check one")
    cicd_sub = cicd.add_subparsers(dest="cicd_command", required=True)
    _chain_arguments(
        cicd_sub.add_parser("build", help="write cloudbuild.yaml"), "FILE", "cloudbuild.yaml"
    )
    check = cicd_sub.add_parser("validate", help="check a Cloud Build config offline")
    check.add_argument("file", help="the cloudbuild.yaml to check")

    serve = sub.add_parser("serve", help="the prediction server as a container for GKE/Vertex AI")
    serve_sub = serve.add_subparsers(dest="serve_command", required=True)
    _chain_arguments(
        serve_sub.add_parser("build", help="write the image's build context and manifests"),
        "DIR",
        "the build folder",
    )


def _chain_arguments(parser: argparse.ArgumentParser, metavar: str, what: str) -> None:
    parser.add_argument("chain", help="the chain spec (YAML)")
    parser.add_argument("-o", "--output", required=True, metavar=metavar, help=what)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for one of the chain's parameters (repeatable)",
    )


def command(args: argparse.Namespace) -> int:
    """Runs ``beamforge trigger|cicd|serve ...``; returns the exit code."""
    from launchers.cicd import CloudBuildConfigError
    from transforms.core.config import SpecError

    try:
        if args.command == "cicd" and args.cicd_command == "validate":
            from launchers.cicd import validate_cloudbuild

            validate_cloudbuild(args.file)
            print(f"{args.file}: valid Cloud Build config")
            return ExitCode.OK
        return _build(args)
    except (SpecError, CloudBuildConfigError) as exc:
        return error(exc)
    except BrokenPipeError:
        raise  # the reader went away: the CLI ends quietly
    except OSError as exc:
        name = exc.filename or getattr(args, "output", None) or getattr(args, "file", "")
        return error(f"{name}: {exc.strerror or exc}")


def _build(args: argparse.Namespace) -> int:
    from launchers.chain import load_chain
    from launchers.chain.parameters import parse_assignments

    spec = load_chain(args.chain, parse_assignments(args.param))
    if args.command == "trigger":
        from launchers.trigger import build_trigger

        written = build_trigger(spec, output=args.output, target=args.target)
        print(
            f"{args.output}: Cloud Function of chain {spec.name} ({args.target} target, "
            f"{len(written)} files)"
        )
    elif args.command == "cicd":
        from launchers.cicd import build_cloudbuild

        build_cloudbuild(spec, output=args.output)
        print(f"{args.output}: Cloud Build config of chain {spec.name}")
    else:
        from launchers.gke import build_serving

        written = build_serving(spec, output=args.output)
        print(
            f"{args.output}: serving image and Kubernetes manifests of chain {spec.name} "
            f"({len(written)} files)"
        )
    return ExitCode.OK
