"""Chains: dataset job -> training -> evaluation gate -> model upload -> deployment.

A chain spec (YAML, :mod:`~launchers.chain.spec`) names its steps in order; each step reads
the outputs of earlier steps by name. :func:`run_chain` (:mod:`~launchers.chain.run`) runs
them on a target, ``local`` (the embedded default: local dataset run, training subprocess,
local prediction server) or ``gcp`` (Dataflow, Vertex AI), through one backend interface
(:mod:`~launchers.chain.backends`): the chain decides the order, the backend how a step is
done.

State (:mod:`~launchers.chain.state`) is written (local path or gs://) after every step. A
re-run resumes after the last completed step and never repeats a finished one; each step is
fingerprinted (:mod:`~launchers.chain.fingerprints`) from its configuration, the content of
the files it reads (the dataset spec, its inputs, the training code), the outputs of the
steps it refers to and the fingerprint of the step before it, so a changed input or spec
invalidates that step and everything downstream.

A spec's example is in :mod:`~launchers.chain.spec`; ``examples/chicago_taxi/chain.yaml``
is the whole taxi chain.
"""

from __future__ import annotations

from launchers.chain.backends import Backend, GcpBackend, LocalBackend, StepContext, backend_for
from launchers.chain.errors import ChainError, GateFailedError
from launchers.chain.fingerprints import file_fingerprints, fingerprint
from launchers.chain.handoff import copy_artifact, dataset_outputs, read_manifest, training_uris
from launchers.chain.run import ChainReport, evaluate_gate, run_chain
from launchers.chain.spec import (
    KINDS,
    TARGETS,
    ChainSpec,
    ChainStep,
    DatasetGcp,
    DatasetStep,
    DeployGcp,
    DeployStep,
    GateStep,
    GcpSettings,
    PredictGcp,
    PredictStep,
    Splits,
    TrainGcp,
    TrainStep,
    UploadGcp,
    UploadStep,
    check_target,
    load_chain,
    parse_chain,
)
from launchers.chain.state import (
    COMPLETED,
    FAILED,
    PENDING,
    STALE,
    STATE_VERSION,
    ChainState,
    StepState,
    load_state,
    save_state,
)
from launchers.chain.status import StepStatus, chain_status, format_status
from transforms.core.config import SpecError

__all__ = [
    "COMPLETED",
    "FAILED",
    "KINDS",
    "PENDING",
    "STALE",
    "STATE_VERSION",
    "TARGETS",
    "Backend",
    "ChainError",
    "ChainReport",
    "ChainSpec",
    "ChainState",
    "ChainStep",
    "DatasetGcp",
    "DatasetStep",
    "DeployGcp",
    "DeployStep",
    "GateFailedError",
    "GateStep",
    "GcpBackend",
    "GcpSettings",
    "LocalBackend",
    "PredictGcp",
    "PredictStep",
    "SpecError",
    "Splits",
    "StepContext",
    "StepState",
    "StepStatus",
    "TrainGcp",
    "TrainStep",
    "UploadGcp",
    "UploadStep",
    "backend_for",
    "chain_status",
    "check_target",
    "copy_artifact",
    "dataset_outputs",
    "evaluate_gate",
    "file_fingerprints",
    "fingerprint",
    "format_status",
    "load_chain",
    "load_state",
    "parse_chain",
    "read_manifest",
    "run_chain",
    "save_state",
    "training_uris",
]
