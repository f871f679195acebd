"""Every section of a spec is typed: a misspelt key or a wrong type fails `beamforge validate`.

Each message is one line with the file, the YAML path, the value and what is valid. The
``dataflow:`` section is checked like the others; the keys it may leave to command-line flags
are checked when the job is submitted (tests/test_dataflow.py).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

from beam_pipelines.spec import parse_spec
from tests.conftest import REPO
from transforms.core.config import SpecError

SOURCE = "source: {format: csv, path: in.csv, schema: {a: int64, b: string}}\n"

DATAFLOW_KEYS = (
    "project, region, temp_location, staging_location, service_account, network, subnetwork, "
    "no_public_ips, kms_key, machine_type, num_workers, max_workers, labels, experiments, "
    "setup_file, sdk_container_image, image_has_beamforge, job_name"
)


def _spec_text(section: str) -> str:
    # A spec with one section written out; a valid source unless that section is the source.
    return "name: j\n" + ("" if section.startswith("source:") else SOURCE) + section + "\n"


def _validate(spec: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launchers.cli", "validate", str(spec)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# One mistake per section (and in nested mappings), as `beamforge validate` reports it.
VALIDATE = [
    (
        "dataflow: {regon: us-central1}",
        f"dataflow.regon: unknown key 'regon'; valid keys are {DATAFLOW_KEYS}",
    ),
    ("dataflow: {max_workers: many}", "dataflow.max_workers: got 'many'; expected an integer"),
    (
        "source: {format: csv, path: in.csv, schema: {a: int64}, batchsize: 10}",
        "source.batchsize: unknown key 'batchsize'; valid keys are format, path, schema, "
        "infer_schema, csv, batch_size, bigquery, split_bytes, allow_non_finite",
    ),
    (
        "source: {format: csv, path: in.csv, schema: {a: int64}, csv: {header: maybe}}",
        "source.csv.header: got 'maybe'; expected true or false",
    ),
    ("split: {salt: [x]}", "split.salt: got ['x']; expected a string"),
    (
        "output: {bigquery: {table: p.d.t, partitioning: {colum: a}}}",
        "output.bigquery.partitioning.colum: unknown key 'colum'; valid keys are field, type",
    ),
    ("errors: {max_fraction: high}", "errors.max_fraction: got 'high'; expected a number"),
    (
        "transform: {fit: train}",
        "transform.fit: unknown key 'fit'; valid keys are artifact, fit_on, preprocessing_fn",
    ),
    ("label: {column: [a]}", "label.column: got ['a']; expected a string"),
    (
        "clean: [{op: required, colums: [a]}]",
        "clean[0].colums: unknown key 'colums'; valid keys are name, columns, empty_is_missing",
    ),
    ("clean: [{op: range, column: a, min: low}]", "clean[0].min: got 'low'; expected a number"),
]


@pytest.mark.parametrize(("text", "error"), VALIDATE)
def test_validate_refuses_a_mistake_in_any_section(
    tmp_path: pathlib.Path, text: str, error: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text(text))

    done = _validate(spec)

    assert done.returncode == 2
    assert done.stderr == f"error: {spec}: {error}\n"
    assert done.stdout == ""


# Unknown keys and wrong types in every section and nested mapping.
MISTAKES = [
    (
        "sorce: {}",
        "sorce: unknown key 'sorce'; valid keys are name, source, clean, features, label, "
        "split, output, errors, transform, validation, dataflow, streaming, description",
    ),
    (
        "validation: {schem: s.yaml}",
        "validation.schem: unknown key 'schem'; valid keys are schema, baseline, thresholds, skew",
    ),
    (
        "validation: {thresholds: {l_infinity: 1.5}}",
        "validation.thresholds.l_infinity: got 1.5; expected a number from 0.0 to 1.0",
    ),
    (
        "validation: {skew: [[train]]}",
        "validation.skew[0]: got ['train']; expected two split names, e.g. [train, eval]",
    ),
    (
        "validation: {skew: [[train, test]]}",
        "validation.skew[0]: 'test' is not a split; the splits are train, eval",
    ),
    ("validation: {baseline: 3}", "validation.baseline: got 3; expected a string"),
    ("name: [j]", "name: got ['j']; expected a string"),
    ("description: 5", "description: got 5; expected a string"),
    ("dataflow: 5", f"dataflow: got 5; expected a mapping with keys {DATAFLOW_KEYS}"),
    ("dataflow: {labels: [team]}", "dataflow.labels: got ['team']; expected mapping of str"),
    ("dataflow: {labels: {team: 5}}", "dataflow.labels.team: got 5; expected a string"),
    (
        "dataflow: {experiments: runner_v2}",
        "dataflow.experiments: got 'runner_v2'; expected list of str",
    ),
    (
        "dataflow: {no_public_ips: yes please}",
        "dataflow.no_public_ips: got 'yes please'; expected true or false",
    ),
    ("dataflow: {project: 123456}", "dataflow.project: got 123456; expected a string"),
    (
        "dataflow: {region: us-central1-a}",
        "dataflow.region: 'us-central1-a' is not a region name like us-central1 or "
        "europe-west4 (spec key dataflow.region, flag --region)",
    ),
    (
        "source: {format: csv, path: in.csv, schema: {a: int64}, batch_size: lots}",
        "source.batch_size: got 'lots'; expected an integer",
    ),
    (
        "source: {format: xml, path: in.csv, schema: {a: int64}}",
        "source.format: got 'xml'; expected one of 'csv', 'jsonl', 'parquet', 'avro', "
        "'tfrecord', 'bigquery'",
    ),
    (
        "source: {format: csv, path: in.csv, schema: {a: 5}}",
        "source.schema.a: got 5; expected a string",
    ),
    (
        "source: {format: csv, path: in.csv, schema: {a: int64}, csv: {delimter: ';'}}",
        "source.csv.delimter: unknown key 'delimter'; valid keys are delimiter, quote_char, "
        "escape_char, header, column_names, null_values, encoding, skip_rows, max_record_bytes",
    ),
    (
        "source: {format: bigquery, schema: {a: int64}, bigquery: {tabel: p.d.t}}",
        "source.bigquery.tabel: unknown key 'tabel'; valid keys are table, query, project, "
        "date_column, start, end",
    ),
    (
        "source: {format: bigquery, schema: {a: int64}, bigquery: {table: 5}}",
        "source.bigquery.table: got 5; expected a string",
    ),
    (
        "split: {fracions: {train: 1.0}}",
        "split.fracions: unknown key 'fracions'; valid keys are method, fractions, key, salt, "
        "column, cutoffs",
    ),
    ("split: {method: random}", "split.method: got 'random'; expected one of 'hash', 'time'"),
    (
        "split: {fractions: {train: half, eval: 0.5}}",
        "split.fractions.train: got 'half'; expected a number",
    ),
    (
        "output: {num_shard: 3}",
        "output.num_shard: unknown key 'num_shard'; valid keys are path, formats, num_shards, "
        "columns, bigquery",
    ),
    ("output: {num_shards: three}", "output.num_shards: got 'three'; expected an integer"),
    (
        "output: {formats: [xml]}",
        "output.formats[0]: got 'xml'; expected one of 'parquet', 'tfrecord', 'csv', 'jsonl'",
    ),
    (
        "output: {bigquery: {tabel: p.d.t}}",
        "output.bigquery.tabel: unknown key 'tabel'; valid keys are table, split_column, "
        "write, create, method, partitioning, clustering",
    ),
    (
        "errors: {pth: /tmp/e}",
        "errors.pth: unknown key 'pth'; valid keys are path, max_fraction, bigquery_table",
    ),
    ("transform: {artifact: 3}", "transform.artifact: got 3; expected a string"),
    ("label: {colum: a}", "label.colum: unknown key 'colum'; valid keys are column, expr, type"),
    ("clean: {op: required}", "clean: got {'op': 'required'}; expected list of mapping"),
    ("clean: [5]", "clean[0]: got 5; expected mapping"),
    ("clean: [{op: required, columns: a}]", "clean[0].columns: got 'a'; expected list of str"),
    (
        "features: [{op: vocabulary, column: b, top_k: many}]",
        "features[0].top_k: got 'many'; expected an integer",
    ),
    (
        "features: [{op: vocabulary, column: b, topk: 3}]",
        "features[0].topk: unknown key 'topk'; valid keys are name, column, output, top_k, "
        "frequency_threshold, num_oov_buckets, default_value",
    ),
]


@pytest.mark.parametrize(("text", "error"), MISTAKES)
def test_every_section_refuses_unknown_keys_and_wrong_types(text: str, error: str) -> None:
    data: Any = yaml.safe_load(_spec_text(text))

    with pytest.raises(SpecError) as info:
        parse_spec(data, origin="spec.yaml")

    assert str(info.value) == f"spec.yaml: {error}"


def test_a_full_dataflow_section_validates(tmp_path: pathlib.Path) -> None:
    # The section of docs/dataflow.md, without the keys a flag would give: it loads.
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        _spec_text("dataflow:") + "  region: us-central1\n"
        "  staging_location: gs://my-bucket/dataflow/staging\n"
        "  service_account: dataflow-runner@my-project.iam.gserviceaccount.com\n"
        "  network: my-vpc\n"
        "  subnetwork: regions/us-central1/subnetworks/dataflow\n"
        "  no_public_ips: true\n"
        "  kms_key: projects/my-project/locations/us-central1/keyRings/data/cryptoKeys/dataflow\n"
        "  machine_type: n2-standard-4\n"
        "  num_workers: 2\n"
        "  max_workers: 20\n"
        "  labels: {team: ml, pipeline: taxi}\n"
        "  experiments: [enable_data_sampling]\n"
    )

    done = _validate(spec)

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{spec}: valid (j: 0 steps, splits train, eval)\n"
