"""Reusable Apache Beam transforms and the pure functions they wire, a package per capability.

Tabular data moves as ``pyarrow.RecordBatch`` elements. Every clean and feature step is a
pure function ``batch -> StepResult`` (see :mod:`transforms.core.steps`) that runs unchanged in
batch pipelines, streaming pipelines and at serving time.

Layers (import-linter checks them): :mod:`transforms.core` <- :mod:`transforms.ops` <-
:mod:`transforms.beam`, :mod:`transforms.io`, :mod:`transforms.streaming`,
:mod:`transforms.serving`, :mod:`transforms.tft`. ``core``, ``ops`` and ``serving`` import
neither Beam nor a cloud client.
"""

__all__ = ["beam", "core", "io", "ops", "serving", "streaming", "tft"]
