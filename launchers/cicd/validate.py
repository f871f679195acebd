"""Offline checks of a Cloud Build config (``cloudbuild.yaml``).

No local Cloud Build runner exists, so a config is checked here as far as the service's own
schema and its substitution rules allow, before it is written or pushed:

- it parses into Cloud Build's own ``Build`` message (unknown fields, bad enum values and
  durations that are not ``"<seconds>s"`` are refused);
- user substitutions are named ``_[A-Z0-9_]+``;
- every ``$VAR`` / ``${VAR}`` is a Cloud Build built-in or declared under ``substitutions``
  (``$$`` is an escaped dollar, so a shell variable is written ``$$VAR`` or ``$${VAR}``):
  triggered builds always run with ``substitutionOption: ALLOW_LOOSE``, where an undeclared
  variable silently becomes the empty string;
- every step names its image; step ids are unique and every ``waitFor`` names an earlier step's id (or ``-``: start at
  once).

What stays unchecked: images, commands and permissions, which only a real build exercises.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

# https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values
BUILTINS = frozenset(
    {
        # every build
        "PROJECT_ID",
        "BUILD_ID",
        "PROJECT_NUMBER",
        "LOCATION",
        # builds started by triggers
        "TRIGGER_NAME",
        "COMMIT_SHA",
        "REVISION_ID",
        "SHORT_SHA",
        "REPO_NAME",
        "REPO_FULL_NAME",
        "BRANCH_NAME",
        "TAG_NAME",
        "REF_NAME",
        "TRIGGER_BUILD_CONFIG_PATH",
        "SERVICE_ACCOUNT_EMAIL",
        "SERVICE_ACCOUNT",
        # GitHub pull request triggers
        "_HEAD_BRANCH",
        "_BASE_BRANCH",
        "_HEAD_REPO_URL",
        "_PR_NUMBER",
    }
)
USER_SUBSTITUTION = re.compile(r"_[A-Z0-9_]+")
# `$$` first: it escapes the dollar, so `$${HOME}` and `$$HOME` reference nothing.
_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CloudBuildConfigError(ValueError):
    """A Cloud Build config breaks a rule Cloud Build enforces (or would silently ignore).

    Attributes:
        where: The field, e.g. ``steps[3] (id: test).waitFor[0]`` or ``timeout``.
        problem: What is wrong and what would be valid.
        source: The file, when the config was read from one.
    """

    def __init__(self, where: str, problem: str, *, source: str | None = None) -> None:
        self.where = where
        self.problem = problem
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{where or '<build>'}: {problem}")


def validate_cloudbuild(data_or_path: Mapping[str, Any] | str | os.PathLike[str]) -> None:
    """Checks a Cloud Build config offline (see the module docstring for the rules).

    Args:
        data_or_path: The config as a mapping (as YAML loads it), or the path of a
            ``cloudbuild.yaml``.

    Raises:
        CloudBuildConfigError: naming the step and field of the first broken rule.
        OSError: if the file cannot be read.
    """
    source = None
    if isinstance(data_or_path, str | os.PathLike):
        source = os.fspath(data_or_path)
        with open(source, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as exc:
                raise CloudBuildConfigError("", f"not valid YAML: {exc}", source=source) from None
    else:
        data = data_or_path
    try:
        _check(data)
    except CloudBuildConfigError as exc:
        if source is None:
            raise
        raise CloudBuildConfigError(exc.where, exc.problem, source=source) from None


def _check(data: Any) -> None:
    if not isinstance(data, Mapping):
        raise CloudBuildConfigError("", f"got {type(data).__name__}; expected a mapping")
    _parse_message(data)
    steps = data.get("steps") or []
    names = _step_names(steps)
    substitutions = data.get("substitutions") or {}
    for key in substitutions:
        if not USER_SUBSTITUTION.fullmatch(str(key)):
            raise CloudBuildConfigError(
                f"substitutions.{key}",
                "user substitutions start with _ and hold only A-Z, 0-9 and _ "
                f"(_[A-Z0-9_]+), e.g. _{_upper(str(key))}",
            )
    ids: dict[str, int] = {}
    for i, step in enumerate(steps):
        if not step.get("name"):
            raise CloudBuildConfigError(
                f"{names[i]}.name", "every step needs name (the image it runs in)"
            )
        step_id = step.get("id")
        if step_id is not None and step_id in ids:
            raise CloudBuildConfigError(
                f"{names[i]}.id", f"{step_id!r} is also the id of steps[{ids[step_id]}]"
            )
        for j, wait in enumerate(step.get("waitFor") or []):
            if wait != "-" and wait not in ids:
                raise CloudBuildConfigError(
                    f"{names[i]}.waitFor[{j}]",
                    f"{wait!r} is not the id of an earlier step; earlier ids: "
                    f"{', '.join(ids) or 'none'} ('-' starts the step at once)",
                )
        if step_id is not None:
            ids[step_id] = i
    declared = set(substitutions)
    for where, text in _strings(data, names):
        try:
            found = list(references(text))
        except CloudBuildConfigError as exc:
            raise CloudBuildConfigError(where, exc.problem) from None
        for name in found:
            if name in BUILTINS or name in declared:
                continue
            hint = (
                "declare it under substitutions"
                if USER_SUBSTITUTION.fullmatch(name)
                else f"a shell variable is written $${name}"
            )
            raise CloudBuildConfigError(
                where,
                f"${name} is neither a Cloud Build built-in substitution nor declared in "
                f"substitutions (declared: {', '.join(sorted(declared)) or 'none'}); {hint}",
            )


def references(text: str) -> Iterator[str]:
    """The substitution names ``text`` references (``$$`` escapes are skipped).

    Raises:
        CloudBuildConfigError: for a ``${...}`` that does not start with a name.
    """
    for match in _REFERENCE.finditer(text):
        escaped, braced, bare = match.groups()
        if escaped:
            continue
        if bare is not None:
            yield bare
            continue
        # Dynamic substitutions allow bash-style ${VAR:0:7}: the name comes first.
        name = _NAME.match(braced or "")
        if name is None:
            raise CloudBuildConfigError("", f"{match.group(0)!r} names no substitution")
        yield name.group(0)


def _parse_message(data: Mapping[str, Any]) -> None:
    from google.cloud.devtools import cloudbuild_v1
    from google.protobuf import json_format

    try:
        json_format.ParseDict(dict(data), cloudbuild_v1.Build.pb(cloudbuild_v1.Build()))
    except json_format.ParseError as exc:
        where, problem = _explain(str(exc))
        steps = data.get("steps")
        names = _step_names(steps) if isinstance(steps, list) else []
        step = re.match(r"steps\[(\d+)\]", where)
        if step and int(step.group(1)) < len(names):
            where = names[int(step.group(1))] + where[step.end() :]
        raise CloudBuildConfigError(where, problem) from None


def _explain(message: str) -> tuple[str, str]:
    """The field and the innermost problem of a ``json_format.ParseError`` message."""
    first = message.splitlines()[0]
    while True:
        nested = re.match(r"Failed to parse \w+ field: (.*)", first)
        if nested is None:
            break
        first = nested.group(1)
    unknown = re.match(r'Message type "([\w.]+)" has no field named "(\w+)" at "([^"]+)"', first)
    if unknown:
        message_type, field, at = unknown.groups()
        valid = re.search(r"Available Fields\(except extensions\): \"\[(.*)\]\"", message)
        fields = valid.group(1).replace("'", "") if valid else ""
        return (
            _field_path(f"{at}.{field}"),
            f"unknown field {field!r} of {message_type.rsplit('.', 1)[-1]}; valid fields: {fields}",
        )
    located = re.match(r"(.*?)\.? at \"?([\w.\[\]]+?)\"?\.*$", first)
    if located:
        problem, at = located.groups()
        duration = re.match(r'Duration must end with letter "s": (.*)', problem)
        if duration:
            problem = f"{duration.group(1)!r} is not a duration; write seconds, e.g. '3600s'"
        return _field_path(at), problem
    return "", first


def _field_path(at: str) -> str:
    return at.removeprefix("Build").lstrip(".")


def _step_names(steps: Any) -> list[str]:
    """``steps[i] (id: ID)`` for each step, as errors name them."""
    if not isinstance(steps, list):
        return []
    names = []
    for i, step in enumerate(steps):
        step_id = step.get("id") if isinstance(step, Mapping) else None
        names.append(f"steps[{i}] (id: {step_id})" if step_id else f"steps[{i}]")
    return names


def _strings(value: Any, names: list[str], path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in the config with its field path; substitution keys are names, not text."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, names, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            where = names[i] if path == "steps" and i < len(names) else f"{path}[{i}]"
            yield from _strings(item, names, where)


def _upper(key: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_") or "NAME"
