"""The folder watchers of the file-arrival source: each file found once, then a drain."""

from __future__ import annotations

import pathlib

from transforms.streaming.file_arrival import Found, WatchFiles, watch_events
from transforms.streaming.threaded_source import DRAIN_WATERMARK_US, Now, Watermark


def test_watch_events_find_each_file_once_and_drain_at_max_files(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.csv").write_text("x\n")
    times = iter([100.0, 101.0, 102.0])

    def sleep(_: float) -> None:
        # A new file arrives between two listings.
        (tmp_path / "b.csv").write_text("x\n")
        (tmp_path / "c.csv").write_text("x\n")

    events = list(
        watch_events(str(tmp_path / "*.csv"), max_files=2, clock=lambda: next(times), sleep=sleep)
    )
    found = [e for e in events if isinstance(e, Found)]
    assert [(pathlib.Path(f.path).name, f.timestamp_us) for f in found] == [
        ("a.csv", 100_000_000),
        ("b.csv", 101_000_000),
    ]
    assert [e for e in events if isinstance(e, Watermark)] == [
        Watermark(100_000_000),
        Watermark(101_000_000),
        Watermark(DRAIN_WATERMARK_US),
    ]
    assert [e for e in events if isinstance(e, Now)] == [Now(100_000_000), Now(101_000_000)]


def test_watch_events_drain_at_the_deadline(tmp_path: pathlib.Path) -> None:
    times = iter([10.0, 11.0, 12.0])
    events = list(
        watch_events(
            str(tmp_path / "*.csv"), deadline=11.5, clock=lambda: next(times), sleep=lambda s: None
        )
    )
    assert events[-1] == Watermark(DRAIN_WATERMARK_US)
    assert [e for e in events if isinstance(e, Watermark)][:-1] == [
        Watermark(10_000_000),
        Watermark(11_000_000),
        Watermark(12_000_000),
    ]


def test_the_splittable_watcher_emits_each_file_once(tmp_path: pathlib.Path) -> None:
    """The watcher Dataflow runs (a splittable DoFn), here on the batch local runner."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.csv").write_text("x\n")
    p = TestPipeline(runner="DirectRunner")
    paths = p | WatchFiles(pattern=str(tmp_path / "*.csv"), poll_seconds=0.1, max_files=3)
    names = paths | beam.Map(lambda path: pathlib.Path(path).name)
    assert_that(names, equal_to(["a.csv", "b.csv", "c.csv"]))
    p.run().wait_until_finish()
