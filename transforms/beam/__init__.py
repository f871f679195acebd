"""The Beam passes that run the core's steps over whole data sets.

- :mod:`~transforms.beam.fit`: full-pass statistics of fitted steps (FitSteps, AnalyzeBatches).
- :mod:`~transforms.beam.apply`: the fitted steps over every batch (ApplySteps).
- :mod:`~transforms.beam.dedupe`: the deduplication barrier (DeduplicateBatches).
- :mod:`~transforms.beam.artifact_reload`: a streaming job's artifact, replaced while it runs
  (ApplyLatestArtifact).
- :mod:`~transforms.beam.error_handling`: one collector for every stage's error records and
  counts (ErrorCollector).

Nothing is imported here: import names from their modules.
"""

__all__ = ["apply", "artifact_reload", "dedupe", "error_handling", "fit"]
