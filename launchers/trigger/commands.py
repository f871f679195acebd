"""The command lines that deploy the function to Google Cloud or serve it on this machine."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence

from launchers.trigger.runtime import FINALIZED
from launchers.trigger.spec import Trigger

ENTRY_POINT = "on_object_finalized"
# gcloud splits --set-env-vars on commas; values holding one need another delimiter
# (gcloud's ``^DELIM^`` prefix, see ``gcloud topic escaping``).
_DELIMITERS = (",", "|", ";", "@", "#")


def env_flag(env: Mapping[str, str]) -> str | None:
    """``--set-env-vars=...`` for ``env`` (None if empty).

    Raises:
        ValueError: if every delimiter gcloud could use occurs in the values.
    """
    if not env:
        return None
    text = "".join(f"{k}={v}" for k, v in env.items())
    for delimiter in _DELIMITERS:
        if delimiter not in text:
            joined = delimiter.join(f"{k}={v}" for k, v in env.items())
            escape = "" if delimiter == "," else f"^{delimiter}^"
            return f"--set-env-vars={escape}{joined}"
    raise ValueError(f"the values hold every delimiter gcloud accepts ({' '.join(_DELIMITERS)})")


def deploy_command(trigger: Trigger, project: str) -> list[str]:
    """``gcloud functions deploy`` with the bucket trigger, region, identity and env."""
    function = trigger.function
    assert function.name is not None and function.region is not None
    command = [
        "gcloud",
        "functions",
        "deploy",
        function.name,
        "--gen2",
        f"--project={project}",
        f"--region={function.region}",
        f"--runtime={function.runtime}",
        "--source=.",
        f"--entry-point={ENTRY_POINT}",
        f"--trigger-event-filters=type={FINALIZED}",
        f"--trigger-event-filters=bucket={trigger.bucket}",
        f"--memory={function.memory}",
        f"--timeout={function.timeout}s",
        f"--max-instances={function.max_instances}",
    ]
    if function.retry:
        command.append("--retry")
    if function.service_account:
        command.append(f"--service-account={function.service_account}")
    flag = env_flag(function.env)
    if flag:
        command.append(flag)
    return command


def serve_command(program: str | None = None, port: str = "${PORT:-8080}") -> list[str]:
    """functions-framework serving the function on 127.0.0.1 (the local target's way).

    Args:
        program: The functions-framework to run: default, the one installed beside the
            Python that builds the function (``FUNCTIONS_FRAMEWORK`` overrides it where the
            script runs), not whichever ``PATH`` finds first.
        port: The port (a shell expansion with its default).
    """
    if program is None:
        installed = os.path.join(os.path.dirname(sys.executable), "functions-framework")
        program = f"${{FUNCTIONS_FRAMEWORK:-{_double_quoted(installed)}}}"
    return [
        program,
        f"--target={ENTRY_POINT}",
        "--signature-type=cloudevent",
        "--host=127.0.0.1",
        f"--port={port}",
    ]


def _double_quoted(text: str) -> str:
    # What a POSIX shell reads literally between double quotes.
    return "".join(f"\\{c}" if c in '"\\$`' else c for c in text)


def shell_script(comment: str, command: Sequence[str], *, expand: Sequence[int] = ()) -> str:
    """A POSIX shell script running ``command`` from the script's own folder.

    Args:
        comment: What the script does (one ``#`` line each).
        command: The command line; every word is quoted.
        expand: Indexes of words put in double quotes instead, expanded by the shell (each
            holds a ``${VAR:-default}``, its default already escaped).
    """
    words = [shlex.quote(w) for w in command]
    for index in expand:
        words[index] = f'"{command[index]}"'
    lines = "".join(f"# {line}\n" for line in comment.splitlines())
    body = " \\\n  ".join(words)
    return f'#!/bin/sh\n{lines}set -eu\ncd "$(dirname "$0")"\nexec {body}\n'


__all__ = ["ENTRY_POINT", "deploy_command", "env_flag", "serve_command", "shell_script"]
