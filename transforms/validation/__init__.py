"""Data validation: schema, anomalies, drift and skew over ``stats.json`` statistics.

Pure code, free of Beam and of cloud clients (checked by import-linter), with the
measures of TensorFlow Data Validation so that the numbers agree with TFDV's.

- :mod:`~transforms.validation.distances`: L-infinity and Jensen-Shannon distances, and
  ``column_distance`` (one column against its baseline).
- :mod:`~transforms.validation.schema`: the YAML data schema users edit; parsing, writing
  and inferring it from statistics.
- :mod:`~transforms.validation.anomalies`: statistics checked against a schema.
- :mod:`~transforms.validation.result`: ``validate``, the content of ``validation.json``.
"""

__all__ = ["anomalies", "distances", "result", "schema"]
