"""A chain compiled for an orchestrator: Kubeflow Pipelines (Vertex AI Pipelines) for now.

:func:`compile_kfp` (:mod:`~launchers.chain.compile.kfp_local`) writes the pipeline file;
kfp is imported only when a chain is compiled, never when ``beamforge`` starts.
"""

from launchers.chain.compile.kfp_local import COMPILE_TARGETS, compile_kfp, pipeline_name

__all__ = ["COMPILE_TARGETS", "compile_kfp", "pipeline_name"]
