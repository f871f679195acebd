"""Offline checks of a Cloud Build config (``cloudbuild.yaml``).

No local Cloud Build runner exists, so a config is checked here as far as the service's own
schema and its substitution rules allow, before it is written or pushed:

- it is UTF-8 YAML with no key given twice (YAML loaders keep the last one silently);
- it parses into Cloud Build's own ``Build`` message (unknown fields, bad enum values,
  durations that are not ``"<seconds>s"`` and numbers where text is expected are refused);
- it has at least one step, and a timeout of at most 24 hours (Cloud Build's limits);
- user substitutions are named ``_[A-Z0-9_]+``;
- every ``$VAR`` / ``${VAR}`` is a Cloud Build built-in or declared under ``substitutions``
  (``$$`` is an escaped dollar, so a shell variable is written ``$$VAR`` or ``$${VAR}``):
  triggered builds always run with ``substitutionOption: ALLOW_LOOSE``, where an undeclared
  variable silently becomes the empty string;
- every declared substitution is used (unless ``options.substitutionOption`` is
  ``ALLOW_LOOSE``): ``gcloud builds submit`` checks with ``MUST_MATCH``, which fails the build
  on one that is not;
- every step names its image; step ids are unique and every ``waitFor`` names an earlier step's id (or ``-``: start at
  once).

What stays unchecked: images, commands and permissions, which only a real build exercises.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

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
# Cloud Build's longest build.
MAX_TIMEOUT_SECONDS = 24 * 3600
# Fields of text (or lists of text) where YAML readily gives a number instead: 8080, 1.0, yes.
_STEP_TEXT = ("name", "id", "entrypoint", "dir", "script", "timeout")
_STEP_TEXTS = ("args", "env", "waitFor", "secretEnv")


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
        from beam_pipelines.spec import parse_yaml
        from transforms.core.config import SpecError

        source = os.fspath(data_or_path)
        with open(source, "rb") as f:
            raw = f.read()
        try:
            data = parse_yaml(raw.decode("utf-8"), source=source)
        except UnicodeDecodeError as exc:
            raise CloudBuildConfigError(
                "", f"is not UTF-8 text (byte {exc.start})", source=source
            ) from None
        except SpecError as exc:
            raise CloudBuildConfigError("", exc.problem, source=source) from None
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
    _check_keys(data, _step_names(data.get("steps")))
    _parse_message(data)
    steps = data.get("steps") or []
    names = _step_names(steps)
    if not steps:
        raise CloudBuildConfigError("steps", "a build needs at least one step")
    timeout = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(data.get("timeout", "0s")))
    if timeout and float(timeout.group(1)) > MAX_TIMEOUT_SECONDS:
        raise CloudBuildConfigError(
            "timeout",
            f"{data['timeout']!r} is over Cloud Build's limit of 24 hours "
            f"('{MAX_TIMEOUT_SECONDS}s')",
        )
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
    used: set[str] = set()
    for where, text in _strings(data, names):
        try:
            found = list(references(text))
        except CloudBuildConfigError as exc:
            raise CloudBuildConfigError(where, exc.problem) from None
        used.update(found)
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
    options = data.get("options") or {}
    if options.get("substitutionOption") != "ALLOW_LOOSE":
        for key in substitutions:
            if key not in used:
                raise CloudBuildConfigError(
                    f"substitutions.{key}",
                    "declared but never used; gcloud builds submit checks substitutions with "
                    "MUST_MATCH and fails the build on it (remove it, or set "
                    "options.substitutionOption: ALLOW_LOOSE)",
                )


def _check_keys(data: Any, names: list[str], path: str = "") -> None:
    """Keys are text, and so are the values of text fields (YAML makes 8080 a number)."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise CloudBuildConfigError(
                    path, f"the key {key!r} is not text ({type(key).__name__}); quote it"
                )
            if path == "substitutions" or (path.startswith("steps[") and key in _STEP_TEXT):
                _check_text(value, where)
            elif (key in _STEP_TEXTS and path.startswith("steps[")) or (
                not path and key in ("images", "tags")
            ):
                for i, item in enumerate(value if isinstance(value, list) else []):
                    _check_text(item, f"{where}[{i}]")
            _check_keys(value, names, where)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            where = names[i] if path == "steps" and i < len(names) else f"{path}[{i}]"
            _check_keys(item, names, where)


def _check_text(value: Any, where: str) -> None:
    if isinstance(value, bool | int | float):
        raise CloudBuildConfigError(
            where, f"got {value!r} ({type(value).__name__}); expected text: quote it ('{value}')"
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
