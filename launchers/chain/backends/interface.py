"""The interface every backend implements, and what it is given for a step."""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping
from typing import Any, Protocol

from launchers.chain.spec import ChainSpec, DatasetStep, DeployStep, TrainStep, UploadStep


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a backend gets for a step: the chain, and the outputs of the steps it refers to."""

    chain: ChainSpec
    target: str
    inputs: dict[str, dict[str, Any]]
    previous_outputs: dict[str, Any]

    def step_dir(self, step: Any) -> str:
        """The folder of a step's local files (logs, a local model) under the workdir."""
        return posixpath.join(self.chain.workdir, step.name)


class Backend(Protocol):
    """How each kind of step is done on one target; the chain decides the order."""

    def dataset(self, step: DatasetStep, ctx: StepContext) -> dict[str, Any]: ...
    def train(self, step: TrainStep, ctx: StepContext) -> dict[str, Any]: ...
    def upload(self, step: UploadStep, ctx: StepContext) -> dict[str, Any]: ...
    def deploy(self, step: DeployStep, ctx: StepContext) -> dict[str, Any]: ...
    def still_valid(self, step: Any, outputs: Mapping[str, Any]) -> bool: ...
