"""New data starts the chain: a Cloud Function (gen2) on a bucket's finalized objects.

``beamforge trigger build CHAIN.yaml -o DIR [--target local|gcp]`` calls
:func:`build_trigger`, which reads the chain's ``trigger:`` section
(:mod:`~launchers.trigger.spec`) and writes the function's folder
(:mod:`~launchers.trigger.build`). The function itself runs
:mod:`~launchers.trigger.runtime` without beamforge: it filters the event, records its
delivery once, and submits the compiled Vertex AI pipeline (gcp) or runs
``beamforge chain`` (local) with the object's ``gs://`` path as the trigger's parameter.
"""

from __future__ import annotations

from launchers.trigger.build import build_trigger
from launchers.trigger.spec import TARGETS, FunctionSettings, Trigger, parse_trigger

__all__ = ["TARGETS", "FunctionSettings", "Trigger", "build_trigger", "parse_trigger"]
