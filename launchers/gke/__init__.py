"""The prediction server in a container: one image for GKE and Vertex AI, and its manifests.

``beamforge serve build CHAIN.yaml -o DIR`` reads the chain's ``serving:`` section
(:mod:`~launchers.gke.settings`) and writes the image's build context with a Dockerfile
(:mod:`~launchers.gke.image`) whose command is the local target's server command line, and
the Kubernetes manifests that run it (:mod:`~launchers.gke.manifests`): ServiceAccount with
Workload Identity's annotation, Deployment, Service and HorizontalPodAutoscaler.
"""

from __future__ import annotations

from launchers.gke.build import K8S_DIR, MARKER, build_serving
from launchers.gke.image import SERVER_COMMAND, dockerfile, source_files
from launchers.gke.manifests import WORKLOAD_IDENTITY_ANNOTATION, container_env, manifests
from launchers.gke.settings import Serving, ServingSection, serving_settings

__all__ = [
    "K8S_DIR",
    "MARKER",
    "SERVER_COMMAND",
    "WORKLOAD_IDENTITY_ANNOTATION",
    "Serving",
    "ServingSection",
    "build_serving",
    "container_env",
    "dockerfile",
    "manifests",
    "serving_settings",
    "source_files",
]
