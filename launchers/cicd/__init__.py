"""Cloud Build for a chain: every commit tested, the shipping branch shipped.

``build_cloudbuild`` writes a chain's ``cloudbuild.yaml`` from its ``cicd:`` section;
``validate_cloudbuild`` checks any Cloud Build config offline (Cloud Build's own ``Build``
message, substitutions, step ids and ``waitFor``).
"""

from launchers.cicd.build import build_cloudbuild, cloudbuild_config
from launchers.cicd.settings import TEST_COMMAND, CicdSettings, Images, parse_cicd
from launchers.cicd.validate import BUILTINS, CloudBuildConfigError, validate_cloudbuild

__all__ = [
    "BUILTINS",
    "TEST_COMMAND",
    "CicdSettings",
    "CloudBuildConfigError",
    "Images",
    "build_cloudbuild",
    "cloudbuild_config",
    "parse_cicd",
    "validate_cloudbuild",
]
