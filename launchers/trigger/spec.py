"""The chain's ``trigger:`` section: which new objects start the chain, and the function.

Example::

    trigger:
      bucket: my-incoming-trips        # the bucket whose finalized objects are watched
      glob: incoming/*.csv             # and/or prefix: incoming/, suffix: .csv
      parameter: input                 # the chain parameter that gets gs://BUCKET/NAME
      records: gs://my-bucket/beamforge/trigger   # default: beside the chain's state
      function:
        name: chicago-taxi-trigger
        region: us-central1            # default: gcp.region
        service_account: trigger@my-project.iam.gserviceaccount.com
        memory: 512Mi
        timeout: 540
        max_instances: 10
        env: {LOG_LEVEL: info}

Every filter that is given must hold (an object passes if it starts with ``prefix``, ends
with ``suffix`` and matches ``glob``); a combination no object name (1024 bytes of UTF-8 at
most, no CR or LF) can pass is an error, as is a parameter the chain does not declare, and
a records folder in the watched bucket under which some name could pass the filters.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Annotated, Literal

from launchers.chain.compile import pipeline_name
from launchers.chain.spec import ChainSpec
from launchers.trigger.globs import can_end_with, can_start_with, shortest_match
from transforms.core.config import FieldError, SpecError, Within, from_mapping
from transforms.io.gcs import split_gcs_path

TARGETS = ("local", "gcp")
# GCS object names: 1024 bytes of UTF-8 at most, no carriage return or line feed.
NAME_BYTES = 1024
# Cloud Functions (gen2) names: lower-case letters, digits and dashes, 63 at most.
_FUNCTION_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_MEMORY = re.compile(r"([1-9][0-9]*)(Mi|Gi|M|G|MB|GB)")
_UNIT_BYTES = {"Mi": 2**20, "Gi": 2**30, "M": 10**6, "G": 10**9, "MB": 10**6, "GB": 10**9}
# What a gen2 function may have (Cloud Run functions' memory tiers: 128 MiB to 32 GiB).
_MEMORY_BYTES = (128 * 2**20, 32 * 2**30)
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
# A service account is named by its e-mail address (NAME@PROJECT.iam.gserviceaccount.com,
# or a Google-managed one's).
_SERVICE_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9._-]*@[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names Cloud Run sets in a function's container (the container contract and the functions'
# own), and the prefix Cloud Functions keeps for itself.
_RESERVED_ENV = frozenset(
    {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "FUNCTION_TARGET"}
    | {"FUNCTION_SIGNATURE_TYPE", "FIREBASE_CONFIG"}
)
_RESERVED_PREFIX = "X_GOOGLE_"
# GCS refuses bucket names that look like an IP address.
_IP_LIKE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


@dataclasses.dataclass
class FunctionSettings:
    """The Cloud Function (gen2) that receives the bucket's events.

    Attributes:
        name: Function name (default: the chain's name, then ``-trigger``).
        region: Where it runs (default: ``gcp.region``).
        service_account: The identity it runs as (default: ``gcp.service_account``); it
            submits pipeline runs and writes the delivery records.
        runtime: Python runtime.
        memory: Memory (``512Mi``, ``1Gi``).
        timeout: Seconds a delivery may take (an event-driven function allows 540 at most).
        max_instances: Instances at most.
        retry: Redeliver an event whose handling failed (``--retry``): a chain that could
            not be started is tried again; a repeated delivery of a started one starts
            nothing.
        env: More environment variables.
    """

    name: str | None = None
    region: str | None = None
    service_account: str | None = None
    runtime: Literal["python310", "python311", "python312", "python313"] = "python311"
    memory: str = "512Mi"
    timeout: Annotated[int, Within(1, 540, "the limit of event-driven functions")] = 540
    max_instances: Annotated[int, Within(1, 1000)] = 10
    retry: bool = False
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if self.name is not None and not _FUNCTION_NAME.fullmatch(self.name):
            raise FieldError(
                "name",
                f"{self.name!r} is not a function name (lower-case letters, digits and dashes, "
                "starting with a letter, 63 at most)",
            )
        memory = _MEMORY.fullmatch(self.memory)
        if not memory:
            raise FieldError("memory", f"got {self.memory!r}; expected a size like 512Mi or 1Gi")
        size = int(memory.group(1)) * _UNIT_BYTES[memory.group(2)]
        if not _MEMORY_BYTES[0] <= size <= _MEMORY_BYTES[1]:
            raise FieldError(
                "memory",
                f"got {self.memory!r}; a gen2 function has from 128Mi to 32Gi",
            )
        if self.region is not None:
            check_region(self.region, "region")
        if self.service_account is not None:
            check_service_account(self.service_account, "service_account")
        for key in self.env:
            if (
                not _ENV_NAME.fullmatch(key)
                or key in _RESERVED_ENV
                or key.startswith(_RESERVED_PREFIX)
            ):
                raise FieldError(
                    f"env.{key}",
                    "an environment variable name is letters, digits and _ (not starting with "
                    "a digit), and not one Cloud Functions keeps for itself",
                )


def check_region(region: str, key: str) -> None:
    """Raises FieldError at ``key`` unless ``region`` is a region's name (``us-central1``)."""
    if not _REGION.fullmatch(region):
        raise FieldError(key, f"got {region!r}; expected a region like us-central1")


def check_service_account(account: str, key: str) -> None:
    """Raises FieldError at ``key`` unless ``account`` is a service account's e-mail."""
    if len(account) > 254 or not _SERVICE_ACCOUNT.fullmatch(account):
        raise FieldError(
            key,
            f"got {account!r}; expected a service account's e-mail address like "
            "trigger@my-project.iam.gserviceaccount.com",
        )


@dataclasses.dataclass
class TriggerSection:
    """The ``trigger:`` section as written.

    Attributes:
        bucket: Bucket name (no ``gs://``).
        prefix: Object names start with this.
        suffix: Object names end with this.
        glob: Object names match this (``*`` and ``?`` within a ``/`` part, ``**`` across).
        parameter: The chain parameter that receives ``gs://BUCKET/NAME``.
        records: Where delivery records go (a folder, local or ``gs://``); default beside
            the chain's state.
        function: The function's settings.
    """

    bucket: str
    prefix: str = ""
    suffix: str = ""
    glob: str = ""
    parameter: str = "input"
    records: str | None = None
    function: FunctionSettings = dataclasses.field(default_factory=FunctionSettings)

    def validate(self) -> None:
        if self.bucket.startswith("gs://"):
            raise FieldError(
                "bucket", f"got {self.bucket!r}; give the bucket's name alone, without gs://"
            )
        try:
            split_gcs_path(f"gs://{self.bucket}/")
        except ValueError:
            raise FieldError(
                "bucket",
                f"{self.bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit)",
            ) from None
        for key in ("prefix", "suffix"):
            size = len(getattr(self, key).encode("utf-8", "surrogatepass"))
            if size > NAME_BYTES:
                raise FieldError(
                    key,
                    f"is {size} bytes of UTF-8; GCS object names are {NAME_BYTES} bytes at "
                    "most: the trigger would never fire",
                )
        for key in ("prefix", "suffix", "glob"):
            value = getattr(self, key)
            if "\r" in value or "\n" in value:
                raise FieldError(
                    key,
                    f"got {value!r}; object names hold no carriage return or line feed: the "
                    "trigger would never fire",
                )
        if _IP_LIKE.fullmatch(self.bucket):
            raise FieldError(
                "bucket", f"{self.bucket!r} looks like an IP address, which GCS refuses as a name"
            )
        if self.glob and self.prefix and not can_start_with(self.glob, self.prefix):
            raise FieldError(
                "prefix",
                f"no object name starts with {self.prefix!r} and matches glob {self.glob!r}: "
                "the trigger would never fire",
            )
        if self.glob and self.suffix and not can_end_with(self.glob, self.suffix):
            raise FieldError(
                "suffix",
                f"no object name ends with {self.suffix!r} and matches glob {self.glob!r}: "
                "the trigger would never fire",
            )
        if shortest_match(self.glob, self.prefix, self.suffix, NAME_BYTES) is None:
            raise FieldError(
                "glob" if self.glob else "suffix" if self.suffix else "prefix",
                f"no object name of at most {NAME_BYTES} bytes {_filters(self)}: the trigger "
                "would never fire",
            )


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A validated trigger, its defaults filled in for one target.

    Attributes:
        bucket: Bucket name.
        prefix: Object names start with this ('' for any).
        suffix: Object names end with this ('' for any).
        glob: Object names match this ('' for any).
        parameter: The chain parameter that receives the object's ``gs://`` path.
        records: Folder of the delivery records (local, relative to where the chain runs,
            or ``gs://``).
        target: ``local`` or ``gcp``.
        function: The function's settings, name filled in.
    """

    bucket: str
    prefix: str
    suffix: str
    glob: str
    parameter: str
    records: str
    target: str
    function: FunctionSettings


def parse_trigger(spec: ChainSpec, target: str) -> Trigger:
    """Reads and checks the chain's ``trigger:`` section for ``target``.

    Raises:
        SpecError: (naming ``spec.origin``) at ``trigger.KEY`` for an unknown key, a wrong
            type, a bad bucket or function name, region, service account, memory size or
            environment name, filters no object name can pass together, a parameter the
            chain does not declare, records kept off GCS on the gcp target or in the
            watched bucket under a prefix some name that passes the filters has;
            at ``trigger`` if the chain has none; at ``gcp`` for the gcp target without a
            gcp section; at ``<root>`` for an unknown target.
    """
    try:
        return _parse(spec, target)
    except SpecError as exc:
        raise (exc if exc.source else exc.located(spec.origin)) from None


def _parse(spec: ChainSpec, target: str) -> Trigger:
    if target not in TARGETS:
        raise SpecError("", f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if spec.trigger is None:
        raise SpecError("trigger", "the chain has no trigger section; add one with at least bucket")
    section = from_mapping(TriggerSection, spec.trigger, "trigger")
    if section.parameter not in spec.parameters:
        known = ", ".join(spec.parameters) or "none (add a parameters: section)"
        raise SpecError(
            "trigger.parameter",
            f"{section.parameter!r} is not a parameter of this chain; parameters: {known}",
        )
    if target == "gcp" and spec.gcp is None:
        raise SpecError(
            "gcp",
            "the gcp target's function submits the chain to Vertex AI Pipelines: it needs the "
            "chain's gcp section (project, region, staging_bucket)",
        )
    records = section.records or _default_records(spec, target)
    if target == "gcp" and not records.startswith("gs://"):
        raise SpecError(
            "trigger.records",
            f"got {records!r}; a Cloud Function keeps its delivery records in a gs:// folder "
            "(its own disk is gone with the instance)",
        )
    if records.startswith("gs://"):
        try:
            records_bucket, folder = split_gcs_path(records)
        except ValueError as exc:
            raise SpecError("trigger.records", str(exc)) from None
        # A record is itself a finalized object: one the filters pass would start the
        # chain again, and its own record would, without end. Every name under the records
        # folder must be one the filters refuse (the records' own names are digests).
        if records_bucket == section.bucket and _may_pass(section, folder):
            raise SpecError(
                "trigger.records",
                f"{records} is in the watched bucket and names under it can pass the filters: "
                "each record would start the chain again; keep them elsewhere or narrow the "
                "filters",
            )
    function = dataclasses.replace(
        section.function,
        name=section.function.name or _function_name(spec.name),
        region=section.function.region or (spec.gcp.region if spec.gcp else None),
        service_account=section.function.service_account
        or (spec.gcp.service_account if spec.gcp else None),
    )
    if target == "gcp" and function.region is None:
        raise SpecError("trigger.function.region", "required on the gcp target")
    # Defaults taken from the gcp section are checked as the function's own values.
    try:
        if function.region is not None:
            check_region(function.region, "region")
        if function.service_account is not None:
            check_service_account(function.service_account, "service_account")
    except FieldError as exc:
        raise SpecError(f"trigger.function.{exc.key}", exc.problem) from None
    return Trigger(
        bucket=section.bucket,
        prefix=section.prefix,
        suffix=section.suffix,
        glob=section.glob,
        parameter=section.parameter,
        records=records,
        target=target,
        function=function,
    )


def _filters(section: TriggerSection) -> str:
    parts = [
        f"starts with {section.prefix!r}" if section.prefix else "",
        f"ends with {section.suffix!r}" if section.suffix else "",
        f"matches glob {section.glob!r}" if section.glob else "",
    ]
    given = [part for part in parts if part]
    return ", ".join(given[:-1]) + " and " + given[-1] if len(given) > 1 else given[0]


def _may_pass(section: TriggerSection, folder: str) -> bool:
    """Whether a name under ``folder`` (in the watched bucket) can pass the filters."""
    under = f"{folder.rstrip('/')}/" if folder.strip("/") else ""
    if under.startswith(section.prefix):
        prefix = under
    elif section.prefix.startswith(under):
        prefix = section.prefix
    else:
        return False
    return shortest_match(section.glob, prefix, section.suffix, NAME_BYTES) is not None


def _default_records(spec: ChainSpec, target: str) -> str:
    state = spec.state_path(target)
    if target == "gcp" and not state.startswith("gs://"):
        # The chain's state is on this machine; the function's records go to the chain's
        # bucket instead.
        assert spec.gcp is not None
        return posixpath.join(spec.gcp.staging_bucket, "trigger", pipeline_name(spec.name))
    return posixpath.join(posixpath.dirname(state), "trigger")


def _function_name(chain: str) -> str:
    name = pipeline_name(chain)
    name = name if name[0].isalpha() else f"chain-{name}"
    return f"{name[:55].rstrip('-')}-trigger"
