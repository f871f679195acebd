"""Trains a tip classifier on the taxi dataset written by the beamforge pipeline.

The script reads its inputs the way a Vertex AI CustomJob hands them over, so the same
code runs as a local subprocess and in a training container:

    AIP_TRAINING_DATA_URI     glob of the training split (Parquet part files)
    AIP_VALIDATION_DATA_URI   glob of the evaluation split (optional)
    AIP_TEST_DATA_URI         glob of the test split (optional)
    AIP_DATA_FORMAT           ``parquet``
    AIP_MODEL_DIR             where ``model.joblib`` and ``metrics.json`` go (local or gs://)

Every column but the label is a feature; the pipeline already produced numeric features
(z-scores, vocabulary ids, buckets), so no preprocessing happens here.

    python -m examples.chicago_taxi.trainer.task [--model gradient_boosting|logistic]
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import posixpath
import sys
from collections.abc import Sequence
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

MODEL_FILE = "model.joblib"
METRICS_FILE = "metrics.json"
DEFAULT_LABEL = "tips_xf"


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri.split("*", 1)[0].rsplit("/", 1)[0] + "/")[0], (
            uri.split("://", 1)[1]
        )
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def expand(uri: str) -> list[str]:
    """The files a URI or glob (``*`` in the last path segment only) names, sorted."""
    fs, path = _filesystem(uri)
    if "*" not in path and "?" not in path:
        return [path]
    folder, pattern = posixpath.split(path)
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(
        i.path for i in infos if i.is_file and fnmatch.fnmatch(posixpath.basename(i.path), pattern)
    )


def read_split(uri: str) -> pa.Table:
    """All part files of one split as one table.

    Raises:
        FileNotFoundError: if the URI names no file.
    """
    fs, _ = _filesystem(uri)
    files = expand(uri)
    if not files:
        raise FileNotFoundError(f"no data files match {uri}")
    return pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files])


def features_and_label(table: pa.Table, features: Sequence[str], label: str) -> tuple[Any, Any]:
    """The feature matrix (float64, columns in ``features`` order) and the label vector."""
    x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in features])
    y = table.column(label).to_numpy(zero_copy_only=False)
    return x.astype(np.float64), y


def make_model(kind: str, seed: int) -> Any:
    """An unfitted scikit-learn classifier of the given kind."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    raise ValueError(f"unknown model {kind!r}; expected gradient_boosting or logistic")


def evaluate(model: Any, x: Any, y: Any) -> dict[str, float]:
    """Accuracy, ROC AUC and log loss of a fitted binary classifier."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    proba = model.predict_proba(x)[:, 1]
    metrics = {"accuracy": float(accuracy_score(y, (proba >= 0.5).astype(y.dtype)))}
    # AUC needs both classes present; a tiny split may hold only one.
    if len(np.unique(y)) == 2:
        metrics["auc"] = float(roc_auc_score(y, proba))
        metrics["log_loss"] = float(log_loss(y, proba, labels=[0, 1]))
    return metrics


def _write(uri: str, data: bytes) -> None:
    fs, path = _filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)


def train(
    *,
    training_uri: str,
    validation_uri: str | None,
    test_uri: str | None,
    model_dir: str,
    label: str = DEFAULT_LABEL,
    kind: str = "gradient_boosting",
    seed: int = 0,
) -> dict[str, Any]:
    """Fits the model, writes ``model.joblib`` and ``metrics.json``; returns the metrics."""
    train_table = read_split(training_uri)
    if label not in train_table.column_names:
        raise ValueError(f"label {label!r} is not a column of {training_uri}")
    features = [c for c in train_table.column_names if c != label]
    x, y = features_and_label(train_table, features, label)
    model = make_model(kind, seed)
    model.fit(x, y)
    metrics: dict[str, Any] = {
        "model": kind,
        "label": label,
        "features": features,
        "rows": {"training": train_table.num_rows},
        "training": evaluate(model, x, y),
    }
    for name, uri in (("validation", validation_uri), ("test", test_uri)):
        if uri:
            table = read_split(uri)
            metrics["rows"][name] = table.num_rows
            metrics[name] = evaluate(model, *features_and_label(table, features, label))
    # The headline numbers a chain's gate reads: validation if there is one.
    headline = metrics.get("validation", metrics["training"])
    metrics.update({k: v for k, v in headline.items()})
    buffer = io.BytesIO()
    joblib.dump({"model": model, "features": features, "label": label}, buffer)
    _write(posixpath.join(model_dir, MODEL_FILE), buffer.getvalue())
    _write(
        posixpath.join(model_dir, METRICS_FILE),
        json.dumps(metrics, indent=2, sort_keys=True).encode(),
    )
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Reads the AIP_* environment and trains; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gradient_boosting")
    parser.add_argument("--label", default=DEFAULT_LABEL)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data_format = os.environ.get("AIP_DATA_FORMAT", "parquet")
    if data_format != "parquet":
        print(f"error: AIP_DATA_FORMAT {data_format!r} is not supported", file=sys.stderr)
        return 2
    for name in ("AIP_TRAINING_DATA_URI", "AIP_MODEL_DIR"):
        if not os.environ.get(name):
            print(f"error: {name} is not set", file=sys.stderr)
            return 2
    metrics = train(
        training_uri=os.environ["AIP_TRAINING_DATA_URI"],
        validation_uri=os.environ.get("AIP_VALIDATION_DATA_URI") or None,
        test_uri=os.environ.get("AIP_TEST_DATA_URI") or None,
        model_dir=os.environ["AIP_MODEL_DIR"],
        label=args.label,
        kind=args.model,
        seed=args.seed,
    )
    shown = {k: metrics[k] for k in ("accuracy", "auc", "log_loss") if k in metrics}
    print(f"trained {args.model} on {metrics['rows']}: {json.dumps(shown)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
