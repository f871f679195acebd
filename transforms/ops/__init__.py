"""The ops: clean and feature steps, their analyzers, data set statistics, the step registry.

Pure code over Arrow record batches, free of Beam and of cloud clients (checked by
import-linter); the Beam passes that run them are in :mod:`transforms.beam`.

- :mod:`~transforms.ops.registry`: op name -> step class, and ``build_step``.
- Steps: :mod:`~transforms.ops.clean` (cast, normalize_text, drop_columns, rename, copy),
  :mod:`~transforms.ops.checks` (required, range, allowed_values, regex),
  :mod:`~transforms.ops.fitted_clean` (fill_missing, clip), :mod:`~transforms.ops.dedupe`,
  :mod:`~transforms.ops.expressions` (expression, filter), :mod:`~transforms.ops.features`
  (z_score, min_max, log, bucketize, vocabulary, hash_bucket, cross) and
  :mod:`~transforms.ops.time_parts` (timestamp_parts).
- Analyzers: :mod:`~transforms.ops.analyzers` (moments, value counts),
  :mod:`~transforms.ops.quantiles`, and :mod:`~transforms.ops.stats` (data set statistics).
- Building blocks: :mod:`~transforms.ops.columns`, :mod:`~transforms.ops.arrays`,
  :mod:`~transforms.ops.expression_parser`, :mod:`~transforms.ops.expression_eval`.
"""

__all__ = [
    "analyzers",
    "arrays",
    "checks",
    "clean",
    "columns",
    "dedupe",
    "expression_eval",
    "expression_parser",
    "expressions",
    "features",
    "fitted_clean",
    "quantiles",
    "registry",
    "stats",
    "time_parts",
]
