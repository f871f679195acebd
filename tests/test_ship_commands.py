"""``beamforge trigger|cicd|serve`` on the example chain, through the CLI in a subprocess.

The modules behind them are tested in tests/test_trigger.py, tests/test_cicd.py and
tests/test_gke.py; here, what a user types: the files written for the example chain, the
one-line errors and exit codes.
"""

from __future__ import annotations

import pathlib
import subprocess

import yaml

from launchers.cicd import validate_cloudbuild
from tests.conftest import REPO, beamforge

CHAIN = REPO / "examples" / "chicago_taxi" / "chain.yaml"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return beamforge(*args, timeout=300)


def test_trigger_build_writes_the_function_for_each_target(tmp_path: pathlib.Path) -> None:
    gcp, local = tmp_path / "gcp", tmp_path / "local"
    built = _cli("trigger", "build", str(CHAIN), "-o", str(gcp))
    assert (built.returncode, built.stderr) == (0, "")
    assert built.stdout == f"{gcp}: Cloud Function of chain chicago_taxi (gcp target, 7 files)\n"
    assert sorted(p.name for p in gcp.iterdir()) == [
        # The build's record of what it wrote: a rebuild removes exactly those files.
        ".beamforge-trigger",
        "deploy.sh",
        "main.py",
        "pipeline.yaml",
        "requirements.txt",
        "serve.sh",
        "trigger.json",
        "trigger_runtime.py",
    ]
    built = _cli("trigger", "build", str(CHAIN), "-o", str(local), "--target", "local")
    assert (built.returncode, built.stderr) == (0, "")
    assert "pipeline.yaml" not in {p.name for p in local.iterdir()}


def test_cicd_build_writes_a_config_that_validates(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "cloudbuild.yaml"
    built = _cli("cicd", "build", str(CHAIN), "-o", str(out))
    assert (built.returncode, built.stderr) == (0, "")
    assert built.stdout == f"{out}: Cloud Build config of chain chicago_taxi\n"
    validate_cloudbuild(str(out))
    checked = _cli("cicd", "validate", str(out))
    assert (checked.returncode, checked.stdout) == (0, f"{out}: valid Cloud Build config\n")

    broken = yaml.safe_load(out.read_text())
    broken["steps"][1]["waitFor"] = ["no-such-step"]
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump(broken))
    refused = _cli("cicd", "validate", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {bad}: steps[1] ")
    assert "'no-such-step' is not the id of an earlier step" in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_serve_build_writes_the_image_context_and_manifests(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "serving"
    built = _cli("serve", "build", str(CHAIN), "-o", str(out))
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith(
        f"{out}: serving image and Kubernetes manifests of chain chicago_taxi ("
    )
    assert sorted(p.name for p in (out / "k8s").iterdir()) == [
        "deployment.yaml",
        "hpa.yaml",
        "service.yaml",
        "serviceaccount.yaml",
    ]
    assert (out / "Dockerfile").is_file()


def test_a_chain_without_the_section_is_one_line_and_nothing_is_written(
    tmp_path: pathlib.Path,
) -> None:
    data = yaml.safe_load(CHAIN.read_text())
    for section in ("trigger", "cicd", "serving"):
        del data[section]
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump(data, sort_keys=False))
    expected = {
        (
            "trigger",
            "DIR",
        ): "trigger: the chain has no trigger section; add one with at least bucket",
        ("cicd", "cloudbuild.yaml"): "cicd: the chain has no cicd section; add one with "
        "repository and pipelines",
        ("serve", "DIR"): "serving: the chain has no serving section (image, model, ...)",
    }
    for (command, name), problem in expected.items():
        out = tmp_path / command / name
        result = _cli(command, "build", str(chain), "-o", str(out))
        assert (result.returncode, result.stdout, result.stderr) == (
            2,
            "",
            f"error: {chain}: {problem}\n",
        )
        assert not (tmp_path / command).exists()
