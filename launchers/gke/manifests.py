"""The Kubernetes manifests that run the serving image on GKE.

A ServiceAccount (annotated for Workload Identity), a Deployment (probes on the health
route, requests and limits, non-root and read-only), a Service and a HorizontalPodAutoscaler
(``autoscaling/v2``), each a plain mapping ready for YAML.
"""

from __future__ import annotations

from typing import Any

from launchers.gke.image import MODEL_DIR, SERVER_UID
from launchers.gke.settings import Serving

__all__ = ["WORKLOAD_IDENTITY_ANNOTATION", "container_env", "manifests"]

WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
_PORT_NAME = "http"


def container_env(serving: Serving) -> dict[str, str]:
    """The environment the Deployment gives the server, over the image's own.

    The ``AIP_*`` settings are repeated from the image so that the manifest says what the
    pods run with; ``env`` from the spec comes last.
    """
    env = {
        "AIP_HTTP_PORT": str(serving.port),
        "AIP_PREDICT_ROUTE": serving.predict_route,
        "AIP_HEALTH_ROUTE": serving.health_route,
        "AIP_STORAGE_URI": MODEL_DIR if serving.model_dir is not None else str(serving.storage_uri),
    }
    env.update(serving.env)
    return env


def manifests(serving: Serving) -> dict[str, dict[str, Any]]:
    """The manifests by file name: ``serviceaccount.yaml``, ``deployment.yaml``, ``service.yaml``
    and ``hpa.yaml``."""

    # Fresh mappings at each use: shared ones would come out as YAML anchors and aliases.
    def labels() -> dict[str, str]:
        return {"app.kubernetes.io/name": serving.name, "app.kubernetes.io/part-of": "beamforge"}

    def selector() -> dict[str, str]:
        return {"app.kubernetes.io/name": serving.name}

    def metadata() -> dict[str, Any]:
        return {"name": serving.name, "namespace": serving.namespace, "labels": labels()}

    account_metadata = dict(metadata(), name=serving.service_account)
    if serving.gcp_service_account:
        account_metadata["annotations"] = {
            WORKLOAD_IDENTITY_ANNOTATION: serving.gcp_service_account
        }
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": account_metadata,
    }

    def probe(period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": serving.health_route, "port": _PORT_NAME},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    container = {
        "name": "server",
        "image": serving.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": _PORT_NAME, "containerPort": serving.port, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in container_env(serving).items()],
        "resources": {
            "requests": serving.resources.requests.as_dict(),
            "limits": serving.resources.limits.as_dict(),
        },
        # Loading the model (and, for a gs:// model, downloading it) takes a while: the
        # startup probe allows 5 minutes before the liveness probe may restart the pod.
        "startupProbe": probe(period=5, failures=60),
        "readinessProbe": probe(period=10, failures=3),
        "livenessProbe": probe(period=20, failures=3),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVER_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # The only writable place: a gs:// model is downloaded to a temporary directory.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(),
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": selector()},
            # A new pod takes traffic only once ready, and an old one goes only then: as the
            # local deploy step stops the replaced server once the new one is healthy.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": serving.service_account,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(),
        "spec": {
            "type": serving.service.type,
            "selector": selector(),
            "ports": [
                {
                    "name": _PORT_NAME,
                    "port": serving.service.port,
                    "targetPort": _PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": serving.name},
            "minReplicas": serving.autoscale.min,
            "maxReplicas": serving.autoscale.max,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": serving.autoscale.target_cpu,
                        },
                    },
                }
            ],
        },
    }
    return {
        "serviceaccount.yaml": service_account,
        "deployment.yaml": deployment,
        "service.yaml": service,
        "hpa.yaml": autoscaler,
    }
