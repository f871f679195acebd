"""The Cloud Function (gen2) folder that starts a chain when new data lands in a bucket.

:func:`build_trigger` writes, into one folder:

- ``main.py``: the CloudEvent entry point (``on_object_finalized``), a few lines handing each
  event to ``trigger_runtime.py`` (a copy of :mod:`launchers.trigger.runtime`);
- ``trigger.json``: the filters, the parameter the object's path goes to, the chain's other
  parameter values, where delivery records go, and the Vertex AI settings (gcp) or the
  project's Python, folder and chain file (local);
- ``requirements.txt``: functions-framework, google-cloud-storage and, on gcp,
  google-cloud-aiplatform, pinned; no beamforge, Beam or tensorflow;
- ``pipeline.yaml`` (gcp): the chain compiled for Vertex AI Pipelines;
- ``deploy.sh`` (gcp): the ``gcloud functions deploy`` command; ``serve.sh``: the same
  function served by functions-framework on 127.0.0.1;
- ``.beamforge-trigger``: the marker that the folder is the build's, listing the files it
  wrote.

The build owns its folder (``deploy.sh`` uploads all of it): it writes into a new or empty
folder, or one an earlier build wrote (holding the marker), whose listed files it removes
first; any other folder is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any

from launchers.chain.compile import pipeline_name
from launchers.chain.spec import ChainSpec
from launchers.chain.submit import chain_labels
from launchers.trigger import commands, runtime
from launchers.trigger.spec import Trigger, parse_trigger
from transforms.core.config import SpecError

# The versions the function is tested with here (tests/test_trigger.py checks them against
# the installed ones).
REQUIREMENTS = {
    "functions-framework": "3.10.1",
    "google-cloud-storage": "3.17.1",
    "google-cloud-aiplatform": "1.165.1",
}
TRIGGER_LABEL = "beamforge-trigger"
RUNTIME_MODULE = "trigger_runtime.py"
MARKER = ".beamforge-trigger"
# Every file a build may write: the only ones a rebuild removes, whatever a marker lists.
_OWNED = (
    runtime.PIPELINE_FILE,
    "main.py",
    RUNTIME_MODULE,
    runtime.SETTINGS_FILE,
    "requirements.txt",
    "deploy.sh",
    "serve.sh",
)

_MAIN = '''\
"""Starts chain {chain} for each object finalized in gs://{bucket}.

Written by beamforge trigger build. Settings: trigger.json; the work: trigger_runtime.py.
"""

import os

import functions_framework

import trigger_runtime

SETTINGS = trigger_runtime.load_settings(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), trigger_runtime.SETTINGS_FILE)
)


@functions_framework.cloud_event
def {entry}(event):
    """Handles one google.cloud.storage.object.v1.finalized event."""
    trigger_runtime.handle(event["type"], event["id"], event.data, SETTINGS)
'''


def build_trigger(spec: ChainSpec, *, output: str, target: str) -> list[str]:
    """Writes the Cloud Function that starts ``spec`` for each new object in its bucket.

    Args:
        spec: The chain, with its ``trigger:`` section (and ``gcp:`` for the gcp target).
        output: The function's folder: new, empty, or written by an earlier build (its
            files are removed first).
        target: ``gcp`` (the function submits the compiled Vertex AI pipeline) or ``local``
            (it runs ``beamforge chain`` in this project's Python, from the current folder).

    Returns:
        The paths written, in the order written.

    Raises:
        SpecError: naming the chain file, before anything is written: at ``trigger.KEY``
            for a bad trigger section (see :func:`launchers.trigger.spec.parse_trigger`), at
            ``gcp`` for the gcp target without a gcp section, at the YAML path of what
            Vertex AI Pipelines cannot express (from the pipeline's compilation), or at
            ``<root>`` for an unknown target, an ``output`` that is a file, or a non-empty
            folder without the marker of an earlier build.
    """
    trigger = parse_trigger(spec, target)
    if os.path.exists(output) and not os.path.isdir(output):
        raise SpecError(
            "", f"output {output!r} is a file; give a folder for the function", source=spec.origin
        )
    previous = _previous_files(output, spec.origin)
    try:
        commands.env_flag(trigger.function.env)
    except ValueError as exc:
        raise SpecError("trigger.function.env", str(exc), source=spec.origin) from None
    with tempfile.TemporaryDirectory(prefix="trigger-") as staging:
        files = _stage(spec, trigger, pathlib.Path(staging))
        os.makedirs(output, exist_ok=True)
        # Listing both builds' files until the new one is complete: an interrupted rebuild
        # is still cleaned up by the next.
        _write_marker(output, sorted(set(previous) | set(files)))
        for name in previous:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(output, name))
        written = []
        for name in files:
            destination = os.path.join(output, name)
            shutil.copy2(os.path.join(staging, name), destination)
            written.append(destination)
        _write_marker(output, files)
    return written


def _previous_files(output: str, origin: str) -> list[str]:
    """The files an earlier build wrote into ``output`` (none for a new or empty folder).

    Raises:
        SpecError: if ``output`` is a non-empty folder without the marker.
    """
    if not os.path.isdir(output):
        return []
    marker = os.path.join(output, MARKER)
    if not os.path.exists(marker):
        found = sorted(os.listdir(output))
        if not found:
            return []
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise SpecError(
            "",
            f"output {output!r} is a folder beamforge trigger build did not write (it holds "
            f"{shown}); give a new or empty folder: the function is deployed with all of it",
            source=origin,
        )
    try:
        with open(marker, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError:
        data = None
    listed = data.get("files") if isinstance(data, dict) else None
    return [name for name in listed if name in _OWNED] if isinstance(listed, list) else []


def _write_marker(output: str, files: list[str]) -> None:
    text = json.dumps({"written_by": "beamforge trigger build", "files": files}, indent=2)
    pathlib.Path(output, MARKER).write_text(text + "\n", encoding="utf-8")


def _stage(spec: ChainSpec, trigger: Trigger, folder: pathlib.Path) -> list[str]:
    """Writes every file into ``folder`` (compiling first: it is what may still fail)."""
    files: list[str] = []
    if trigger.target == "gcp":
        from launchers.chain.compile import compile_chain

        compile_chain(spec, to="kfp", target="gcp", output=str(folder / runtime.PIPELINE_FILE))
        files.append(runtime.PIPELINE_FILE)
    entry = commands.ENTRY_POINT
    (folder / "main.py").write_text(
        _MAIN.format(chain=spec.name, bucket=trigger.bucket, entry=entry), encoding="utf-8"
    )
    shutil.copyfile(runtime.__file__, folder / RUNTIME_MODULE)
    settings = json.dumps(settings_of(spec, trigger), indent=2, sort_keys=True) + "\n"
    (folder / runtime.SETTINGS_FILE).write_text(settings, encoding="utf-8")
    (folder / "requirements.txt").write_text(requirements(trigger.target), encoding="utf-8")
    files += ["main.py", RUNTIME_MODULE, runtime.SETTINGS_FILE, "requirements.txt"]
    if trigger.target == "gcp":
        assert spec.gcp is not None
        deploy = commands.shell_script(
            f"Deploys {trigger.function.name}: chain {spec.name} starts on Vertex AI Pipelines\n"
            f"for each object finalized in gs://{trigger.bucket} that passes the filters.",
            commands.deploy_command(trigger, spec.gcp.project),
        )
        _script(folder / "deploy.sh", deploy)
        files.append("deploy.sh")
    serve = commands.shell_script(
        "Serves the function on 127.0.0.1 (PORT, default 8080) for CloudEvents posted to it,\n"
        "with FUNCTIONS_FRAMEWORK (default: the one installed where it was built).",
        commands.serve_command(),
        expand=(0, -1),
    )
    _script(folder / "serve.sh", serve)
    files.append("serve.sh")
    return files


def _script(path: pathlib.Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


def requirements(target: str) -> str:
    """The function's ``requirements.txt``: only what launches the chain."""
    names = ["functions-framework", "google-cloud-storage"]
    if target == "gcp":
        names.append("google-cloud-aiplatform")
    return "".join(f"{name}=={REQUIREMENTS[name]}\n" for name in names)


def settings_of(spec: ChainSpec, trigger: Trigger) -> dict[str, Any]:
    """The function's ``trigger.json``."""
    settings: dict[str, Any] = {
        "chain": pipeline_name(spec.name),
        "target": trigger.target,
        "bucket": trigger.bucket,
        "prefix": trigger.prefix,
        "suffix": trigger.suffix,
        "glob": trigger.glob,
        "parameter": trigger.parameter,
        "values": dict(spec.values),
        "records": trigger.records,
        "timeout": trigger.function.timeout,
    }
    if trigger.target == "gcp":
        gcp = spec.gcp
        assert gcp is not None and trigger.function.name is not None
        settings["vertex"] = {
            "project": gcp.project,
            "region": gcp.region,
            "display_name": spec.name,
            "pipeline_root": gcp.root(),
            "service_account": gcp.service_account,
            "network": gcp.network,
            "kms_key": gcp.kms_key,
            "labels": {**chain_labels(spec), TRIGGER_LABEL: trigger.function.name},
            "api_endpoint": gcp.api_endpoint,
        }
    else:
        settings["local"] = {
            # The project's Python and the folder the chain's relative paths are read from;
            # BEAMFORGE_PYTHON and BEAMFORGE_DIR override them where the function runs.
            "python": sys.executable,
            "directory": os.getcwd(),
            "chain_file": os.path.abspath(spec.origin),
            "timeout": trigger.function.timeout,
        }
    return settings


__all__ = ["MARKER", "REQUIREMENTS", "build_trigger", "requirements", "settings_of"]
