"""Tests for transforms.io.output_folder through acquire and run_job: an output must be a folder
of datasets, and outputs and dead-letter folders that overlap a dataset are refused."""

from __future__ import annotations

import json
import pathlib

import pytest

from beam_pipelines.dataset import run_job
from tests.conftest import TAXI_SAMPLE
from tests.test_commit import _taxi, assert_exactly_manifest
from transforms.core.errors import InputError
from transforms.io import commit


def test_output_must_be_a_folder_of_datasets(tmp_path: pathlib.Path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="--output is a file"):
        commit.acquire(str(tmp_path / "file.txt"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not a beamforge dataset \(notes.txt\)"):
        commit.acquire(str(tmp_path / "home"))
    assert (tmp_path / "home" / "notes.txt").read_text() == "mine"


def test_outputs_and_error_folders_that_overlap_a_dataset_are_refused(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    manifest = run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out)).manifest
    for nested in (out / "sub", pathlib.Path(manifest["run"]["root"]) / "nested"):
        with pytest.raises(InputError, match=f"is inside the dataset folder {out}"):
            run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(nested))
        assert not nested.exists()
    with pytest.raises(InputError, match=r"errors\.path overlaps the output"):
        run_job(_taxi(path=str(out / "errs")), inputs=[str(TAXI_SAMPLE)], output=str(out))
    with pytest.raises(InputError, match=f"errors.path is inside the dataset folder {out}"):
        run_job(_taxi(path=str(out)), inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "o2"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"errors\.path is a file"):
        run_job(_taxi(path=str(tmp_path / "file")), inputs=[str(TAXI_SAMPLE)], output=str(out))
    with pytest.raises(InputError, match=r"cannot hold any of \* \? \[ \] \{ \}"):
        run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "o[1]"))
    # An unrelated manifest.json above the output is not a dataset.
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "manifest.json").write_text('{"name": "an extension"}')
    run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(tmp_path / "project" / "ds"))
    assert_exactly_manifest(out)


def test_a_manifest_naming_anything_but_a_run_folder_deletes_nothing(tmp_path: pathlib.Path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    for run_id in (str(precious), "../precious", "run-x"):
        (out / "manifest.json").write_text(json.dumps({"run": {"id": run_id}}))
        with pytest.raises(InputError, match="is not a manifest this version of beamforge"):
            run_job(
                _taxi(path=str(tmp_path / "errors")),
                inputs=[str(TAXI_SAMPLE)],
                output=str(out),
            )
    assert (precious / "data.txt").read_text() == "keep"


def test_a_folder_in_place_of_the_manifest_is_one_line(tmp_path: pathlib.Path):
    out = tmp_path / "out"
    (out / "manifest.json").mkdir(parents=True)
    with pytest.raises(InputError, match=r"manifest\.json: is a folder"):
        run_job(_taxi(), inputs=[str(TAXI_SAMPLE)], output=str(out))
