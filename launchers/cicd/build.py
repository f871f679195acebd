"""The Cloud Build config of a chain: every commit tested, the shipping branch shipped.

The steps and what they wait for (independent branches run in parallel)::

    install ─┬─ test ──────────────────────┬──────────────┬───────────────┐
             ├─ template-files ─ template-image ─ template-push ─ template-publish* ─┐
             ├─ serving-files ── serving-image ── serving-push ── serving-release* ──┤
             └─ compile ─────────────────────── pipeline-upload ─────────────────────┴─ submit*

Nothing is pushed or uploaded before the tests pass (the push and upload steps wait for
``test``), and images and the pipeline are published under the commit's tag. The starred steps
run only on the shipping branch (Cloud Build has no step conditions: each starts with a bash
check of ``$BRANCH_NAME``, given to the step in its environment): they upload the Flex Template spec to the path the chain launches,
move the serving image's tag the chain's upload step names (e.g. ``latest``) to this build's
image, and submit one run of the chain to Vertex AI Pipelines.

No substituted text becomes shell code: Cloud Build pastes substitutions into a step's text
before bash reads it, so values that come from substitutions (the branch, the tag, image
names) reach scripts through the step's ``env`` and are read as ``"$$NAME"``, and the
chain's own values (paths) are shell-quoted, ``$`` escaped as ``$$``.
"""

from __future__ import annotations

import pathlib
import re
import shlex
from typing import Any

import yaml

from launchers.chain.spec import ChainSpec, DatasetStep, UploadStep, check_target
from launchers.cicd.settings import DIGEST, TAG, CicdSettings, parse_cicd
from launchers.cicd.validate import validate_cloudbuild
from launchers.dataflow.templates import PACKAGES
from transforms.core.config import SpecError

PYTHON_IMAGE = "python:3.11"
DOCKER_IMAGE = "gcr.io/cloud-builders/docker"
GCLOUD_IMAGE = "gcr.io/google.com/cloudsdktool/cloud-sdk:slim"
BEAMFORGE = ".venv/bin/beamforge"
PIPELINE_FILE = "pipeline.yaml"
TEMPLATE_DIR = "build/template"
SERVING_DIR = "build/serving"
REGISTRY = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}"
# The shipping check's values, from the step's environment (see _ship_gate).
BRANCH_ENV = ["BRANCH=$BRANCH_NAME", "SHIP=${_SHIP_BRANCH}"]


def build_cloudbuild(spec: ChainSpec, *, output: str) -> str:
    """Writes the chain's Cloud Build config, validated first (nothing is written on error).

    Args:
        spec: The chain, with its ``cicd:`` and ``gcp:`` sections.
        output: The file to write (``cloudbuild.yaml``).

    Returns:
        ``output``.

    Raises:
        SpecError: at the chain's YAML path (``cicd.substitutions.FOO``, ``gcp``) for a
            section that is missing, invalid or inconsistent with the chain's steps; for a
            chain outside a git work tree; at ``--output`` if ``output`` is the chain itself.
        CloudBuildConfigError: if the generated config fails :func:`validate_cloudbuild`.
    """
    chain = pathlib.Path(spec.origin).resolve()
    out = pathlib.Path(output)
    # By name, through symbolic links, or as a hard link to the same file.
    if out.resolve() == chain or (out.exists() and chain.exists() and out.samefile(chain)):
        raise SpecError(
            "--output",
            f"{output} is the chain file itself; write the Cloud Build config to another "
            "file, e.g. cloudbuild.yaml",
            source=spec.origin,
        )
    settings = parse_cicd(spec.cicd, origin=spec.origin)
    config = cloudbuild_config(spec, settings)
    validate_cloudbuild(config)
    text = dump(config, chain=chain_path(spec))
    path = pathlib.Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return output


def cloudbuild_config(spec: ChainSpec, settings: CicdSettings) -> dict[str, Any]:
    """The Cloud Build config (as a mapping) that tests, builds and ships ``spec``.

    Raises:
        SpecError: as :func:`build_cloudbuild`, or at ``cicd.serving_dockerfile`` for a
            Dockerfile that is not in the repository.
    """
    check_target(spec, "gcp")
    assert spec.gcp is not None  # check_target
    if settings.project != spec.gcp.project:
        # Images are named with $PROJECT_ID: the build's project is the chain's.
        raise SpecError(
            "cicd.repository",
            f"the repository is in project {settings.project} but gcp.project is "
            f"{spec.gcp.project}; the build runs in (and pushes to) the chain's project",
            source=spec.origin,
        )
    templates = _template_steps(spec, settings)
    moving_tag = _serving_tag(spec, settings)
    root = repository_root(spec)
    chain = _sh(chain_path(spec))
    if (
        settings.serving_dockerfile is not None
        and not (root / settings.serving_dockerfile).is_file()
    ):
        raise SpecError(
            "cicd.serving_dockerfile",
            f"{settings.serving_dockerfile} is not a file in the repository ({root}); the "
            "build runs docker build --file with it at the repository's root",
            source=spec.origin,
        )
    steps: list[dict[str, Any]] = [
        _bash("install", PYTHON_IMAGE, settings.install_command, wait=["-"]),
        {
            **_bash("test", PYTHON_IMAGE, settings.test_command, wait=["install"]),
            "env": ["CI=true"],
        },
    ]
    images: list[str] = []
    shipped: list[str] = []
    if settings.images.template is not None:
        image = f"{REGISTRY}/{settings.images.template}:${{_TAG}}"
        images.append(image)
        first = templates[0][0]
        steps += [
            _bash(
                "template-files",
                PYTHON_IMAGE,
                f'{BEAMFORGE} template build {_sh(first.spec)} --out {TEMPLATE_DIR} --image "$$IMAGE"\n'
                # The Dockerfile copies setup.py and the packages from its own folder.
                f"cp -r setup.py {' '.join(PACKAGES)} {TEMPLATE_DIR}/",
                wait=["install"],
                env=[f"IMAGE={image}"],
            ),
            _docker("template-image", ["build", "--tag", image, TEMPLATE_DIR], ["template-files"]),
            _docker("template-push", ["push", image], ["template-image", "test"]),
            _bash(
                "template-publish",
                PYTHON_IMAGE,
                _ship_gate("template publish")
                + "\n".join(
                    f"{BEAMFORGE} template build {_sh(step.spec)} "
                    f"--out {_sh(f'build/publish/{step.name}')} "
                    f'--image "$$IMAGE" --gcs-path {_sh(template)}'
                    for step, template in templates
                ),
                wait=["template-push"],
                env=[*BRANCH_ENV, f"IMAGE={image}"],
            ),
        ]
        shipped.append("template-publish")
    if settings.images.serving is not None:
        image = f"{REGISTRY}/{settings.images.serving}"
        images.append(f"{image}:${{_TAG}}")
        if settings.serving_dockerfile is None:
            steps += [
                _bash(
                    "serving-files",
                    PYTHON_IMAGE,
                    f"{BEAMFORGE} serve build {chain} -o {SERVING_DIR}",
                    wait=["install"],
                ),
                _docker(
                    "serving-image",
                    ["build", "--tag", f"{image}:${{_TAG}}", SERVING_DIR],
                    ["serving-files"],
                ),
            ]
        else:
            steps.append(
                _docker(
                    "serving-image",
                    [
                        "build",
                        "--file",
                        _literal(settings.serving_dockerfile),
                        "--tag",
                        f"{image}:${{_TAG}}",
                        ".",
                    ],
                    ["-"],
                )
            )
        steps.append(
            _docker("serving-push", ["push", f"{image}:${{_TAG}}"], ["serving-image", "test"])
        )
        if moving_tag is not None:
            steps.append(
                _bash(
                    "serving-release",
                    DOCKER_IMAGE,
                    _ship_gate(f"moving {moving_tag}")
                    + 'docker tag "$$IMAGE" "$$RELEASE"\ndocker push "$$RELEASE"',
                    wait=["serving-push"],
                    env=[*BRANCH_ENV, f"IMAGE={image}:${{_TAG}}", f"RELEASE={image}:{moving_tag}"],
                )
            )
            shipped.append("serving-release")
        else:
            shipped.append("serving-push")
    steps += [
        _bash(
            "compile",
            PYTHON_IMAGE,
            f"{BEAMFORGE} chain compile {chain} --to kfp --target gcp -o {PIPELINE_FILE}",
            wait=["install"],
        ),
        _upload(spec, settings),
        _bash(
            "submit",
            PYTHON_IMAGE,
            _ship_gate("submit")
            # One run per shipped commit; a schedule is created once, by hand.
            + f"{BEAMFORGE} chain submit {chain} --to vertex --once",
            wait=[*shipped, "pipeline-upload"],
            env=BRANCH_ENV,
        ),
    ]
    # gcloud builds submit (MUST_MATCH) fails a build on a declared substitution it never uses.
    generated = {
        "_TAG": settings.substitutions.get("_TAG", "$SHORT_SHA"),
        "_SHIP_BRANCH": settings.branch,
    }
    if images:
        generated = {
            "_REGION": settings.location,
            "_REPOSITORY": settings.repository_name,
            **generated,
        }
    return {
        "steps": steps,
        "substitutions": {
            **generated,
            **{k: v for k, v in settings.substitutions.items() if k != "_TAG"},
        },
        "images": images,
        "options": {
            # _TAG's default refers to $SHORT_SHA: a substitution inside a substitution.
            "dynamicSubstitutions": True,
            "logging": "CLOUD_LOGGING_ONLY",
            "machineType": settings.machine_type,
        },
        "timeout": f"{settings.timeout}s",
        "tags": ["beamforge", re.sub(r"[^\w.-]", "-", spec.name)[:128]],
    }


def dump(config: dict[str, Any], *, chain: str) -> str:
    """The config as YAML, scripts as literal blocks, with a header naming its source."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _text)
    header = (
        f"# Generated by `beamforge cicd build {chain}`\n"
        "# from the chain's cicd: section; change the chain and regenerate.\n"
        "# Checked offline with `beamforge cicd validate`.\n"
    )
    return header + yaml.dump(config, Dumper=_Dumper, sort_keys=False, width=100)


def _ship_gate(what: str) -> str:
    """Bash that ends the step unless the build is on the shipping branch.

    The branch names come from the step's environment (``BRANCH_ENV``): a branch named
    ``x"||"`` stays a value, where pasted into the script it would become code.
    """
    return (
        'if [ "$$BRANCH" != "$$SHIP" ]; then\n'
        f"  echo \"branch '$$BRANCH' is not $$SHIP: {_literal(what)} skipped\"; exit 0\n"
        "fi\n"
    )


def _bash(
    step_id: str, image: str, script: str, *, wait: list[str], env: list[str] | None = None
) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": step_id,
        "name": image,
        "entrypoint": "bash",
        # -e: a multi-line script stops at its first failing command.
        "args": ["-ce", script],
        "waitFor": wait,
    }
    if env:
        step["env"] = env
    return step


def _literal(text: str) -> str:
    """``text`` as Cloud Build passes it on: ``$`` escaped, so nothing is substituted."""
    return text.replace("$", "$$")


def _sh(text: str) -> str:
    """``text`` as one bash word, whatever it holds (and escaped for Cloud Build)."""
    return _literal(shlex.quote(text))


def _docker(step_id: str, args: list[str], wait: list[str]) -> dict[str, Any]:
    return {"id": step_id, "name": DOCKER_IMAGE, "args": args, "waitFor": wait}


def _upload(spec: ChainSpec, settings: CicdSettings) -> dict[str, Any]:
    """The pipeline-upload step; the destination (with the tag) comes from its environment."""
    wait = ["compile", "test"]
    if settings.pipelines.startswith("gs://"):
        folder = _literal(f"{settings.pipelines.rstrip('/')}/{spec.name}")
        return _bash(
            "pipeline-upload",
            GCLOUD_IMAGE,
            f'gcloud storage cp {PIPELINE_FILE} "$$TARGET"',
            wait=wait,
            env=[f"TARGET={folder}/${{_TAG}}/{PIPELINE_FILE}"],
        )
    # Artifact Registry's KFP repositories take the template by a multipart POST.
    return _bash(
        "pipeline-upload",
        GCLOUD_IMAGE,
        "curl --fail --show-error --silent -X POST "
        '-H "Authorization: Bearer $(gcloud auth print-access-token)" '
        f'-F "tags=$$TAG" -F content=@{PIPELINE_FILE} "$$URL"',
        wait=wait,
        env=["TAG=${_TAG}", f"URL={settings.pipelines.rstrip('/')}"],
    )


def _template_steps(spec: ChainSpec, settings: CicdSettings) -> list[tuple[DatasetStep, str]]:
    """The dataset steps that launch a Flex Template, with their template's gs:// path."""
    steps = [
        (s, s.gcp.template)
        for s in spec.steps
        if isinstance(s, DatasetStep)
        and s.gcp is not None
        and s.gcp.launch == "flex_template"
        and s.gcp.template is not None
    ]
    if steps and settings.images.template is None:
        raise SpecError(
            "cicd.images.template",
            f"step {steps[0][0].name} launches a Flex Template: name its image here "
            "(e.g. beamforge-dataflow) so that every commit rebuilds it",
            source=spec.origin,
        )
    for step, template in steps:
        # template build --gcs-path publishes the job spec beside the template spec.
        published = f"{template.removesuffix('.json')}.spec.yaml"
        given = step.gcp.parameters.get("spec") if step.gcp is not None else None
        if given != published:
            i = spec.steps.index(step)
            raise SpecError(
                f"steps[{i}].gcp.parameters.spec",
                f"got {given!r}; the build publishes {step.name}'s job spec ({step.spec}) "
                f"beside its template, at {published}: launch that one, so that a shipped "
                "change to it is the one that runs",
                source=spec.origin,
            )
    if not steps and settings.images.template is not None:
        raise SpecError(
            "cicd.images.template",
            "no dataset step launches a Flex Template (gcp.launch: flex_template); "
            "remove the template image",
            source=spec.origin,
        )
    return steps


def _serving_tag(spec: ChainSpec, settings: CicdSettings) -> str | None:
    """The tag the chain serves, moved to each shipped build's serving image.

    Raises:
        SpecError: if an upload step or the ``serving:`` section names an image other than
            the one the build builds, or if ``beamforge serve build`` would find no model in
            the build's fresh checkout.
    """
    if settings.images.serving is None:
        return None
    if settings.serving_dockerfile is None:
        _check_serving_section(spec)
    built = f"{settings.repository}/{settings.images.serving}"
    served = [
        (f"steps[{i}] ({step.name})", step.gcp.image_uri)
        for i, step in enumerate(spec.steps)
        if isinstance(step, UploadStep) and step.gcp is not None
    ]
    if spec.serving is not None and isinstance(spec.serving.get("image"), str):
        served.append(("serving.image", spec.serving["image"]))
    tags = set()
    for where, image in served:
        name, tag = _split_tag(image)
        if not (TAG.fullmatch(tag) or (tag == "" and DIGEST.fullmatch(image.split("@", 1)[1]))):
            raise SpecError(
                "cicd.images.serving",
                f"{where} serves {image!r}, whose tag or digest is not one docker accepts "
                "(a tag: [A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128 characters; a digest: "
                "sha256:HEX)",
                source=spec.origin,
            )
        if name != built:
            raise SpecError(
                "cicd.images.serving",
                f"the build pushes {built} but {where} serves {image}; make them the same image",
                source=spec.origin,
            )
        tags.add(tag)
    if len(tags) > 1:
        raise SpecError(
            "cicd.images.serving",
            f"upload steps serve {built} under different tags ({', '.join(sorted(tags))}); use one",
            source=spec.origin,
        )
    if not tags:
        return None
    return tags.pop() or None


def _check_serving_section(spec: ChainSpec) -> None:
    """``beamforge serve build`` needs a ``serving:`` section and a model it can reach."""
    if spec.serving is None:
        raise SpecError(
            "cicd.images.serving",
            "the serving image is generated by beamforge serve build from the chain's serving: "
            "section, which the chain lacks; add one (model: gs://...) or set "
            "cicd.serving_dockerfile",
            source=spec.origin,
        )
    if spec.serving.get("model", "copy") == "copy" and not spec.serving.get("model_dir"):
        raise SpecError(
            "serving.model",
            "the build makes the serving image in a fresh checkout, where the chain has no "
            "local model to copy: give model: gs://BUCKET/PATH (read at start) or model_dir "
            "(a directory in the repository)",
            source=spec.origin,
        )


def _split_tag(image: str) -> tuple[str, str]:
    if "@" in image:
        # A digest cannot be moved: the name still has to match, and nothing is released.
        return image.split("@", 1)[0], ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        return image.rsplit(":", 1)[0], image.rsplit(":", 1)[1]
    return image, "latest"


def repository_root(spec: ChainSpec) -> pathlib.Path:
    """The git work tree holding the chain file: where Cloud Build runs every step.

    A trigger checks the repository out at ``/workspace`` and runs the steps there, so the
    chain is named relative to the work tree's top (the nearest folder up from the chain
    with a ``.git``, as ``git rev-parse --show-toplevel`` finds it).

    Raises:
        SpecError: if no folder above the chain holds a ``.git``.
    """
    chain = pathlib.Path(spec.origin).resolve()
    for folder in chain.parents:
        if (folder / ".git").exists():
            return folder
    raise SpecError(
        "",
        f"the chain ({chain}) is not in a git work tree; Cloud Build runs in a checkout of "
        "the repository, so the chain must be a file in it",
        source=spec.origin,
    )


def chain_path(spec: ChainSpec) -> str:
    """The chain file as the build sees it: relative to the repository's root.

    Raises:
        SpecError: as :func:`repository_root`, or for a path with control characters.
    """
    chain = pathlib.Path(spec.origin).resolve()
    path = chain.relative_to(repository_root(spec)).as_posix()
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise SpecError(
            "", f"the chain's path {path!r} has control characters; rename it", source=spec.origin
        )
    return path
