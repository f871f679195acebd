"""A chain's ``predict`` step: batch scoring with a train step's model (Beam RunInference).

The step runs :func:`beam_pipelines.predict.run_predict`, what ``beamforge predict`` runs: raw
rows read as the model's dataset step reads them (its job spec's ``source`` section), the
transform artifact in the model directory, then the model; one prediction per good row with
its key columns, bad rows in the error output, a manifest that balances.

On the local target it runs on this machine; on the gcp target it runs on this machine
writing to ``gs://`` (``launch: local``) or as a Dataflow job the step waits for
(``launch: dataflow``, with the dataset spec's ``dataflow:`` settings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from launchers.chain.backends.interface import StepContext
from launchers.chain.spec import DatasetStep, PredictStep, TrainStep

__all__ = ["predict_outputs_valid", "run_predict_step"]


def _dataset_spec(step: PredictStep, ctx: StepContext) -> Any:
    """The job spec of the dataset step the model was trained on: how raw rows are read."""
    from beam_pipelines.spec import load_spec

    train = ctx.chain.step(step.model)
    assert isinstance(train, TrainStep)
    dataset = ctx.chain.step(train.dataset)
    assert isinstance(dataset, DatasetStep)
    return load_spec(dataset.spec)


def run_predict_step(
    step: PredictStep, ctx: StepContext, *, dataflow_api_endpoint: str | None = None
) -> dict[str, Any]:
    """Scores the step's inputs with the model of the train step it names.

    Args:
        step: The predict step.
        ctx: The chain, the target and the train step's outputs (``model_dir``).
        dataflow_api_endpoint: Dataflow API endpoint override (gcp target, ``launch:
            dataflow``), where the step polls the job.

    Returns:
        The step's outputs: the committed ``manifest`` path, the output, the ``counts``
        (read, written, rejected, dropped) and the run id.

    Raises:
        InputError: for inputs, keys or an output the run cannot use (one line).
        RuntimeError: when the Dataflow job does not finish.
    """
    from beam_pipelines.predict import run_predict

    spec = _dataset_spec(step, ctx)
    output, errors, beam_args = step.output, step.errors, list(step.beam_args)
    dataflow = False
    if ctx.target == "gcp":
        gcp = step.gcp
        assert gcp is not None, "check_target requires the gcp section"
        output, errors, beam_args = gcp.output, gcp.errors, list(gcp.beam_args)
        dataflow = gcp.launch == "dataflow"
        if dataflow:
            beam_args = _dataflow_args(spec, f"{ctx.chain.name}-{step.name}", beam_args)
    result = run_predict(
        str(ctx.inputs[step.model]["model_dir"]),
        step.inputs,
        output,
        source=spec.source if spec.source.bigquery is None else None,
        keys=step.keys,
        output_format=step.format,
        run_folder=errors,
        beam_args=beam_args,
    )
    if not dataflow:
        return _outputs(output, result.manifest_path, result.manifest)
    from launchers.dataflow import jobs

    # The job commits its own manifest as its last step: the chain goes on only once it has.
    chain_gcp, gcp = ctx.chain.gcp, step.gcp
    assert chain_gcp is not None and gcp is not None
    jobs.wait_for_job(
        jobs.jobs_client(api_endpoint=dataflow_api_endpoint),
        jobs.JobRef(chain_gcp.project, chain_gcp.region, result.pipeline_result.job_id()),
        timeout=gcp.timeout,
    )
    return _outputs(output, result.manifest_path, _read_json(result.manifest_path))


def _dataflow_args(spec: Any, name: str, beam_args: list[str]) -> list[str]:
    """Beam arguments for the Dataflow job: the dataset spec's ``dataflow:`` settings first."""
    from launchers.dataflow.settings import DataflowSettings, default_job_name, resolve_settings

    settings: DataflowSettings
    settings, rest = resolve_settings(spec.dataflow, beam_args)
    args = settings.beam_args()
    if settings.job_name is None:
        args.append(f"--job_name={default_job_name(name.lower().replace('_', '-'))}")
    return [*args, *rest]


def _outputs(output: str, manifest_path: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    run = manifest.get("run", {})
    return {
        "output": output,
        "manifest": manifest_path,
        "run": run.get("id") if isinstance(run, Mapping) else None,
        "counts": dict(manifest.get("counts", {})),
    }


def _read_json(path: str) -> dict[str, Any]:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return dict(json.loads(f.read().decode("utf-8")))


def predict_outputs_valid(outputs: Mapping[str, Any]) -> bool:
    """Whether the predictions a step recorded are still the ones its manifest publishes.

    A later run into the same output (another chain, ``beamforge predict``) replaces them.
    """
    from apache_beam.io.filesystems import FileSystems

    path = outputs.get("manifest")
    if not isinstance(path, str) or not FileSystems.exists(path):
        return False
    run = _read_json(path).get("run", {})
    return isinstance(run, Mapping) and run.get("id") == outputs.get("run")
