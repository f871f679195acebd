"""Champion / challenger: the new model against the one serving now, on the same eval rows.

A gate with ``champion: {deploy: NAME, margin: M}`` lets the chain go on only when the
challenger (the gate's train step's model) beats the champion (what the deploy step serves
now) by more than ``M`` on the gate's metric, as TFX's Evaluator does with a baseline model
and ``tfma.GenericChangeThreshold(direction=HIGHER_IS_BETTER, absolute=M)``.

Both values are recomputed here, never copied from a ``metrics.json``: the raw rows of the
current dataset run's eval split (read from the files its manifest lists and assigned to
splits by :func:`transforms.core.split.assign`, as the run assigned them) go through each
model's own transform artifact (the champion's vocabularies may differ from the
challenger's), then the model; the labels are the current run's (the challenger's
artifact). Rows either artifact rejects are left out of both, so both are scored on the
same rows.

Where the champion is:

- ``local``: the server the deploy step's recorded outputs name, if it answers its health
  route. It is scored through its predict route: retraining replaces the files of the model
  directory it was started from, the server holds the model it loaded.
- ``gcp``: the model with the largest traffic share on the deploy step's endpoint; its
  ``artifactUri`` (read through the Vertex SDK) is scored like the challenger's directory.

No champion (a first deployment, a server that is gone, an endpoint with no model) passes
the gate, which says so in its outputs.

Models are binary classifiers saved as ``model.joblib`` (``{"model", "features", "label"}``,
the model with ``predict_proba``) beside ``artifact/``, the layout the chain's train step
and the taxi trainer use.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import posixpath
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from launchers.chain.errors import GateFailedError

if TYPE_CHECKING:
    from launchers.chain.spec import ChainSpec, GateStep

_LOG = logging.getLogger(__name__)

# Whether a larger value is better (TFMA's MetricDirection), for the metrics recomputed here.
HIGHER_IS_BETTER: dict[str, bool] = {"auc": True, "accuracy": True, "log_loss": False}
MODEL_FILE = "model.joblib"
ARTIFACT_DIR = "artifact"
# Instances per request to a local champion server: small enough for any request limit.
_REQUEST_ROWS = 500


@dataclasses.dataclass(frozen=True)
class EvalRows:
    """The raw rows of one split of a dataset run.

    Attributes:
        batch: The rows as read (the run's input schema), in file order.
        split: The split's name.
        run: The dataset run's id.
    """

    batch: pa.RecordBatch
    split: str
    run: str


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The champion and challenger values of one metric on the same rows.

    Attributes:
        metric: The metric.
        challenger: The challenger's value.
        champion: The champion's value.
        margin: How much better the challenger must be.
        rows: The eval rows both were scored on.
    """

    metric: str
    challenger: float
    champion: float
    margin: float
    rows: int

    @property
    def improvement(self) -> float:
        """How much better the challenger is (positive: better, whatever the direction)."""
        diff = self.challenger - self.champion
        return diff if HIGHER_IS_BETTER[self.metric] else -diff

    @property
    def passed(self) -> bool:
        """Whether the challenger is better by more than the margin (TFMA's rule)."""
        return self.improvement > self.margin

    def describe(self) -> str:
        """One line: both values, the margin and the direction."""
        direction = "higher" if HIGHER_IS_BETTER[self.metric] else "lower"
        verdict = "beats" if self.passed else "does not beat"
        return (
            f"challenger {self.metric} = {self.challenger:.6g} {verdict} champion "
            f"{self.metric} = {self.champion:.6g} by more than margin {self.margin:g} "
            f"({direction} is better; {self.rows} eval rows)"
        )


def read_eval_rows(manifest: Mapping[str, Any], dataset_spec: str, split: str) -> EvalRows:
    """The raw rows a dataset run assigned to ``split``, read again from its input files.

    Args:
        manifest: The run's manifest (``manifest.json``).
        dataset_spec: The dataset step's job spec file (its source options and split).
        split: The split's name.

    Raises:
        ValueError: if the job spec changed since the run, the source is not files, or the
            run has no rows in such a split.
    """
    from beam_pipelines.spec import load_spec
    from transforms.core import split as splitting
    from transforms.core.schema import arrow_schema
    from transforms.io.read import read_file

    spec = load_spec(dataset_spec)
    if spec.sha256() != manifest["spec"]["sha256"]:
        raise ValueError(
            f"{dataset_spec} changed since the dataset run {manifest['run']['id']}: its eval "
            "rows cannot be read again"
        )
    if spec.source.bigquery is not None:
        raise ValueError("a champion comparison reads file sources only, not BigQuery")
    names = spec.split.names
    if split not in names:
        raise ValueError(f"the dataset has no split {split!r}; it has {names}")
    schema = arrow_schema(manifest["input_schema"])
    wanted = names.index(split)
    parts: list[pa.RecordBatch] = []
    for path in manifest["source"]["files"]:
        for batch, _errors in read_file(path, spec.source, schema, pipeline=spec.name):
            # Rows the run could not read were errors there too: they are in no split.
            if batch is None or not batch.num_rows:
                continue
            index, rejection = splitting.assign(batch, spec.split)
            keep = index == wanted
            if rejection is not None:
                keep &= ~np.asarray(rejection.mask, dtype=bool)
            parts.append(batch.filter(pa.array(keep)))
    table = pa.Table.from_batches(parts, schema=parts[0].schema) if parts else None
    if table is None or not table.num_rows:
        raise ValueError(f"the dataset run has no raw rows in split {split!r}")
    return EvalRows(table.combine_chunks().to_batches()[0], split, str(manifest["run"]["id"]))


@dataclasses.dataclass
class ModelDir:
    """A model directory (local or gs://): ``model.joblib`` and its ``artifact/``."""

    path: str
    model: Any = dataclasses.field(init=False)
    features: list[str] = dataclasses.field(init=False)
    label: str = dataclasses.field(init=False)
    preprocessor: Any = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        import joblib
        from apache_beam.io.filesystems import FileSystems

        from transforms.serving.preprocessor import Preprocessor

        with FileSystems.open(posixpath.join(self.path, MODEL_FILE)) as f:
            bundle = joblib.load(io.BytesIO(f.read()))
        self.model = bundle["model"]
        self.features = list(bundle["features"])
        self.label = str(bundle["label"])
        self.preprocessor = Preprocessor.load(posixpath.join(self.path, ARTIFACT_DIR))

    def accepts(self, batch: pa.RecordBatch) -> np.ndarray:
        """Which rows its artifact turns into features (a rejected or dropped row does not)."""
        out, _ = self.preprocessor.transform_batch(batch)
        if out.num_rows == batch.num_rows:
            return np.ones(batch.num_rows, dtype=bool)
        # Rare: only then is each row redone alone, to tell which ones went.
        return np.array(
            [
                self.preprocessor.transform_batch(batch.slice(i, 1))[0].num_rows == 1
                for i in range(batch.num_rows)
            ],
            dtype=bool,
        )

    def score(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Labels and positive-class probabilities of rows it accepts (all of them)."""
        out, _ = self.preprocessor.transform_batch(batch)
        if out.num_rows != batch.num_rows:
            raise RuntimeError(f"the artifact of {self.path} dropped rows it accepted")
        x = np.column_stack(
            [out.column(c).to_numpy(zero_copy_only=False) for c in self.features]
        ).astype(np.float64)
        y = out.column(self.label).to_numpy(zero_copy_only=False)
        return y, np.asarray(self.model.predict_proba(x)[:, 1], dtype=np.float64)


def server_probabilities(predict_url: str, batch: pa.RecordBatch) -> list[float | None]:
    """A local server's positive-class probability per raw row (None where it refused one).

    Raises:
        RuntimeError: if the server does not answer or answers in another shape.
    """
    from launchers.serving.request_log import EVALUATION_HEADER

    rows = batch.select([c for c in batch.schema.names if not c.startswith("__")]).to_pylist()
    found: list[float | None] = []
    for start in range(0, len(rows), _REQUEST_ROWS):
        body = json.dumps({"instances": rows[start : start + _REQUEST_ROWS]}).encode("utf-8")
        request = urllib.request.Request(
            predict_url,
            data=body,
            # Not serving traffic: the server's request log leaves these out.
            headers={"Content-Type": "application/json", EVALUATION_HEADER: "champion-gate"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                predictions = json.loads(response.read().decode("utf-8"))["predictions"]
        except (OSError, ValueError, KeyError) as exc:
            raise RuntimeError(f"the champion server {predict_url} failed: {exc}") from exc
        found.extend(None if "error" in p else float(p["probability"]) for p in predictions)
    if len(found) != len(rows):
        raise RuntimeError(f"{predict_url} answered {len(found)} of {len(rows)} rows")
    return found


def metric_value(metric: str, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """``auc``, ``accuracy`` (at 0.5) or ``log_loss`` of binary labels and probabilities.

    Raises:
        ValueError: for AUC or log loss of rows of one class only.
    """
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    labels = labels.astype(np.int64)
    if metric == "accuracy":
        return float(accuracy_score(labels, (probabilities >= 0.5).astype(np.int64)))
    if len(np.unique(labels)) != 2:
        raise ValueError(f"{metric} needs both classes in the eval rows")
    if metric == "auc":
        return float(roc_auc_score(labels, probabilities))
    return float(log_loss(labels, probabilities, labels=[0, 1]))


def compare(
    metric: str,
    rows: EvalRows,
    challenger: str,
    champion: str,
    *,
    margin: float,
    champion_is_server: bool = False,
) -> Comparison:
    """Scores both models on the rows both artifacts accept.

    Args:
        metric: ``auc``, ``accuracy`` or ``log_loss``.
        rows: The eval split's raw rows.
        challenger: The challenger's model directory.
        champion: The champion's model directory, or its server's predict URL.
        margin: How much better the challenger must be.
        champion_is_server: Whether ``champion`` is a predict URL.

    Raises:
        ValueError: if no row is accepted by both, or the rows hold one class only.
    """
    new = ModelDir(challenger)
    keep = new.accepts(rows.batch)
    old_probabilities: list[float | None] = []
    old: ModelDir | None = None
    if champion_is_server:
        old_probabilities = server_probabilities(champion, rows.batch)
        keep &= np.array([p is not None for p in old_probabilities], dtype=bool)
    else:
        old = ModelDir(champion)
        keep &= old.accepts(rows.batch)
    kept = rows.batch.filter(pa.array(keep))
    if not kept.num_rows:
        raise ValueError("no eval row is accepted by both models' artifacts")
    labels, new_p = new.score(kept)
    if old is None:
        old_p = np.array([p for p in old_probabilities if p is not None], dtype=np.float64)
    else:
        _, old_p = old.score(kept)
    return Comparison(
        metric=metric,
        challenger=metric_value(metric, labels, new_p),
        champion=metric_value(metric, labels, old_p),
        margin=margin,
        rows=int(kept.num_rows),
    )


def find_champion(chain: ChainSpec, gate: GateStep, target: str) -> tuple[str, bool] | None:
    """Where the model the gate's deploy step serves now is, or None if nothing serves.

    Returns:
        ``(predict URL, True)`` for a local server, ``(model directory, False)`` on gcp.
    """
    assert gate.champion is not None
    deploy = chain.step(gate.champion.deploy)
    if target == "gcp":
        assert deploy.gcp is not None
        uri = endpoint_champion(deploy.gcp.endpoint)
        return (uri, False) if uri else None
    from launchers.chain.state import load_state
    from launchers.serving import LocalServer, is_healthy

    state = load_state(chain.state_path(target), chain.name, target)
    recorded = state.steps.get(deploy.name)
    server = (recorded.outputs if recorded else {}).get("server")
    if not server:
        return None
    running = LocalServer.from_json(server)
    return (running.predict_url, True) if is_healthy(running) else None


def endpoint_champion(endpoint_display_name: str) -> str | None:
    """The ``artifactUri`` of the model with the largest traffic share on the endpoint.

    None if there is no such endpoint or nothing is deployed on it. Ties go to the deployed
    model listed first.
    """
    from google.cloud import aiplatform

    found = aiplatform.Endpoint.list(filter=f'display_name="{endpoint_display_name}"')
    if not found:
        return None
    endpoint = aiplatform.Endpoint(found[0].resource_name)
    deployed = list(endpoint.gca_resource.deployed_models)
    if not deployed:
        return None
    split = {k: int(v) for k, v in dict(endpoint.traffic_split).items()}
    best = max(deployed, key=lambda m: split.get(m.id, 0))
    return str(aiplatform.Model(best.model).uri)


def champion_gate(
    chain: ChainSpec, gate: GateStep, target: str, challenger_dir: str
) -> dict[str, Any]:
    """Compares the gate's challenger with the deployed champion; returns what to record.

    Raises:
        GateFailedError: if the challenger is not better by the margin (the chain stops).
    """
    from launchers.chain.handoff import read_manifest
    from launchers.chain.state import load_state

    assert gate.champion is not None
    found = find_champion(chain, gate, target)
    if found is None:
        return no_champion(gate)
    train = chain.step(gate.metrics)
    dataset = chain.step(train.dataset)
    state = load_state(chain.state_path(target), chain.name, target)
    manifest = read_manifest(state.steps[dataset.name].outputs["root"])
    return judge(gate, manifest, dataset.spec, train.splits.validation, challenger_dir, found)


def no_champion(gate: GateStep) -> dict[str, Any]:
    """What a champion gate records when nothing is deployed: it passes."""
    assert gate.champion is not None
    _LOG.info("gate %s: no champion serving; the challenger passes", gate.name)
    return {
        "champion": None,
        "margin": gate.champion.margin,
        "comparison": "no champion deployed: the challenger is the first",
    }


def judge(
    gate: GateStep,
    manifest: Mapping[str, Any],
    dataset_spec: str,
    split: str | None,
    challenger_dir: str,
    champion: tuple[str, bool],
) -> dict[str, Any]:
    """Scores challenger and champion on the run's eval rows; returns what to record.

    Args:
        gate: The gate.
        manifest: The current dataset run's manifest.
        dataset_spec: The dataset step's job spec file.
        split: The eval split (the train step's ``splits.validation``).
        challenger_dir: The challenger's model directory.
        champion: As :func:`find_champion` returns it.

    Raises:
        GateFailedError: if the challenger is not better by the margin.
    """
    assert gate.champion is not None
    if split is None:
        raise GateFailedError(gate.name, "the train step has no validation split to compare on")
    rows = read_eval_rows(manifest, dataset_spec, split)
    where, is_server = champion
    try:
        result = compare(
            gate.metric,
            rows,
            challenger_dir,
            where,
            margin=gate.champion.margin,
            champion_is_server=is_server,
        )
    except ValueError as exc:
        raise GateFailedError(gate.name, str(exc)) from None
    if not result.passed:
        raise GateFailedError(gate.name, result.describe())
    return {
        "champion": {"model": where, "value": result.champion},
        "challenger": {"model": challenger_dir, "value": result.challenger},
        "margin": gate.champion.margin,
        "eval_rows": result.rows,
        "eval_split": split,
        "comparison": result.describe(),
    }


def check_champion_settings(metric: str) -> None:
    """Raises ValueError unless the metric is one the comparison recomputes."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(
            f"a champion comparison recomputes {', '.join(HIGHER_IS_BETTER)}; "
            f"metric {metric!r} is none of them"
        )


__all__ = [
    "HIGHER_IS_BETTER",
    "Comparison",
    "EvalRows",
    "ModelDir",
    "champion_gate",
    "check_champion_settings",
    "compare",
    "endpoint_champion",
    "find_champion",
    "judge",
    "metric_value",
    "no_champion",
    "read_eval_rows",
    "server_probabilities",
]
