"""The local prediction server under load: the taxi predictor and the same model alone.

    python -m benchmarks.serving_latency [--clients 10] [--seconds 10] [--instances 1 100]

The model is trained (logistic regression, ``examples/chicago_taxi/trainer``) on the taxi
dataset run that :mod:`benchmarks.serving_vs_tft` makes in its work folder (run first if
missing). Two servers are started in turn with ``launchers.serving.start_server`` on
127.0.0.1:

- ``taxi``: :class:`~benchmarks.serving_predictors.TimedTaxiPredictor`, raw trips in (the
  CSV's rows as JSON-typed values), transform artifact, model, predictions out;
- ``features only``: :class:`~benchmarks.serving_predictors.FeaturesPredictor`, the same
  model on the feature rows of the same trips: the server's own cost.

``--clients`` threads each send requests one after another (one keep-alive connection each)
for ``--seconds``, with 1 and with 100 instances per request. Reported: p50 and p99 request
latency as the client sees it, requests/s, and the preprocessing share of a request: the
time ``preprocess`` took in the server (it answers with it) over the request's latency,
summed over all requests. Results: ``benchmarks/results/serving.json`` (key ``server``) and
the second table of ``serving.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.run import REPO, RESULTS_DIR, code_version, machine, wait_for_idle
from benchmarks.serving_vs_tft import DATA, WORK, run_pipelines, write_results

PREDICTORS = {
    "taxi": "benchmarks.serving_predictors:TimedTaxiPredictor",
    "features only": "benchmarks.serving_predictors:FeaturesPredictor",
}


def model_dir(work: Path, data: Path) -> Path:
    """A model trained on the taxi run in ``work``, with its transform artifact beside it."""
    from examples.chicago_taxi.trainer import task
    from launchers.chain import copy_artifact
    from transforms.core.dataset_folder import resolve_artifact_dir

    model = work / "model"
    if (model / "model.joblib").exists():
        return model
    artifacts = run_pipelines(data, work, fresh=False)
    run = Path(resolve_artifact_dir(str(work / "native"))).parent
    task.train(
        training_uri=str(run / "train/part-*.parquet"),
        validation_uri=str(run / "eval/part-*.parquet"),
        test_uri=None,
        model_dir=str(model),
        kind="logistic",
    )
    copy_artifact(str(artifacts["native"]), str(model))
    return model


def instances(data: Path, model: Path, count: int) -> dict[str, list[dict[str, Any]]]:
    """``count`` raw trips (JSON-typed, as a client sends them) and their feature rows."""
    import pyarrow.csv as pacsv

    from transforms.serving import Preprocessor

    preprocessor = Preprocessor.load(str(model / "artifact"))
    options = pacsv.ConvertOptions(column_types=preprocessor.input_schema)
    with data.open(newline="") as handle:
        header = next(csv.reader(handle))
    table = pacsv.read_csv(data, convert_options=options).select(header).slice(0, count)
    raw = table.to_pylist()
    features, errors = preprocessor.transform_rows(raw)
    assert not errors and len(features) == len(raw)
    return {"taxi": raw, "features only": features}


def _client(
    host: str,
    port: int,
    route: str,
    bodies: Sequence[bytes],
    until: float,
    out: list[tuple[float, float]],
) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    k = 0
    while time.perf_counter() < until:
        body = bodies[k % len(bodies)]
        k += 1
        started = time.perf_counter()
        try:
            connection.request(
                "POST", route, body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError):
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=60)
            continue
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {raw[:200]!r}")
        out.append((elapsed, float(json.loads(raw)["preprocess_s"])))
    connection.close()


def load(
    host: str, port: int, route: str, bodies: Sequence[bytes], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` threads sending ``bodies`` in turn for ``seconds``; latency figures."""
    samples: list[tuple[float, float]] = []
    # Warm up: the first requests load code paths and caches.
    _client(host, port, route, bodies, time.perf_counter() + 1.0, [])
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    threads = [
        threading.Thread(target=_client, args=(host, port, route, bodies, until, samples))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latency = np.array([s[0] for s in samples])
    preprocess = np.array([s[1] for s in samples])
    return {
        "requests": len(samples),
        "p50_ms": float(np.percentile(latency, 50) * 1e3),
        "p99_ms": float(np.percentile(latency, 99) * 1e3),
        "requests_per_s": len(samples) / wall,
        "preprocess_ms_mean": float(preprocess.mean() * 1e3),
        "preprocess_share": float(preprocess.sum() / latency.sum()),
    }


def measure_server(
    work: Path, data: Path, clients: int, seconds: float, sizes: Sequence[int]
) -> dict[str, Any]:
    """Both predictors at each request size; the results document's ``server`` part."""
    from launchers import serving

    model = model_dir(work, data)
    trips = instances(data, model, 1000)
    results: list[dict[str, Any]] = []
    for name, predictor in PREDICTORS.items():
        server = serving.start_server(
            str(model),
            predictor=predictor,
            log=str(work / f"server-{len(results)}.log"),
            timeout=120,
        )
        try:
            for size in sizes:
                bodies = [
                    json.dumps({"instances": trips[name][k : k + size]}).encode()
                    for k in range(0, len(trips[name]) - size + 1, max(size, 1))
                ][:50]
                figures = load(
                    server.host, server.port, str(server.predict_route), bodies, clients, seconds
                )
                results.append({"predictor": name, "instances": size, **figures})
                print(
                    f"{name:>13}, {size:>3} per request: p50 {figures['p50_ms']:.1f} ms, p99 "
                    f"{figures['p99_ms']:.1f} ms, {figures['requests_per_s']:.0f} requests/s, "
                    f"preprocess {figures['preprocess_share']:.1%}",
                    flush=True,
                )
        finally:
            serving.stop_server(server)
    return {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "clients": clients,
        "seconds": seconds,
        "results": results,
        "machine": machine(),
        "code": code_version(),
    }


def render_server(server: Mapping[str, Any]) -> list[str]:
    """The second table of ``serving.md``."""
    lines = [
        "## The local prediction server",
        "",
        f"`python -m benchmarks.serving_latency`: {server['clients']} clients on 127.0.0.1,"
        f" each sending requests one after another for {server['seconds']:g} s; measured"
        f" {server['measured_at']}. `taxi` is the taxi predictor (raw trips, transform artifact,"
        " model); `features only` the same model on the feature rows (the server's own cost)."
        " Preprocess share: time in `preprocess` (measured in the server) over request latency.",
        "",
        "| predictor | instances/request | p50 | p99 | requests/s | preprocess | preprocess share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in server["results"]:
        lines.append(
            f"| {row['predictor']} | {row['instances']} | {row['p50_ms']:.1f} ms |"
            f" {row['p99_ms']:.1f} ms | {row['requests_per_s']:.0f} |"
            f" {row['preprocess_ms_mean']:.2f} ms | {row['preprocess_share']:.1%} |"
        )
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, default=DATA, help="taxi CSV (header, rows)")
    parser.add_argument("--work", type=Path, default=WORK, help="pipelines' and model's folder")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0, help="load per figure")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--idle-wait", type=float, default=0.0, help="wait up to this many seconds for idle CPUs"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("NO_GCE_CHECK", "true")
    os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:1")
    os.chdir(REPO)
    busy = wait_for_idle(args.idle_wait)
    part = measure_server(args.work, args.input, args.clients, args.seconds, args.instances)
    part["busy_percent_before"] = busy
    path = write_results(args.results_dir, "server", part)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
