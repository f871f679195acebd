"""The chain's ``serving:`` section: the serving image and how Kubernetes runs it.

Example (``examples/chicago_taxi/chain.yaml``)::

    serving:
      image: us-docker.pkg.dev/my-project/beamforge/taxi-predictor:latest
      model: copy                     # or gs://my-bucket/models/taxi (read at start)
      namespace: serving
      resources:
        requests: {cpu: 500m, memory: 1Gi}
        limits: {cpu: "1", memory: 2Gi}
      autoscale: {min: 1, max: 4, target_cpu: 70}
      service_account: taxi-predictor
      gcp_service_account: taxi-predictor@my-project.iam.gserviceaccount.com
      service: {type: ClusterIP, port: 80}

Keys left out are taken from the chain: the image from the upload step's
``gcp.image_uri`` (one image for GKE and Vertex AI), the predictor, port and routes from the
upload step, ``model: copy`` from the model directory the chain's local state records for
the upload step, the Google service account from ``gcp.service_account``.
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import re
from typing import Annotated, Literal

from launchers.chain.spec import ChainSpec, UploadStep
from launchers.chain.state import COMPLETED, load_state
from launchers.gke.quantities import cpu_cores, memory_bytes
from transforms.core.config import FieldError, SpecError, Within, from_mapping

__all__ = [
    "ARTIFACT_DIR",
    "Amounts",
    "Autoscale",
    "Resources",
    "Service",
    "Serving",
    "ServingSection",
    "serving_settings",
]

# The chain's train step copies the dataset's transform artifact here (launchers.chain
# handoff): a model directory without it cannot turn raw rows into features.
ARTIFACT_DIR = "artifact"
# Kubernetes names: a Service's is a DNS-1035 label (starts with a letter), a namespace's a
# DNS-1123 label, a ServiceAccount's a DNS-1123 subdomain (dots allowed, up to 253).
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_PREDICTOR = re.compile(rf"(?P<module>{_IDENTIFIER}(?:\.{_IDENTIFIER})*):(?P<cls>{_IDENTIFIER})")
# The server runs as a non-root user with every capability dropped: it cannot bind below.
_FIRST_UNPRIVILEGED_PORT = 1024
# REGISTRY[:PORT]/PATH[:TAG|@sha256:DIGEST]; a registry host has a dot (or is localhost).
_IMAGE = re.compile(
    r"(?:[a-z0-9-]+\.)+[a-z0-9-]+(?::\d+)?/[a-z0-9._/-]+(?::[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?"
    r"|localhost(?::\d+)?/[a-z0-9._/-]+(?::[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?"
)
_GCP_SERVICE_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9-]*@[a-z0-9.-]+\.gserviceaccount\.com")
_GCS_PATH = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/\S+")
# Set by beamforge from the upload step and the model: a second value would contradict it.
_RESERVED_ENV = ("AIP_", "PREDICTOR_", "HANDLER_")


@dataclasses.dataclass
class Amounts:
    """CPU and memory of one kind (requests or limits); left out: not set."""

    cpu: str | int | float | None = None
    memory: str | None = None

    def validate(self) -> None:
        if self.cpu is not None:
            # YAML reads `cpu: 1` as a number; Kubernetes takes it as a quantity string.
            self.cpu = str(self.cpu)
        for key, amount in (("cpu", cpu_cores), ("memory", memory_bytes)):
            quantity = getattr(self, key)
            if quantity is None:
                continue
            try:
                value = amount(quantity)
            except ValueError as exc:
                raise FieldError(key, str(exc)) from None
            # A zero request leaves the autoscaler no CPU use to compute, a zero limit no room.
            if value == 0:
                raise FieldError(key, f"{quantity!r} is zero; give a positive quantity")

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


class _DefaultAmounts(Amounts):
    """Amounts taken because the spec left ``requests`` or ``limits`` out (named in errors)."""


@dataclasses.dataclass
class Resources:
    """The container's resource requests and limits."""

    # Sized for the CPR server with a scikit-learn model: about 300 MB resident once loaded.
    requests: Amounts = dataclasses.field(default_factory=lambda: _DefaultAmounts("500m", "1Gi"))
    limits: Amounts = dataclasses.field(default_factory=lambda: _DefaultAmounts("1", "2Gi"))

    def validate(self) -> None:
        for key, amount in (("cpu", cpu_cores), ("memory", memory_bytes)):
            request = getattr(self.requests, key)
            limit = getattr(self.limits, key)
            if request is not None and limit is not None and amount(request) > amount(limit):
                if isinstance(self.requests, _DefaultAmounts):
                    request = f"{request} (the default request)"
                if isinstance(self.limits, _DefaultAmounts):
                    limit = f"{limit}, the default limit: give resources.limits"
                raise FieldError(f"requests.{key}", f"{request} is more than its limit ({limit})")


@dataclasses.dataclass
class Autoscale:
    """The HorizontalPodAutoscaler: replicas kept between ``min`` and ``max``."""

    min: Annotated[int, Within(1, 1000)] = 1
    max: Annotated[int, Within(1, 1000)] = 3
    target_cpu: Annotated[int, Within(1, 100, "percent of the CPU request")] = 70

    def validate(self) -> None:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max}) replicas")


@dataclasses.dataclass
class Service:
    """The Kubernetes Service in front of the pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: Annotated[int, Within(1, 65535)] = 80


@dataclasses.dataclass
class ServingSection:
    """The ``serving:`` section as written (see the module docstring for the defaults).

    Attributes:
        image: Registry path of the serving image.
        model: ``copy`` (the model directory goes into the image) or a ``gs://`` path read
            at start through ``AIP_STORAGE_URI``.
        model_dir: For ``copy``: the local model directory (default: the chain's local state).
        predictor: ``module:Class`` of the predictor (default: the upload step's).
        name: Name of the Kubernetes objects (default: the chain's name, ``_`` as ``-``).
        namespace: Kubernetes namespace.
        replicas: Replicas at first (default: ``autoscale.min``).
        resources: Requests and limits.
        autoscale: The HorizontalPodAutoscaler.
        service_account: Kubernetes service account (default: ``name``).
        gcp_service_account: Google service account the pods act as (Workload Identity).
        service: The Service's type and port.
        env: More environment for the server (over the upload step's ``gcp.env``).
    """

    image: str | None = None
    model: str | None = None
    model_dir: str | None = None
    predictor: str | None = None
    name: str | None = None
    namespace: str = "default"
    replicas: Annotated[int, Within(1, 1000)] | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    autoscale: Autoscale = dataclasses.field(default_factory=Autoscale)
    service_account: str | None = None
    gcp_service_account: str | None = None
    service: Service = dataclasses.field(default_factory=Service)
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        for key in self.env:
            if key.startswith(_RESERVED_ENV):
                raise FieldError(
                    f"env.{key}",
                    "AIP_*, PREDICTOR_* and HANDLER_* are set from the upload step and the model",
                )


@dataclasses.dataclass(frozen=True)
class Serving:
    """The serving settings, resolved against the chain.

    Attributes:
        name: Name of the Kubernetes objects.
        namespace: Kubernetes namespace.
        image: Registry path of the serving image.
        predictor: ``module:Class`` of the predictor.
        model_dir: The local model directory copied into the image (``model: copy``).
        storage_uri: The ``gs://`` model read at start (``model: gs://...``).
        port: The server's port (``AIP_HTTP_PORT``).
        predict_route: ``AIP_PREDICT_ROUTE``.
        health_route: ``AIP_HEALTH_ROUTE``.
        replicas: Replicas at first.
        resources: Requests and limits.
        autoscale: The HorizontalPodAutoscaler.
        service_account: Kubernetes service account.
        gcp_service_account: Google service account for Workload Identity, if any.
        service: The Service's type and port.
        env: More environment for the server.
    """

    name: str
    namespace: str
    image: str
    predictor: str
    model_dir: str | None
    storage_uri: str | None
    port: int
    predict_route: str
    health_route: str
    replicas: int
    resources: Resources
    autoscale: Autoscale
    service_account: str
    gcp_service_account: str | None
    service: Service
    env: dict[str, str]


def serving_settings(spec: ChainSpec) -> Serving:
    """The chain's ``serving:`` section, validated and resolved against its steps and state.

    Raises:
        SpecError: at ``serving.KEY`` (naming the chain file) for a missing section, an unknown
            key or wrong type, a value Kubernetes would refuse, or a model that cannot be found:
            no upload step and no model given, a ``copy`` model directory that does not exist
            or has no transform artifact, a chain whose local state has no model yet.
    """
    try:
        return _resolve(spec)
    except SpecError as exc:
        raise exc.located(spec.origin) from None


def _resolve(spec: ChainSpec) -> Serving:
    if spec.serving is None:
        raise SpecError("serving", "the chain has no serving section (image, model, ...)")
    section = from_mapping(ServingSection, spec.serving, "serving")
    uploads = [s for s in spec.steps if isinstance(s, UploadStep)]
    # The last upload is the model the chain ends with (the one its deploy step serves).
    upload = uploads[-1] if uploads else None
    upload_gcp = upload.gcp if upload is not None else None
    # The model first: without one, nothing else matters.
    model_dir, storage_uri = _model(spec, section, upload)

    name = section.name or spec.name.lower().replace("_", "-")
    if not _DNS_1035_LABEL.fullmatch(name):
        where = repr(name) if section.name else f"the chain name {spec.name!r}"
        raise SpecError(
            "serving.name",
            f"{where} is not a Kubernetes Service name: lower-case letters, digits and -, "
            "starting with a letter and ending with a letter or digit, up to 63 characters"
            + ("" if section.name else "; give serving.name"),
        )
    if not _DNS_LABEL.fullmatch(section.namespace):
        raise SpecError(
            "serving.namespace",
            f"{section.namespace!r} is not a Kubernetes name: lower-case letters, digits and -, "
            "up to 63 characters",
        )
    service_account = section.service_account or name
    if len(service_account) > 253 or not _DNS_SUBDOMAIN.fullmatch(service_account):
        raise SpecError(
            "serving.service_account",
            f"{service_account!r} is not a Kubernetes service account name: lower-case "
            "letters, digits, - and ., each dot-separated part starting and ending with a "
            "letter or digit, up to 253 characters",
        )
    gcp_account = section.gcp_service_account or (spec.gcp.service_account if spec.gcp else None)
    if gcp_account is not None and not _GCP_SERVICE_ACCOUNT.fullmatch(gcp_account):
        raise SpecError(
            "serving.gcp_service_account",
            f"{gcp_account!r} is not a Google service account; expected "
            "NAME@PROJECT.iam.gserviceaccount.com",
        )

    image = section.image or (upload_gcp.image_uri if upload_gcp else None)
    if image is None:
        raise SpecError(
            "serving.image",
            "no image: give image (a registry path) or the upload step's gcp.image_uri",
        )
    if not _IMAGE.fullmatch(image):
        raise SpecError(
            "serving.image",
            f"{image!r} is not a registry path; expected REGISTRY/PATH[:TAG], e.g. "
            "us-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG",
        )

    predictor = section.predictor or (upload.predictor if upload else None)
    if predictor is None:
        raise SpecError(
            "serving.predictor", "no predictor: give predictor (module:Class) or add an upload step"
        )
    upload_key = f"steps[{spec.steps.index(upload)}]" if upload is not None else ""
    _check_predictor(
        predictor, "serving.predictor" if section.predictor else f"{upload_key}.predictor"
    )
    port, predict_route, health_route = 8080, "/predict", "/health"
    if upload_gcp is not None:
        port = upload_gcp.port
        predict_route, health_route = upload_gcp.predict_route, upload_gcp.health_route
        if not _FIRST_UNPRIVILEGED_PORT <= port <= 65535:
            raise SpecError(
                f"{upload_key}.gcp.port",
                f"the server cannot listen on port {port}: it runs as a non-root user without "
                f"capabilities; give {_FIRST_UNPRIVILEGED_PORT}..65535 (the Service's port may "
                "still be 80)",
            )
        for key, route in (("predict_route", predict_route), ("health_route", health_route)):
            if not route.startswith("/") or any(c.isspace() or not c.isprintable() for c in route):
                raise SpecError(
                    f"{upload_key}.gcp.{key}",
                    f"{route!r} is not a route: it starts with / and holds no whitespace",
                )

    autoscale = section.autoscale
    replicas = section.replicas if section.replicas is not None else autoscale.min
    if not autoscale.min <= replicas <= autoscale.max:
        raise SpecError(
            "serving.replicas",
            f"{replicas} is outside the autoscaler's min..max ({autoscale.min}..{autoscale.max})",
        )
    if section.resources.requests.cpu is None:
        raise SpecError(
            "serving.resources.requests.cpu",
            "the autoscaler's target_cpu is a percent of the CPU request: give one",
        )
    env = dict(upload_gcp.env if upload_gcp else {})
    env.update(section.env)
    return Serving(
        name=name,
        namespace=section.namespace,
        image=image,
        predictor=predictor,
        model_dir=model_dir,
        storage_uri=storage_uri,
        port=port,
        predict_route=predict_route,
        health_route=health_route,
        replicas=replicas,
        resources=section.resources,
        autoscale=autoscale,
        service_account=service_account,
        gcp_service_account=gcp_account,
        service=section.service,
        env=env,
    )


def _check_predictor(predictor: str, key: str) -> None:
    """The predictor goes into the image's environment and an import: only names pass."""
    match = _PREDICTOR.fullmatch(predictor)
    names = [*match["module"].split("."), match["cls"]] if match else []
    if match is None or any(keyword.iskeyword(name) for name in names):
        raise SpecError(
            key,
            f"expected module:Class (a dotted path of Python identifiers, a colon, an "
            f"identifier), got {predictor!r}",
        )


def _model(
    spec: ChainSpec, section: ServingSection, upload: UploadStep | None
) -> tuple[str | None, str | None]:
    """(local model directory to copy, gs:// model to read at start): exactly one is set."""
    model = section.model or ("copy" if upload is not None else None)
    if model is None:
        raise SpecError(
            "serving.model",
            "no model to serve: give model (copy with model_dir, or a gs:// path) or add an "
            "upload step",
        )
    if model != "copy":
        if not _GCS_PATH.fullmatch(model):
            raise SpecError(
                "serving.model", f"expected copy or a gs://BUCKET/PATH model, got {model!r}"
            )
        if section.model_dir is not None:
            raise SpecError("serving.model_dir", "is only for model: copy")
        return None, model
    if section.model_dir is not None:
        directory, key = section.model_dir, "serving.model_dir"
        if not os.path.isdir(directory):
            raise SpecError(key, f"model directory {directory} does not exist")
    else:
        if upload is None:
            raise SpecError(
                "serving.model_dir",
                "model: copy needs model_dir: there is no upload step to take the model from",
            )
        directory, key = _state_model_dir(spec, upload), "serving.model"
    if not os.path.isdir(os.path.join(directory, ARTIFACT_DIR)):
        raise SpecError(
            key,
            f"model directory {directory} has no transform artifact ({ARTIFACT_DIR}/); the "
            "chain's train step copies it there",
        )
    return directory, None


def _state_model_dir(spec: ChainSpec, upload: UploadStep) -> str:
    """The model directory the chain's local state records for its upload step."""
    path = spec.state_path("local")
    step = load_state(path, spec.name, "local").steps.get(upload.name)
    if step is None or step.status != COMPLETED or not step.outputs.get("model_dir"):
        raise SpecError(
            "serving.model",
            f"model: copy takes the model of step {upload.name!r} from the chain's local state "
            f"({path}), which has none yet: run the chain first, or give model_dir",
        )
    directory = str(step.outputs["model_dir"])
    if not os.path.isdir(directory):
        raise SpecError(
            "serving.model",
            f"the chain's local state ({path}) names model directory {directory} for step "
            f"{upload.name!r}, which does not exist: run the chain again, or give model_dir",
        )
    return directory
