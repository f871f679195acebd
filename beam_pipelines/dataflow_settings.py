"""Dataflow job settings: the typed ``dataflow:`` section of a job spec and its checks.

The spec's section is parsed into :class:`DataflowSection` when the spec loads, so
``beamforge validate`` refuses an unknown key, a wrong type or a malformed value (a project id,
a bucket, a label ...) with its YAML path. Command-line flags may give or override any key
(``--project``, ``--region``, ``--labels k=v`` ...), so the checks that need every key (the
required ones, a subnetwork or KMS key in the job's region, packaging) run on the merged
:class:`DataflowSettings` before a job is submitted (``launchers.dataflow.settings``). Either way
a bad setting fails in a second with a message naming the key and the flag instead of minutes
later in the Dataflow console.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import ClassVar

from transforms.core.config import SpecError

__all__ = [
    "DATAFLOW_RUNNER",
    "FLAGS",
    "REPO_SETUP_FILE",
    "DataflowSection",
    "DataflowSettings",
    "SettingsError",
]

DATAFLOW_RUNNER = "DataflowRunner"
REPO_SETUP_FILE = pathlib.Path(__file__).resolve().parents[1] / "setup.py"

# https://cloud.google.com/resource-manager/docs/creating-managing-projects: 6 to 30
# characters, lowercase letters, digits and hyphens, starting with a letter, not ending with
# a hyphen; legacy domain-scoped ids carry a "domain.com:" prefix.
_PROJECT = re.compile(r"^(?:[a-z0-9.-]+\.[a-z]{2,}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
# https://cloud.google.com/storage/docs/buckets#naming (dotted names may be up to 222).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_MAX_LABELS = 64
_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_EMAIL = re.compile(r"^[a-z0-9][a-z0-9._+-]*@[a-z0-9-]+(\.[a-z0-9-]+)+$")
_MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")
_NETWORK = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBNETWORK = re.compile(
    r"^(?:https://www\.googleapis\.com/compute/v1/)?(?:projects/(?P<project>[^/]+)/)?"
    r"regions/(?P<region>[^/]+)/subnetworks/(?P<name>[^/]+)$"
)
_KMS_KEY = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/keyRings/[^/]+/cryptoKeys/[^/]+$"
)
_IMAGE = re.compile(
    r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})?$"
)

# Setting -> the Beam flag that sets it, for messages and for the command-line overrides.
FLAGS = {
    "project": "--project",
    "region": "--region",
    "temp_location": "--temp_location",
    "staging_location": "--staging_location",
    "service_account": "--service_account_email",
    "network": "--network",
    "subnetwork": "--subnetwork",
    "no_public_ips": "--no_use_public_ips",
    "kms_key": "--dataflow_kms_key",
    "machine_type": "--machine_type",
    "num_workers": "--num_workers",
    "max_workers": "--max_num_workers",
    "labels": "--labels",
    "experiments": "--experiments",
    "setup_file": "--setup_file",
    "sdk_container_image": "--sdk_container_image",
    "image_has_beamforge": "--image_has_beamforge",
    "job_name": "--job_name",
}


class SettingsError(SpecError):
    """A Dataflow setting is missing or inconsistent (raised before anything is submitted)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(
            f"dataflow.{key}", f"{problem} (spec key dataflow.{key}, flag {FLAGS[key]})"
        )


@dataclasses.dataclass
class DataflowSettings:
    """A job's Dataflow settings: the spec's ``dataflow:`` section merged with Beam's flags.

    Attributes:
        project: Google Cloud project id the job runs in.
        region: Dataflow regional endpoint, e.g. ``us-central1``.
        temp_location: ``gs://`` prefix for temporary files.
        staging_location: ``gs://`` prefix for staged packages; default: the temp location.
        service_account: Worker service account email.
        network: VPC network name.
        subnetwork: ``regions/R/subnetworks/S`` (optionally ``projects/P/`` or the full
            Compute URL in front); must be in ``region``.
        no_public_ips: Workers get private IPs only (needs Private Google Access).
        kms_key: CMEK key ``projects/P/locations/L/keyRings/K/cryptoKeys/C`` in ``region``.
        machine_type: Worker machine type, e.g. ``n1-standard-4``.
        num_workers: Initial number of workers.
        max_workers: Autoscaling ceiling.
        labels: Job labels, following Google Cloud label rules.
        experiments: Dataflow experiments, e.g. ``use_runner_v2``.
        setup_file: ``setup.py`` staged for workers; default: the repository's own, so
            workers install beamforge. Not allowed with an image that has beamforge.
        sdk_container_image: Custom worker image (e.g. the Flex Template image).
        image_has_beamforge: Whether ``sdk_container_image`` already has beamforge
            installed (default true when an image is given).
        job_name: Dataflow job name; default ``{spec name}-{UTC time}``.
    """

    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    staging_location: str | None = None
    service_account: str | None = None
    network: str | None = None
    subnetwork: str | None = None
    no_public_ips: bool = False
    kms_key: str | None = None
    machine_type: str | None = None
    num_workers: int | None = None
    max_workers: int | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    experiments: list[str] = dataclasses.field(default_factory=list)
    setup_file: str | None = None
    sdk_container_image: str | None = None
    image_has_beamforge: bool | None = None
    job_name: str | None = None

    # Beam submission needs a temp location; a Flex Template launch can leave it to Dataflow.
    temp_location_required: ClassVar[bool] = True
    # False for a spec's section alone: flags may still give or override any key, so required
    # keys, checks across keys and the setup file's existence wait for the merged settings.
    complete: ClassVar[bool] = True

    def validate(self) -> None:
        """Checks every setting; raises :class:`SettingsError` on the first problem."""
        if not self.project:
            if self.complete:
                raise SettingsError("project", "required: the Google Cloud project id to run in")
        elif not _PROJECT.match(self.project):
            raise SettingsError(
                "project",
                f"{self.project!r} is not a valid project id: 6 to 30 lowercase letters, "
                "digits or hyphens, starting with a letter and not ending with a hyphen",
            )
        if not self.region:
            if self.complete:
                raise SettingsError("region", "required: the Dataflow region, e.g. us-central1")
        elif not _REGION.match(self.region):
            raise SettingsError(
                "region", f"{self.region!r} is not a region name like us-central1 or europe-west4"
            )
        if not self.temp_location and self.temp_location_required and self.complete:
            raise SettingsError(
                "temp_location", "required: a gs:// prefix for Dataflow's temporary files"
            )
        if self.temp_location is not None:
            _check_gcs("temp_location", self.temp_location)
        if self.staging_location is not None:
            _check_gcs("staging_location", self.staging_location)
        if self.service_account is not None and not _EMAIL.match(self.service_account):
            raise SettingsError(
                "service_account",
                f"{self.service_account!r} is not a service account email "
                "(NAME@PROJECT.iam.gserviceaccount.com)",
            )
        if self.network is not None and not _NETWORK.match(self.network):
            raise SettingsError(
                "network", f"{self.network!r} is not a network name (not a path or URL)"
            )
        if self.subnetwork is not None:
            self._check_subnetwork(self.subnetwork)
        if self.kms_key is not None:
            kms = _KMS_KEY.match(self.kms_key)
            if not kms:
                raise SettingsError(
                    "kms_key",
                    f"{self.kms_key!r} is not a key name "
                    "projects/P/locations/L/keyRings/R/cryptoKeys/K",
                )
            if self.complete and kms["location"] != self.region:
                raise SettingsError(
                    "kms_key",
                    f"the key is in {kms['location']!r} but the job runs in {self.region!r}; "
                    "Dataflow needs a key in the job's region",
                )
        if self.machine_type is not None and not _MACHINE_TYPE.match(self.machine_type):
            raise SettingsError(
                "machine_type", f"{self.machine_type!r} is not a machine type like n1-standard-4"
            )
        for key in ("num_workers", "max_workers"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise SettingsError(key, f"must be at least 1, got {value}")
        if (
            self.complete
            and self.num_workers is not None
            and self.max_workers is not None
            and self.num_workers > self.max_workers
        ):
            raise SettingsError(
                "num_workers",
                f"{self.num_workers} initial workers is more than max_workers={self.max_workers}",
            )
        self._check_labels()
        for i, experiment in enumerate(self.experiments):
            if not experiment or experiment != experiment.strip():
                raise SettingsError(
                    "experiments", f"item {i} is empty or has spaces: {experiment!r}"
                )
        self._check_packaging()
        if self.job_name is not None and not _JOB_NAME.match(self.job_name):
            raise SettingsError(
                "job_name",
                f"{self.job_name!r} is not a Dataflow job name: lowercase letters, digits and "
                "hyphens, starting with a letter, at most 63 characters",
            )

    def _check_subnetwork(self, subnetwork: str) -> None:
        match = _SUBNETWORK.match(subnetwork)
        if not match:
            raise SettingsError(
                "subnetwork",
                f"{subnetwork!r} is not regions/REGION/subnetworks/NAME "
                "(optionally with projects/PROJECT/ or the full Compute URL in front)",
            )
        if self.complete and match["region"] != self.region:
            raise SettingsError(
                "subnetwork",
                f"the subnetwork is in {match['region']!r} but the job runs in {self.region!r}; "
                "workers can only use a subnetwork of the job's region",
            )

    def _check_labels(self) -> None:
        if len(self.labels) > _MAX_LABELS:
            raise SettingsError(
                "labels", f"{len(self.labels)} labels; Google Cloud allows {_MAX_LABELS}"
            )
        for key, value in self.labels.items():
            if not _LABEL_KEY.match(key):
                raise SettingsError(
                    "labels",
                    f"key {key!r}: label keys are 1 to 63 lowercase letters, digits, '_' or '-', "
                    "starting with a letter",
                )
            if not isinstance(value, str) or not _LABEL_VALUE.match(value):
                raise SettingsError(
                    "labels",
                    f"value {value!r} of {key!r}: label values are up to 63 lowercase letters, "
                    "digits, '_' or '-'",
                )

    def _check_packaging(self) -> None:
        if (
            self.complete
            and self.image_has_beamforge is not None
            and self.sdk_container_image is None
        ):
            raise SettingsError(
                "image_has_beamforge", "only means something with sdk_container_image"
            )
        if self.sdk_container_image is not None:
            if not _IMAGE.match(self.sdk_container_image):
                raise SettingsError(
                    "sdk_container_image",
                    f"{self.sdk_container_image!r} is not an image reference like "
                    "REGION-docker.pkg.dev/PROJECT/REPO/NAME:TAG",
                )
            if (
                self.complete
                and self.image_has_beamforge is not False
                and self.setup_file is not None
            ):
                raise SettingsError(
                    "setup_file",
                    "sdk_container_image already has beamforge installed; staging setup.py as "
                    "well would reinstall it at worker start-up, possibly another version. "
                    "Drop setup_file, or set image_has_beamforge: false for an image without it",
                )
        if self.setup_file is not None:
            path = pathlib.Path(self.setup_file)
            if path.name != "setup.py":
                raise SettingsError(
                    "setup_file", f"{self.setup_file!r}: Beam stages a file named setup.py"
                )
            if self.complete and not path.is_file():
                raise SettingsError("setup_file", f"{self.setup_file!r} does not exist")

    @property
    def stages_package(self) -> bool:
        """Whether workers install beamforge from a staged setup.py."""
        return self.sdk_container_image is None or self.image_has_beamforge is False

    def beam_args(self, *, default_setup_file: str | None = None) -> list[str]:
        """The settings as Beam pipeline flags (``--runner=DataflowRunner`` first).

        Args:
            default_setup_file: ``setup.py`` to stage when none is set and the workers do
                not get beamforge from the image. Default: the repository's.

        Raises:
            SettingsError: if beamforge would reach the workers by no route.
        """
        args = [f"--runner={DATAFLOW_RUNNER}"]
        for key in (
            "project",
            "region",
            "temp_location",
            "staging_location",
            "service_account",
            "network",
            "subnetwork",
            "kms_key",
            "machine_type",
            "num_workers",
            "max_workers",
            "sdk_container_image",
            "job_name",
        ):
            value = getattr(self, key)
            if value is not None:
                args.append(f"{FLAGS[key]}={value}")
        if self.no_public_ips:
            args.append("--no_use_public_ips")
        args += [f"--labels={k}={v}" for k, v in sorted(self.labels.items())]
        args += [f"--experiments={e}" for e in self.experiments]
        if self.stages_package:
            setup = self.setup_file or default_setup_file or _repo_setup_file()
            args.append(f"--setup_file={setup}")
        return args


@dataclasses.dataclass
class DataflowSection(DataflowSettings):
    """The ``dataflow:`` section as a spec gives it (``JobSpec.dataflow``).

    Every key is optional: command-line flags may give or override any of them. Loading a spec
    checks the keys, their types and each value on its own (a project id, a bucket, the label
    rules ...); the required keys and the checks across keys (a subnetwork or KMS key in the
    job's region, an image and a setup file together) run on the settings merged with the flags.
    """

    complete: ClassVar[bool] = False


def _check_gcs(key: str, path: str) -> None:
    if not path.startswith("gs://"):
        raise SettingsError(key, f"{path!r} is not a gs:// path; Dataflow workers cannot use it")
    bucket = path[len("gs://") :].split("/", 1)[0]
    if not _BUCKET.match(bucket) or ".." in bucket or bucket.startswith("goog"):
        raise SettingsError(
            key,
            f"{bucket!r} is not a valid bucket name: 3 to 63 lowercase letters, digits, '-', "
            "'_' or '.', starting and ending with a letter or digit",
        )


def _repo_setup_file() -> str:
    if not REPO_SETUP_FILE.is_file():
        raise SettingsError(
            "setup_file",
            f"no setup.py at {REPO_SETUP_FILE} (beamforge is not run from its repository); "
            "give setup_file, or an sdk_container_image with beamforge installed",
        )
    return str(REPO_SETUP_FILE)
