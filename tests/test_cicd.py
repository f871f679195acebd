"""The chain's Cloud Build config: generated, validated offline, its graph and its commands.

Regenerate the golden file after an intended change with
``BEAMFORGE_UPDATE_GOLDEN=1 pytest tests/test_cicd.py`` and review the diff.
"""

from __future__ import annotations

import copy
import os
import pathlib
import re
import shlex
import subprocess
from typing import Any

import pytest
import yaml

from launchers.chain.spec import ChainSpec, parse_chain
from launchers.cicd import (
    TEST_COMMAND,
    CloudBuildConfigError,
    build_cloudbuild,
    cloudbuild_config,
    parse_cicd,
    validate_cloudbuild,
)
from tests.conftest import REPO, beamforge
from transforms.core.config import SpecError

CHAIN = "examples/chicago_taxi/chain.yaml"
GOLDEN = REPO / "tests" / "golden" / "cloudbuild_taxi.yaml"
CICD = {
    "repository": "us-docker.pkg.dev/my-project/beamforge",
    "images": {"template": "beamforge-dataflow", "serving": "taxi-predictor"},
    "pipelines": "https://us-central1-kfp.pkg.dev/my-project/beamforge-pipelines",
}
WAIT_FOR = {
    "install": ["-"],
    "test": ["install"],
    "template-files": ["install"],
    "template-image": ["template-files"],
    "template-push": ["template-image", "test"],
    "template-publish": ["template-push"],
    "serving-files": ["install"],
    "serving-image": ["serving-files"],
    "serving-push": ["serving-image", "test"],
    "serving-release": ["serving-push"],
    "compile": ["install"],
    "pipeline-upload": ["compile", "test"],
    "submit": ["template-publish", "serving-release", "pipeline-upload"],
}


PUBLISHED_SPEC = "gs://my-bucket/beamforge/templates/chicago_taxi.spec.yaml"
SERVING = {"model": "gs://my-bucket/beamforge/models/taxi"}


def _chain_data(**cicd: Any) -> dict[str, Any]:
    data = yaml.safe_load((REPO / CHAIN).read_text(encoding="utf-8"))
    data["cicd"] = {**copy.deepcopy(CICD), **cicd}
    # The serving image is made by `beamforge serve build` in a fresh checkout: a gs:// model.
    data.setdefault("serving", dict(SERVING))
    # The template launches the job spec the build publishes beside it.
    data["steps"][0]["gcp"]["parameters"]["spec"] = PUBLISHED_SPEC
    return data


def _chain(**cicd: Any) -> ChainSpec:
    return parse_chain(_chain_data(**cicd), origin=CHAIN)


def _config() -> dict[str, Any]:
    spec = _chain()
    return cloudbuild_config(spec, parse_cicd(spec.cicd, origin=CHAIN))


def _repository(tmp_path: pathlib.Path, data: dict[str, Any], name: str = "chain.yaml") -> str:
    """A git work tree in ``tmp_path`` holding the chain (and serving/Dockerfile); its path."""
    (tmp_path / ".git").mkdir(exist_ok=True)
    (tmp_path / "serving").mkdir(exist_ok=True)
    (tmp_path / "serving" / "Dockerfile").write_text("FROM python:3.11\n", encoding="utf-8")
    chain = tmp_path / name
    chain.parent.mkdir(parents=True, exist_ok=True)
    chain.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(chain)


def _repository_chain(tmp_path: pathlib.Path, name: str = "chain.yaml", **cicd: Any) -> ChainSpec:
    path = _repository(tmp_path, _chain_data(**cicd), name)
    return parse_chain(_chain_data(**cicd), origin=path)


def _steps(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in config["steps"]}


def _ancestors(graph: dict[str, list[str]], step: str) -> set[str]:
    seen: set[str] = set()
    todo = [w for w in graph[step] if w != "-"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [w for w in graph[name] if w != "-"]
    return seen


def _readme_test_command() -> str:
    """The test command of the README's quickstart block (the line starting ``make test``)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1]
    block = quickstart.split("```", 2)[1]
    (line,) = [line for line in block.splitlines() if line.startswith("make test")]
    return line.split("#", 1)[0].strip()


def test_generated_config_passes_validation_and_is_written(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "ci" / "cloudbuild.yaml"
    assert build_cloudbuild(_chain(), output=str(out)) == str(out)
    validate_cloudbuild(out)
    validate_cloudbuild(str(out))
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == _config()


def test_generated_config_matches_the_golden(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "cloudbuild.yaml"
    build_cloudbuild(_chain(), output=str(out))
    text = out.read_text(encoding="utf-8")
    if os.environ.get("BEAMFORGE_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    validate_cloudbuild(GOLDEN)


def test_wait_for_graph_runs_independent_steps_in_parallel() -> None:
    config = _config()
    graph = {step["id"]: step["waitFor"] for step in config["steps"]}
    assert graph == WAIT_FOR
    # The tests, both image builds and the compile all start as soon as the install is done.
    parallel = ["test", "template-files", "serving-files", "compile"]
    assert all(graph[step] == ["install"] for step in parallel)
    for a in parallel:
        for b in parallel:
            assert a not in _ancestors(graph, b)
    assert "test" not in _ancestors(graph, "template-image")
    assert "test" not in _ancestors(graph, "serving-image")
    # Nothing leaves the build before the tests pass.
    for step in ("template-push", "serving-push", "pipeline-upload", "template-publish"):
        assert "test" in _ancestors(graph, step)
    assert _ancestors(graph, "submit") == set(WAIT_FOR) - {"submit"}


def test_shipping_steps_run_only_on_the_shipping_branch() -> None:
    steps = _steps(_config())
    gate = 'if [ "$$BRANCH" != "$$SHIP" ]; then\n'
    shipping = {s for s, step in steps.items() if gate in step.get("args", ["", ""])[1]}
    assert shipping == {"template-publish", "serving-release", "submit"}
    # The branch names reach the check through the environment, never the script's text.
    for step_id in shipping:
        assert steps[step_id]["env"][:2] == ["BRANCH=$BRANCH_NAME", "SHIP=${_SHIP_BRANCH}"]
        assert "BRANCH_NAME" not in steps[step_id]["args"][1]
        assert "_SHIP_BRANCH" not in steps[step_id]["args"][1]
    assert _config()["substitutions"]["_SHIP_BRANCH"] == "main"
    assert _chain(branch="release")  # another branch is accepted
    assert steps["submit"]["args"][1].endswith(
        f".venv/bin/beamforge chain submit {CHAIN} --to vertex --once"
    )
    assert steps["compile"]["args"] == [
        "-ce",
        f".venv/bin/beamforge chain compile {CHAIN} --to kfp --target gcp -o pipeline.yaml",
    ]


def test_test_step_runs_the_readme_test_command() -> None:
    command = _readme_test_command()
    assert command == "make test"
    assert command == TEST_COMMAND
    test = _steps(_config())["test"]
    assert test["name"] == "python:3.11"
    assert test["entrypoint"] == "bash"
    assert test["args"] == ["-ce", command]
    assert test["env"] == ["CI=true"]


def test_substitutions_images_and_options() -> None:
    config = _config()
    assert config["substitutions"] == {
        "_REGION": "us",
        "_REPOSITORY": "beamforge",
        "_TAG": "$SHORT_SHA",
        "_SHIP_BRANCH": "main",
    }
    registry = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}"
    assert config["images"] == [
        f"{registry}/beamforge-dataflow:${{_TAG}}",
        f"{registry}/taxi-predictor:${{_TAG}}",
    ]
    assert config["options"] == {
        "dynamicSubstitutions": True,
        "logging": "CLOUD_LOGGING_ONLY",
        "machineType": "E2_HIGHCPU_8",
    }
    assert config["timeout"] == "7200s"
    steps = _steps(config)
    assert steps["template-push"]["args"] == ["push", f"{registry}/beamforge-dataflow:${{_TAG}}"]
    # The chain's upload step serves :latest: shipping moves it to this build's image.
    assert steps["serving-release"]["args"][1].splitlines()[-2:] == [
        'docker tag "$$IMAGE" "$$RELEASE"',
        'docker push "$$RELEASE"',
    ]
    assert steps["serving-release"]["env"][2:] == [
        f"IMAGE={registry}/taxi-predictor:${{_TAG}}",
        f"RELEASE={registry}/taxi-predictor:latest",
    ]


def test_extra_substitutions_and_other_settings(tmp_path: pathlib.Path) -> None:
    spec = _repository_chain(
        tmp_path,
        test_command="make test PYTEST_ADDOPTS=$_PYTEST_ARGS",
        substitutions={"_PYTEST_ARGS": "-x", "_TAG": "$COMMIT_SHA"},
        pipelines="gs://my-bucket/beamforge/pipelines/",
        serving_dockerfile="serving/Dockerfile",
        machine_type="E2_HIGHCPU_32",
        timeout=3600,
    )
    config = cloudbuild_config(spec, parse_cicd(spec.cicd, origin=CHAIN))
    validate_cloudbuild(config)
    assert config["substitutions"]["_PYTEST_ARGS"] == "-x"
    assert config["substitutions"]["_TAG"] == "$COMMIT_SHA"
    steps = _steps(config)
    assert steps["test"]["args"] == ["-ce", "make test PYTEST_ADDOPTS=$_PYTEST_ARGS"]
    assert steps["pipeline-upload"]["args"] == ["-ce", 'gcloud storage cp pipeline.yaml "$$TARGET"']
    assert steps["pipeline-upload"]["env"] == [
        "TARGET=gs://my-bucket/beamforge/pipelines/chicago_taxi/${_TAG}/pipeline.yaml"
    ]
    assert "serving-files" not in steps
    assert steps["serving-image"]["waitFor"] == ["-"]
    assert steps["serving-image"]["args"][:3] == ["build", "--file", "serving/Dockerfile"]
    assert config["options"]["machineType"] == "E2_HIGHCPU_32"
    assert config["timeout"] == "3600s"


VALUES = {
    "_REGION": "us",
    "_REPOSITORY": "beamforge",
    "_TAG": "abc1234",
    "_SHIP_BRANCH": "main",
    "PROJECT_ID": "my-project",
    "BRANCH_NAME": "main",
}


def _substituted(text: str, values: dict[str, str]) -> str:
    """What Cloud Build makes of a step's text before running it."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values[match.group(1) or match.group(2)]

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", one, text)


def test_template_files_step_makes_a_complete_docker_context(tmp_path: pathlib.Path) -> None:
    # The step's own script, run here as Cloud Build would in a checkout of the repository.
    proc = _run_step(_steps(_config())["template-files"], _checkout(tmp_path))
    assert proc.returncode == 0, proc.stderr
    context = tmp_path / "build" / "template"
    dockerfile = (context / "Dockerfile").read_text(encoding="utf-8")
    copied = re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, flags=re.MULTILINE)
    assert copied == ["requirements.txt", "setup.py", "transforms", "beam_pipelines", "launchers"]
    assert all((context / path).exists() for path in copied)
    template = yaml.safe_load((context / "template.json").read_text(encoding="utf-8"))
    assert template["image"] == "us-docker.pkg.dev/my-project/beamforge/beamforge-dataflow:abc1234"


def _checkout(tmp_path: pathlib.Path) -> pathlib.Path:
    """A workspace like Cloud Build's (the repository at /workspace), linked to this one."""
    for name in ("examples", "setup.py", "transforms", "beam_pipelines", "launchers", ".venv"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def _run_step(step: dict[str, Any], workspace: pathlib.Path, **values: str) -> Any:
    """Runs a bash step as Cloud Build would: its text and env substituted, then bash."""
    script = _substituted(step["args"][1], {**VALUES, **values})
    env = dict(
        _substituted(item, {**VALUES, **values}).split("=", 1) for item in step.get("env", [])
    )
    return subprocess.run(
        ["bash", *step["args"][:1], script],
        cwd=workspace,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_compile_step_compiles_the_vertex_pipeline(tmp_path: pathlib.Path) -> None:
    proc = _run_step(_steps(_config())["compile"], _checkout(tmp_path))
    assert proc.returncode == 0, proc.stderr
    pipeline = yaml.safe_load((tmp_path / "pipeline.yaml").read_text(encoding="utf-8"))
    assert pipeline["pipelineInfo"]["name"] == "chicago-taxi"
    assert set(pipeline["root"]["inputDefinitions"]["parameters"]) == {
        "input",
        "gcs_root",
        "model_name",
    }


@pytest.mark.parametrize("step_id", ["template-publish", "serving-release", "submit"])
def test_shipping_steps_do_nothing_on_another_branch(tmp_path: pathlib.Path, step_id: str) -> None:
    # An empty workspace: a step that went past its check would fail at once.
    proc = _run_step(_steps(_config())[step_id], tmp_path, BRANCH_NAME="feature-x")
    assert proc.returncode == 0, proc.stderr
    what = {"template-publish": "template publish", "serving-release": "moving latest"}
    assert proc.stdout == f"branch 'feature-x' is not main: {what.get(step_id, step_id)} skipped\n"
    proc = _run_step(_steps(_config())[step_id], tmp_path, BRANCH_NAME="main")
    assert proc.returncode != 0  # went on to ship, and failed in the empty workspace


def _write(tmp_path: pathlib.Path, config: dict[str, Any]) -> pathlib.Path:
    path = tmp_path / "cloudbuild.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _broken(change: str) -> dict[str, Any]:
    config = _config()
    steps = config["steps"]
    if change == "unknown field":
        steps[1]["retries"] = 2
    elif change == "bad duration":
        config["timeout"] = "2h"
    elif change == "bad enum":
        config["options"]["machineType"] = "E2_HUGE"
    elif change == "undeclared substitution":
        steps[1]["args"][1] = "make test ARGS=$_FOO"
    elif change == "undeclared braced substitution":
        config["images"][0] = "${_REGISTRY}/beamforge-dataflow:${_TAG}"
    elif change == "unescaped shell variable":
        steps[1]["args"][1] = 'echo "$HOME"'
    elif change == "substitution without underscore":
        config["substitutions"]["REGION"] = "us"
    elif change == "lower-case substitution":
        config["substitutions"]["_region"] = "us"
    elif change == "waitFor naming no step":
        steps[3]["waitFor"] = ["template-files", "tests"]
    elif change == "waitFor naming a later step":
        steps[1]["waitFor"] = ["submit"]
    elif change == "step without name":
        del steps[2]["name"]
    elif change == "duplicate id":
        steps[4]["id"] = "test"
    return config


_FIELDS = (
    "name, env, args, dir, id, waitFor, entrypoint, secretEnv, volumes, timing, pullTiming, "
    "timeout, status, allowFailure, exitCode, allowExitCodes, script, automapSubstitutions"
)
_DECLARED = "declared: _REGION, _REPOSITORY, _SHIP_BRANCH, _TAG"
BROKEN = {
    "unknown field": "steps[1] (id: test).retries: unknown field 'retries' of BuildStep; "
    f"valid fields: {_FIELDS}",
    "bad duration": "timeout: '2h' is not a duration; write seconds, e.g. '3600s'",
    "bad enum": "options.machineType: Invalid enum value E2_HUGE for enum type "
    "google.devtools.cloudbuild.v1.BuildOptions.MachineType",
    "undeclared substitution": "steps[1] (id: test).args[1]: $_FOO is neither a Cloud Build "
    f"built-in substitution nor declared in substitutions ({_DECLARED}); declare it under "
    "substitutions",
    "undeclared braced substitution": "images[0]: $_REGISTRY is neither a Cloud Build built-in "
    f"substitution nor declared in substitutions ({_DECLARED}); declare it under substitutions",
    "unescaped shell variable": "steps[1] (id: test).args[1]: $HOME is neither a Cloud Build "
    f"built-in substitution nor declared in substitutions ({_DECLARED}); a shell variable is "
    "written $$HOME",
    "substitution without underscore": "substitutions.REGION: user substitutions start with _ "
    "and hold only A-Z, 0-9 and _ (_[A-Z0-9_]+), e.g. _REGION",
    "lower-case substitution": "substitutions._region: user substitutions start with _ and hold "
    "only A-Z, 0-9 and _ (_[A-Z0-9_]+), e.g. _REGION",
    "waitFor naming no step": "steps[3] (id: template-image).waitFor[1]: 'tests' is not the id "
    "of an earlier step; earlier ids: install, test, template-files ('-' starts the step at "
    "once)",
    "waitFor naming a later step": "steps[1] (id: test).waitFor[0]: 'submit' is not the id of "
    "an earlier step; earlier ids: install ('-' starts the step at once)",
    "duplicate id": "steps[4] (id: test).id: 'test' is also the id of steps[1]",
    "step without name": "steps[2] (id: template-files).name: every step needs name (the image "
    "it runs in)",
}


@pytest.mark.parametrize("change", sorted(BROKEN))
def test_each_rule_rejects_a_broken_file(tmp_path: pathlib.Path, change: str) -> None:
    path = _write(tmp_path, _broken(change))
    with pytest.raises(CloudBuildConfigError) as raised:
        validate_cloudbuild(path)
    assert str(raised.value) == f"{path}: {BROKEN[change]}"
    assert raised.value.source == str(path)
    # The same rule on the mapping itself, without a file to name.
    with pytest.raises(CloudBuildConfigError) as raised:
        validate_cloudbuild(_broken(change))
    assert str(raised.value) == BROKEN[change]


def test_escapes_and_builtins_are_accepted() -> None:
    config = _config()
    config["steps"][1]["args"][1] = (
        'echo "$$HOME $${USER} $BUILD_ID ${COMMIT_SHA} $_HEAD_BRANCH ${_TAG:0:4}" $(date)'
    )
    validate_cloudbuild(config)


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cloudbuild.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(CloudBuildConfigError) as raised:
        validate_cloudbuild(path)
    assert str(raised.value) == f"{path}: <build>: got list; expected a mapping"
    path.write_text("steps: [\n", encoding="utf-8")
    with pytest.raises(
        CloudBuildConfigError, match=r"^.*cloudbuild\.yaml: <build>: not valid YAML"
    ):
        validate_cloudbuild(path)


SUBS = "generated: _REGION, _REPOSITORY, _TAG, _SHIP_BRANCH"
BAD_CICD: dict[str, tuple[dict[str, Any], str]] = {
    "undeclared substitution": (
        {"test_command": "make test ARGS=$_PYTEST_ARGS"},
        "cicd.test_command: $_PYTEST_ARGS is neither a Cloud Build built-in substitution nor "
        f"declared in cicd.substitutions (declared: none; {SUBS})",
    ),
    "undeclared in another substitution": (
        {"substitutions": {"_ARGS": "-k $_FILTER"}, "test_command": "make test $_ARGS"},
        "cicd.substitutions._ARGS: $_FILTER is neither a Cloud Build built-in substitution nor "
        f"declared in cicd.substitutions (declared: _ARGS; {SUBS})",
    ),
    "substitution without underscore": (
        {"substitutions": {"PYTEST_ARGS": "-x"}},
        "cicd.substitutions.PYTEST_ARGS: user substitutions start with _ and hold only A-Z, "
        "0-9 and _ (_[A-Z0-9_]+)",
    ),
    "generated substitution": (
        {"substitutions": {"_REGION": "europe"}},
        "cicd.substitutions._REGION: _REGION is set by the generated config (cicd.repository); "
        "set it there",
    ),
    "unknown key": (
        {"branches": ["main"]},
        "cicd.branches: unknown key 'branches'; valid keys are repository, pipelines, images, "
        "branch, test_command, install_command, serving_dockerfile, substitutions, "
        "machine_type, timeout",
    ),
    "not a repository": (
        {"repository": "gcr.io/my-project"},
        "cicd.repository: got 'gcr.io/my-project'; expected an Artifact Registry docker "
        "repository, LOCATION-docker.pkg.dev/PROJECT/REPO",
    ),
    "another project": (
        {"repository": "us-docker.pkg.dev/other-project/beamforge"},
        "cicd.repository: the repository is in project other-project but gcp.project is "
        "my-project; the build runs in (and pushes to) the chain's project",
    ),
    "not a pipeline destination": (
        {"pipelines": "/tmp/pipelines"},
        "cicd.pipelines: got '/tmp/pipelines'; expected a gs:// folder or an Artifact Registry "
        "KFP repository, https://LOCATION-kfp.pkg.dev/PROJECT/REPO",
    ),
    "bad machine type": (
        {"machine_type": "n1-standard-4"},
        "cicd.machine_type: got 'n1-standard-4'; Cloud Build machine types: UNSPECIFIED, "
        "N1_HIGHCPU_8, N1_HIGHCPU_32, E2_HIGHCPU_8, E2_HIGHCPU_32, E2_MEDIUM, E2_STANDARD_2",
    ),
    "timeout too long": (
        {"timeout": 100_000},
        "cicd.timeout: got 100,000; expected an integer from 60 to 86,400 (Cloud Build's limit "
        "is 24 hours)",
    ),
    "serving image the chain does not serve": (
        {"images": {"template": "beamforge-dataflow", "serving": "predictor"}},
        "cicd.images.serving: the build pushes us-docker.pkg.dev/my-project/beamforge/predictor "
        "but steps[4] (upload) serves "
        "us-docker.pkg.dev/my-project/beamforge/taxi-predictor:latest; make them the same image",
    ),
    "no template image": (
        {"images": {"serving": "taxi-predictor"}},
        "cicd.images.template: step dataset launches a Flex Template: name its image here "
        "(e.g. beamforge-dataflow) so that every commit rebuilds it",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CICD))
def test_bad_cicd_sections_fail_at_their_yaml_path_before_writing(
    tmp_path: pathlib.Path, case: str
) -> None:
    change, message = BAD_CICD[case]
    out = tmp_path / "cloudbuild.yaml"
    with pytest.raises(SpecError) as raised:
        build_cloudbuild(parse_chain(_chain_data(**change), origin=CHAIN), output=str(out))
    assert str(raised.value) == f"{CHAIN}: {message}"
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_the_template_must_launch_the_job_spec_the_build_publishes(
    tmp_path: pathlib.Path,
) -> None:
    data = _chain_data()
    data["steps"][0]["gcp"]["parameters"]["spec"] = "gs://my-bucket/beamforge/specs/taxi.yaml"
    out = tmp_path / "cloudbuild.yaml"
    with pytest.raises(SpecError) as raised:
        build_cloudbuild(parse_chain(data, origin=CHAIN), output=str(out))
    assert str(raised.value) == (
        f"{CHAIN}: steps[0].gcp.parameters.spec: got 'gs://my-bucket/beamforge/specs/taxi.yaml'; "
        "the build publishes dataset's job spec (examples/chicago_taxi/pipeline.yaml) beside "
        f"its template, at {PUBLISHED_SPEC}: launch that one, so that a shipped change to it "
        "is the one that runs"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_serving_section_must_name_the_same_image_and_a_reachable_model(
    tmp_path: pathlib.Path,
) -> None:
    out = tmp_path / "out" / "cloudbuild.yaml"
    cases = [
        (
            None,
            "cicd.images.serving: the serving image is generated by beamforge serve build from "
            "the chain's serving: section, which the chain lacks; add one (model: gs://...) or "
            "set cicd.serving_dockerfile",
        ),
        (
            {"model": "copy"},
            "serving.model: the build makes the serving image in a fresh checkout, where the "
            "chain has no local model to copy: give model: gs://BUCKET/PATH (read at start) or "
            "model_dir (a directory in the repository)",
        ),
        (
            {**SERVING, "image": "us-docker.pkg.dev/my-project/beamforge/server:latest"},
            "cicd.images.serving: the build pushes us-docker.pkg.dev/my-project/beamforge/"
            "taxi-predictor but serving.image serves "
            "us-docker.pkg.dev/my-project/beamforge/server:latest; make them the same image",
        ),
    ]
    for serving, message in cases:
        data = _chain_data()
        if serving is None:
            del data["serving"]
        else:
            data["serving"] = serving
        with pytest.raises(SpecError) as raised:
            build_cloudbuild(parse_chain(data, origin=CHAIN), output=str(out))
        assert str(raised.value) == f"{CHAIN}: {message}"
    assert not out.parent.exists()
    # A checked-in Dockerfile needs no serving: section; a copied model_dir is in the checkout.
    data = _chain_data(serving_dockerfile="serving/Dockerfile")
    del data["serving"]
    build_cloudbuild(parse_chain(data, origin=_repository(tmp_path, data)), output=str(out))
    data = _chain_data()
    data["serving"] = {"model": "copy", "model_dir": "models/taxi"}
    build_cloudbuild(parse_chain(data, origin=CHAIN), output=str(out))


def test_the_chain_file_keeps_braces_for_its_parameters() -> None:
    # ${...} in a chain file is a chain parameter; the cicd section writes $_NAME.
    with pytest.raises(SpecError) as raised:
        _chain(test_command="make test ${_ARGS}", substitutions={"_ARGS": "-x"})
    assert str(raised.value) == (
        f"{CHAIN}: cicd.test_command: 'make test ${{_ARGS}}': parameters (${{name}}) can be "
        "used only in the steps"
    )


def test_a_chain_without_cicd_or_gcp_sections_is_refused(tmp_path: pathlib.Path) -> None:
    data = _chain_data()
    del data["cicd"]
    out = tmp_path / "cloudbuild.yaml"
    with pytest.raises(SpecError) as raised:
        build_cloudbuild(parse_chain(data, origin=CHAIN), output=str(out))
    assert str(raised.value) == (
        f"{CHAIN}: cicd: the chain has no cicd section; add one with repository and pipelines"
    )
    data = _chain_data()
    del data["gcp"]
    with pytest.raises(SpecError) as raised:
        build_cloudbuild(parse_chain(data, origin=CHAIN), output=str(out))
    assert str(raised.value) == (
        f"{CHAIN}: gcp: the gcp target needs a gcp section (project, region, ...)"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_absolute_chain_path_is_named_relative_to_the_repository() -> None:
    spec = parse_chain(_chain_data(), origin=str(REPO / CHAIN))
    config = cloudbuild_config(spec, parse_cicd(spec.cicd, origin=spec.origin))
    assert _steps(config)["compile"]["args"][1].split()[3] == CHAIN


def test_the_output_may_not_be_the_chain_itself(tmp_path: pathlib.Path) -> None:
    chain = _repository(tmp_path, _chain_data())
    before = pathlib.Path(chain).read_bytes()
    os.link(chain, tmp_path / "hard-link.yaml")
    (tmp_path / "symbolic-link.yaml").symlink_to(chain)
    links = [str(tmp_path / "hard-link.yaml"), str(tmp_path / "symbolic-link.yaml")]
    for output in [chain, str(tmp_path / "." / "chain.yaml"), *links]:
        with pytest.raises(SpecError) as raised:
            build_cloudbuild(parse_chain(_chain_data(), origin=chain), output=output)
        assert str(raised.value) == (
            f"{chain}: --output: {output} is the chain file itself; write the Cloud Build config "
            "to another file, e.g. cloudbuild.yaml"
        )
    assert pathlib.Path(chain).read_bytes() == before


def test_the_cli_refuses_to_overwrite_the_chain_in_one_line(tmp_path: pathlib.Path) -> None:
    chain = _repository(tmp_path, _chain_data())
    before = pathlib.Path(chain).read_bytes()
    proc = beamforge("cicd", "build", chain, "-o", chain)
    assert proc.returncode != 0
    assert proc.stderr == (
        f"error: {chain}: --output: {chain} is the chain file itself; write the Cloud Build "
        "config to another file, e.g. cloudbuild.yaml\n"
    )
    assert pathlib.Path(chain).read_bytes() == before


def test_the_chain_is_named_relative_to_its_work_tree_and_quoted(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "ci/my chain's $HOME;x.yaml"
    _repository(tmp_path, _chain_data(), name)
    # From another folder, by a relative path: the build still names it from the root.
    monkeypatch.chdir(tmp_path / "ci")
    spec = parse_chain(_chain_data(), origin=os.path.basename(name))
    steps = _steps(cloudbuild_config(spec, parse_cicd(spec.cicd, origin=spec.origin)))
    quoted = "'ci/my chain'\"'\"'s $$HOME;x.yaml'"
    assert steps["compile"]["args"][1] == (
        f".venv/bin/beamforge chain compile {quoted} --to kfp --target gcp -o pipeline.yaml"
    )
    assert steps["serving-files"]["args"][1] == (
        f".venv/bin/beamforge serve build {quoted} -o build/serving"
    )
    assert steps["submit"]["args"][1].endswith(
        f".venv/bin/beamforge chain submit {quoted} --to vertex --once"
    )
    # What bash makes of it once Cloud Build has turned $$ into $: one word, the path.
    script = _substituted(steps["compile"]["args"][1], VALUES)
    assert shlex.split(script)[3] == name


def test_a_chain_outside_a_git_work_tree_is_refused(tmp_path: pathlib.Path) -> None:
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump(_chain_data()), encoding="utf-8")
    out = tmp_path / "out" / "cloudbuild.yaml"
    with pytest.raises(SpecError) as raised:
        build_cloudbuild(parse_chain(_chain_data(), origin=str(chain)), output=str(out))
    assert str(raised.value) == (
        f"{chain}: <root>: the chain ({chain}) is not in a git work tree; Cloud Build runs in a "
        "checkout of the repository, so the chain must be a file in it"
    )
    assert not out.parent.exists()


BAD_BRANCHES = {
    'x"||"': "not a regex (no |)",
    'main"; touch X; echo "': "not a valid git branch name (' ')",
    "main|release": "not a regex (no |)",
    "release-.*": "not a regex (no *)",
    "$_BRANCH": "not a regex (no $)",
    "a..b": "not a valid git branch name ('..')",
    "-main": "not a valid git branch name",
    "main.lock": "not a valid git branch name",
    "feature/.hidden": "not a valid git branch name",
    "a@{b": "not a regex (no {)",
    "a~1": "not a valid git branch name ('~')",
    "a:b": "not a valid git branch name (':')",
    "": "not a valid git branch name",
}


@pytest.mark.parametrize("branch", sorted(BAD_BRANCHES))
def test_the_shipping_branch_is_a_git_branch_name(branch: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_cicd(_chain(branch=branch).cicd, origin=CHAIN)
    end = BAD_BRANCHES[branch]
    if end.startswith("not a regex"):
        problem = f"the shipping branch is a branch name, {end}, e.g. main"
    else:
        problem = f"{end} (see git check-ref-format), e.g. main"
    assert str(raised.value) == f"{CHAIN}: cicd.branch: got {branch!r}; {problem}"


def test_a_branch_with_shell_characters_never_runs_as_code(tmp_path: pathlib.Path) -> None:
    # Valid git branch names, either the build's or the shipping one, stay values.
    evil = 'x";>pwned;"'
    steps = _steps(cloudbuild_config(_chain(branch=evil), parse_cicd(_chain(branch=evil).cicd)))
    submit = steps["submit"]
    proc = _run_step(submit, tmp_path, BRANCH_NAME="main", _SHIP_BRANCH=evil)
    assert (proc.returncode, proc.stdout) == (0, f"branch 'main' is not {evil}: submit skipped\n")
    proc = _run_step(_steps(_config())["submit"], tmp_path, BRANCH_NAME='x"||"')
    assert (proc.returncode, proc.stdout) == (0, "branch 'x\"||\"' is not main: submit skipped\n")
    proc = _run_step(submit, tmp_path, BRANCH_NAME=evil, _SHIP_BRANCH=evil)
    assert proc.returncode != 0  # the branch ships: it went on, and failed in the empty folder
    assert not (tmp_path / "pwned").exists()


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "pipelines with a command": (
        {"pipelines": "gs://b/p; touch X"},
        "cicd.pipelines: got 'gs://b/p; touch X'; 'b' is not a Cloud Storage bucket name "
        "(3-63 characters: a-z, 0-9, - _ and ., starting and ending with a letter or digit)",
    ),
    "pipelines path with a command": (
        {"pipelines": "gs://my-bucket/p;$(touch X)"},
        "cicd.pipelines: got 'gs://my-bucket/p;$(touch X)'; the folder's path holds only "
        "letters, digits, / and _ . ~ = + @ , - (no . or .. segments)",
    ),
    "pipelines bucket named google": (
        {"pipelines": "gs://google-stuff/p"},
        "cicd.pipelines: got 'gs://google-stuff/p'; 'google-stuff' is not a Cloud Storage bucket "
        "name (3-63 characters: a-z, 0-9, - _ and ., starting and ending with a letter or digit)",
    ),
    "pipelines with ..": (
        {"pipelines": "gs://my-bucket/a/../b"},
        "cicd.pipelines: got 'gs://my-bucket/a/../b'; the folder's path holds only letters, "
        "digits, / and _ . ~ = + @ , - (no . or .. segments)",
    ),
    "tag with a command": (
        {"substitutions": {"_TAG": "v1; rm -rf /"}},
        "cicd.substitutions._TAG: got 'v1; rm -rf /'; expected an image tag "
        "([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128 characters; $NAME references allowed), "
        "e.g. $SHORT_SHA",
    ),
    "substitution with a command": (
        {"substitutions": {"_ARGS": "-x; rm -rf /"}, "test_command": "make test $_ARGS"},
        "cicd.substitutions._ARGS: got '-x; rm -rf /'; a substitution's default is pasted into "
        "bash as it is: use only letters, digits, spaces, $NAME references and "
        "_ . / : = @ % + , - (not ;)",
    ),
    "substitution with a subshell": (
        {"substitutions": {"_ARGS": "$(id)`id`"}, "test_command": "make test $_ARGS"},
        "cicd.substitutions._ARGS: got '$(id)`id`'; a substitution's default is pasted into "
        "bash as it is: use only letters, digits, spaces, $NAME references and "
        "_ . / : = @ % + , - (not $ ( ) `)",
    ),
    "unused substitution": (
        {"substitutions": {"_ARGS": "-x"}},
        "cicd.substitutions._ARGS: declared but never used: write $_ARGS in test_command or "
        "install_command, or remove it (gcloud builds submit fails a build on an unused "
        "substitution)",
    ),
    "dockerfile outside the repository": (
        {"serving_dockerfile": "../Dockerfile"},
        "cicd.serving_dockerfile: got '../Dockerfile'; expected a path relative to the "
        "repository's root, inside it (no .., no $), e.g. serving/Dockerfile",
    ),
    "image name with upper case": (
        {"images": {"template": "beamforge-dataflow", "serving": "Taxi"}},
        "cicd.images.serving: got 'Taxi'; expected an image name (lower-case, no tag), "
        "e.g. taxi-predictor",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_values_pasted_into_scripts_are_checked(case: str) -> None:
    change, message = BAD_VALUES[case]
    with pytest.raises(SpecError) as raised:
        parse_cicd(_chain(**change).cicd, origin=CHAIN)
    assert str(raised.value) == f"{CHAIN}: {message}"


def test_an_upload_image_with_a_command_in_its_tag_is_refused(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "cloudbuild.yaml"
    for tag in (":latest;$(touch X)", "@sha256:abc;id"):
        data = _chain_data()
        image = f"us-docker.pkg.dev/my-project/beamforge/taxi-predictor{tag}"
        data["steps"][4]["gcp"]["image_uri"] = image
        with pytest.raises(SpecError) as raised:
            build_cloudbuild(parse_chain(data, origin=CHAIN), output=str(out))
        assert str(raised.value) == (
            f"{CHAIN}: cicd.images.serving: steps[4] (upload) serves {image!r}, whose tag or "
            "digest is not one docker accepts (a tag: [A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128 "
            "characters; a digest: sha256:HEX)"
        )
    assert not out.exists()


def test_a_missing_serving_dockerfile_is_refused(tmp_path: pathlib.Path) -> None:
    spec = _repository_chain(tmp_path, serving_dockerfile="docker/Serving.Dockerfile")
    with pytest.raises(SpecError) as raised:
        build_cloudbuild(spec, output=str(tmp_path / "cloudbuild.yaml"))
    assert str(raised.value) == (
        f"{spec.origin}: cicd.serving_dockerfile: docker/Serving.Dockerfile is not a file in "
        f"the repository ({tmp_path}); the build runs docker build --file with it at the "
        "repository's root"
    )
    assert not (tmp_path / "cloudbuild.yaml").exists()


def test_only_used_substitutions_are_declared(tmp_path: pathlib.Path) -> None:
    # No image: nothing refers to the registry's region or repository.
    data = _chain_data(images={})
    data["steps"][0]["gcp"]["launch"] = "dataflow"
    data["steps"][4]["gcp"]["image_uri"] = "us-docker.pkg.dev/my-project/other/server:1"
    spec = parse_chain(data, origin=CHAIN)
    config = cloudbuild_config(spec, parse_cicd(spec.cicd, origin=CHAIN))
    assert config["images"] == []
    assert config["substitutions"] == {"_TAG": "$SHORT_SHA", "_SHIP_BRANCH": "main"}
    validate_cloudbuild(config)


VALIDATE_FILES = {
    "no steps": ("steps: []\n", "steps: a build needs at least one step"),
    "timeout over a day": (
        "steps: [{name: ubuntu}]\ntimeout: 90000s\n",
        "timeout: '90000s' is over Cloud Build's limit of 24 hours ('86400s')",
    ),
    "repeated key": (
        "steps: [{name: ubuntu}]\ntimeout: 60s\ntimeout: 600s\n",
        "<build>: not valid YAML: line 3, column 1: found the key 'timeout' twice "
        "(while constructing a mapping)",
    ),
    "number in args": (
        "steps: [{name: ubuntu, id: a, args: [sleep, 10]}]\n",
        "steps[0] (id: a).args[1]: got 10 (int); expected text: quote it ('10')",
    ),
    "number as a key": (
        "steps: [{name: ubuntu}]\nsubstitutions: {1: x}\n",
        "substitutions: the key 1 is not text (int); quote it",
    ),
    "unused substitution": (
        "steps: [{name: ubuntu, args: [echo, $_A]}]\nsubstitutions: {_A: a, _B: b}\n",
        "substitutions._B: declared but never used; gcloud builds submit checks substitutions "
        "with MUST_MATCH and fails the build on it (remove it, or set "
        "options.substitutionOption: ALLOW_LOOSE)",
    ),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_FILES))
def test_validate_refuses_what_cloud_build_refuses(tmp_path: pathlib.Path, case: str) -> None:
    text, message = VALIDATE_FILES[case]
    path = tmp_path / "cloudbuild.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CloudBuildConfigError) as raised:
        validate_cloudbuild(path)
    assert str(raised.value) == f"{path}: {message}"


def test_validate_names_a_binary_file_and_accepts_loose_substitutions(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "cloudbuild.yaml"
    path.write_bytes(b"steps:\n\xff\xfe\x00")
    with pytest.raises(CloudBuildConfigError) as raised:
        validate_cloudbuild(path)
    assert str(raised.value) == f"{path}: <build>: is not UTF-8 text (byte 7)"
    path.write_text(
        "steps: [{name: ubuntu}]\nsubstitutions: {_B: b}\n"
        "options: {substitutionOption: ALLOW_LOOSE}\ntimeout: 86400s\n",
        encoding="utf-8",
    )
    validate_cloudbuild(path)
