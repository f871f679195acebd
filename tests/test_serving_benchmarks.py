"""The serving benchmarks' bookkeeping: the results document and its tables."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from benchmarks import serving_latency, serving_vs_tft

TRANSFORM = {
    "measured_at": "2026-01-01T00:00:00+00:00",
    "machine": {"cpu": "test cpu"},
    "sizes": [
        {
            "rows": 1,
            "beamforge_typed_s": 0.0002,
            "beamforge_strings_s": 0.0004,
            "tft_layer_s": 0.004,
            "ratio_typed": 20.0,
            "ratio_strings": 10.0,
        },
        {
            "rows": 10000,
            "beamforge_typed_s": 0.05,
            "beamforge_strings_s": 0.07,
            "tft_layer_s": 0.014,
            "ratio_typed": 0.28,
            "ratio_strings": 0.2,
        },
    ],
    "features_compared": {
        "1": {"features": ["a_xf", "b_xf"], "max_float_difference": 1e-5, "mismatched": {}},
    },
}
SERVER = {
    "measured_at": "2026-01-01T00:01:00+00:00",
    "clients": 10,
    "seconds": 10.0,
    "results": [
        {
            "predictor": "taxi",
            "instances": 1,
            "p50_ms": 16.25,
            "p99_ms": 44.5,
            "requests_per_s": 545.4,
            "preprocess_ms_mean": 0.512,
            "preprocess_share": 0.028,
        }
    ],
}


def test_each_script_keeps_its_part_and_the_page_shows_both(tmp_path: pathlib.Path) -> None:
    serving_vs_tft.write_results(tmp_path, "transform", TRANSFORM)
    serving_vs_tft.write_results(tmp_path, "server", SERVER)
    document = json.loads((tmp_path / "serving.json").read_text())
    assert document == {"transform": TRANSFORM, "server": SERVER}
    page = (tmp_path / "serving.md").read_text().splitlines()
    assert "| 1 | 0.200 ms | 0.400 ms | 4.000 ms | 20.0x | 10.0x |" in page
    assert "| 10,000 | 50.0 ms | 70.0 ms | 14.0 ms | 0.3x | 0.2x |" in page
    assert "| taxi | 1 | 16.2 ms | 44.5 ms | 545 | 0.51 ms | 2.8% |" in page
    assert page.index("## The local prediction server") > page.index(
        "## Preprocessing a call next to tf.Transform's serving layer"
    )


def test_best_of_calls_at_least_the_repeats() -> None:
    calls: list[int] = []
    best = serving_vs_tft.best_of(lambda: calls.append(1), repeats=7, seconds=0.0)
    assert len(calls) == 8  # one warm-up call, then the repeats
    assert 0 <= best < 0.01


class _Tensor:
    def __init__(self, values: list[float]) -> None:
        self._values = np.asarray(values)

    def numpy(self) -> np.ndarray:
        return self._values


def test_features_are_compared_by_name() -> None:
    served = [{"a_xf": 1.0, "b_xf": 3}, {"a_xf": 2.5, "b_xf": 4}]
    layer = {"a_xf": _Tensor([1.0, 2.5001]), "b_xf": _Tensor([3, 5])}
    compared = serving_vs_tft.compare(served, layer)
    assert compared["features"] == ["a_xf", "b_xf"]
    assert compared["max_float_difference"] == np.float64(2.5001) - 2.5
    assert compared["mismatched"] == {"b_xf": 1}


def test_the_server_table_names_every_figure() -> None:
    lines = serving_latency.render_server(SERVER)
    assert lines[0] == "## The local prediction server"
    assert lines[-2] == "| taxi | 1 | 16.2 ms | 44.5 ms | 545 | 0.51 ms | 2.8% |"
