"""The core: the step contract, the batch engine and the data model, free of Beam.

Nothing here imports apache_beam or a cloud client (import-linter checks it; remote paths in
:mod:`~transforms.core.files` reach Beam's FileSystems only when one is used), so serving,
tests and tools load it in milliseconds.

- Contract: :mod:`~transforms.core.steps` (Step, Analyzer, StepResult, Rejection) and
  :mod:`~transforms.core.batch_steps` (steps over one batch, every row accounted for).
- Data model: :mod:`~transforms.core.schema` (column types), :mod:`~transforms.core.values`
  and :mod:`~transforms.core.arrow_values` (which values a column accepts),
  :mod:`~transforms.core.errors` (the one error record shape), :mod:`~transforms.core.config`
  (typed spec sections and their errors).
- Datasets: :mod:`~transforms.core.split`, :mod:`~transforms.core.hashing`,
  :mod:`~transforms.core.fingerprint`, :mod:`~transforms.core.manifest` (row accounting),
  :mod:`~transforms.core.artifact` (the transform artifact),
  :mod:`~transforms.core.dataset_folder` (following a dataset's manifest) and
  :mod:`~transforms.core.files` (whole small files by path).

Nothing is imported here: import names from their modules.
"""

__all__ = [
    "arrow_values",
    "artifact",
    "batch_steps",
    "config",
    "dataset_folder",
    "errors",
    "files",
    "fingerprint",
    "hashing",
    "manifest",
    "schema",
    "split",
    "steps",
    "values",
]
