"""Reusable Apache Beam transforms and the pure functions they wire.

Tabular data moves as ``pyarrow.RecordBatch`` elements. Every clean and feature step is a
pure function ``batch -> StepResult`` (see :mod:`transforms.core.steps`) that runs unchanged in
batch pipelines, streaming pipelines and at serving time.
"""
