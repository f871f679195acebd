"""The model directory and its scoring: pure functions, and the RunInference model handler.

A model directory (local or gs://) is what the chain's train step leaves::

    model.joblib     {"model": fitted classifier, "features": [...], "label": "tips_xf"}
    artifact/        the dataset run's transform artifact (transform.json, vocabularies/)

Beam's scikit-learn handler (``apache_beam.ml.inference.sklearn_inference``) loads a bare
pickled estimator and calls ``predict`` on stacked NumPy rows: it cannot read this bundle
(the estimator sits next to its feature order and label name), does not give the positive
class probability, and would turn every Arrow batch into per-row arrays. :class:`ModelDirHandler`
keeps whole Arrow record batches from the reader to the writer and calls ``predict_proba``
once per batch, as the prediction server does (``examples/chicago_taxi/predictor.py``):
the probability of class 1 and the label ``int(probability >= 0.5)``.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.core.errors import InputError

__all__ = [
    "ARTIFACT_DIR",
    "MODEL_FILE",
    "PROBABILITY",
    "ModelBundle",
    "ModelDirHandler",
    "check_model_dir",
    "feature_matrix",
    "load_bundle",
    "positive_probability",
]

MODEL_FILE = "model.joblib"
ARTIFACT_DIR = "artifact"
PROBABILITY = "probability"


@dataclasses.dataclass
class ModelBundle:
    """A loaded ``model.joblib``.

    Attributes:
        model: The fitted estimator (``predict_proba`` of a binary classifier).
        features: Feature columns, in the order the model was fitted on.
        label: Name of the predicted label column.
        thread_pools: The native thread pools loaded with the model (a
            ``threadpoolctl.ThreadpoolController``), to limit while it predicts.
    """

    model: Any
    features: list[str]
    label: str
    thread_pools: Any = None


def check_model_dir(model_dir: str) -> None:
    """Checks that ``model_dir`` holds ``model.joblib`` and ``artifact/transform.json``.

    Raises:
        InputError: naming what is missing.
    """
    for name in (MODEL_FILE, f"{ARTIFACT_DIR}/transform.json"):
        path = FileSystems.join(model_dir, name)
        if not FileSystems.exists(path):
            raise InputError(
                model_dir,
                f"is not a model directory: {name} is missing (a trained model directory "
                f"holds {MODEL_FILE} and {ARTIFACT_DIR}/)",
            )


def load_bundle(model_dir: str) -> ModelBundle:
    """Reads ``{model_dir}/model.joblib`` (local or gs://).

    Raises:
        InputError: if the file cannot be unpickled (truncated, not joblib) or is not a
            bundle of model, features and label.
    """
    import joblib

    path = FileSystems.join(model_dir, MODEL_FILE)
    with FileSystems.open(path, compression_type="uncompressed") as f:
        data = f.read()
    try:
        bundle = joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling garbage raises anything at all
        # The first line only: the CLI prints the problem as one line.
        reason = (str(exc).splitlines() or [""])[0]
        raise InputError(
            path,
            f"not a readable joblib model bundle ({type(exc).__name__}"
            + (f": {reason})" if reason else ")"),
        ) from None
    if not isinstance(bundle, Mapping) or not {"model", "features", "label"} <= set(bundle):
        raise InputError(path, "expected a joblib dict with keys model, features and label")
    return ModelBundle(
        model=bundle["model"], features=list(bundle["features"]), label=str(bundle["label"])
    )


def feature_matrix(batch: pa.RecordBatch, features: Sequence[str]) -> np.ndarray:
    """The model's input: ``features`` of ``batch`` as a float64 matrix (nulls are NaN)."""
    names = batch.schema.names
    columns = [
        batch.column(names.index(c)).to_numpy(zero_copy_only=False).astype(np.float64)
        for c in features
    ]
    if not columns:
        return np.empty((batch.num_rows, 0), dtype=np.float64)
    return np.column_stack(columns)


def positive_probability(model: Any, x: np.ndarray) -> np.ndarray:
    """The probability of class 1 for each row of ``x`` (an empty array for no rows)."""
    if not len(x):
        return np.empty(0, dtype=np.float64)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)


class ModelDirHandler(ModelHandler[pa.RecordBatch, PredictionResult, ModelBundle]):
    """RunInference on Arrow record batches of features with a model directory's model.

    Input elements: ``pa.RecordBatch`` carrying at least the model's feature columns (other
    columns, such as the keys, are ignored). Each output is a ``PredictionResult`` whose
    ``example`` is the batch and whose ``inference`` is the float64 array of the positive
    class probability, one per row. A few batches are scored in one ``predict_proba`` call.
    """

    def __init__(
        self, model_dir: str, *, max_batches: int = 4, model_threads: int | None = 1
    ) -> None:
        """Configures the handler; the model is loaded on the workers.

        Args:
            model_dir: The model directory (local or gs://).
            max_batches: Record batches scored together at most.
            model_threads: Threads the model's native thread pools (OpenMP, BLAS) may use
                per call; None leaves their defaults. One by default: the runner scores
                bundles in parallel already, and on a busy machine every short parallel
                region of a multi-threaded predict waits for its slowest thread (measured
                with the taxi gradient boosting model on 2 shared cores: 32k-row batches
                scored 4-5x slower with 2 OpenMP threads than with 1).
        """
        super().__init__()
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        if model_threads is not None and model_threads < 1:
            raise ValueError(f"model_threads must be >= 1 or None, got {model_threads}")
        self._model_dir = model_dir
        self._max_batches = max_batches
        self._model_threads = model_threads

    def load_model(self) -> ModelBundle:
        bundle = load_bundle(self._model_dir)
        if self._model_threads is not None:
            from threadpoolctl import ThreadpoolController

            # Found once, after the model's libraries are loaded: looking them up costs ~8 ms,
            # a limit on the found pools ~0.02 ms.
            bundle.thread_pools = ThreadpoolController()
        return bundle

    def run_inference(
        self,
        batch: Sequence[pa.RecordBatch],
        model: ModelBundle,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        x = np.concatenate([feature_matrix(b, model.features) for b in batch])
        if model.thread_pools is None:
            probabilities = positive_probability(model.model, x)
        else:
            with model.thread_pools.limit(limits=self._model_threads):
                probabilities = positive_probability(model.model, x)
        start = 0
        for b in batch:
            yield PredictionResult(b, probabilities[start : start + b.num_rows])
            start += b.num_rows

    def get_num_bytes(self, batch: Sequence[pa.RecordBatch]) -> int:
        return sum(b.nbytes for b in batch)

    def get_metrics_namespace(self) -> str:
        return "beamforge_predict"

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        # Elements are whole record batches already: group only a few of them.
        return {"min_batch_size": 1, "max_batch_size": self._max_batches}
