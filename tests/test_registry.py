"""The step registry: built from each ops module's STEPS, refusing clashes, free of Beam."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import ClassVar

import pyarrow as pa
import pytest

from transforms.core.config import SpecError
from transforms.core.steps import Fitted, Step, StepResult
from transforms.ops import checks, clean, fitted_clean
from transforms.ops.registry import OPS, build_step, merge_steps


@dataclasses.dataclass(kw_only=True)
class _Echo(Step):
    op: ClassVar[str] = "cast"

    def apply(self, batch: pa.RecordBatch, fitted: Fitted | None) -> StepResult:
        return StepResult(batch)


@dataclasses.dataclass(kw_only=True)
class _Nameless(_Echo):
    op: ClassVar[str] = ""


def test_every_op_is_registered_once() -> None:
    assert sorted(OPS) == [
        "allowed_values",
        "bucketize",
        "cast",
        "clip",
        "copy",
        "cross",
        "dedupe",
        "drop_columns",
        "expression",
        "fill_missing",
        "filter",
        "hash_bucket",
        "log",
        "min_max",
        "normalize_text",
        "range",
        "regex",
        "rename",
        "required",
        "timestamp_parts",
        "vocabulary",
        "z_score",
    ]
    assert all(OPS[cls.op] is cls for cls in (*clean.STEPS, *checks.STEPS, *fitted_clean.STEPS))
    with pytest.raises(TypeError):
        OPS["extra"] = _Echo  # type: ignore[index]


def test_merge_refuses_a_clash_and_a_missing_op() -> None:
    with pytest.raises(TypeError, match=r"^op 'cast' registered twice$"):
        merge_steps([clean.STEPS, (_Echo,)])
    with pytest.raises(TypeError, match=r"^_Nameless must set op$"):
        merge_steps([(_Nameless,)])
    assert merge_steps([clean.STEPS, clean.STEPS]) == dict(merge_steps([clean.STEPS]))


def test_build_step_messages() -> None:
    with pytest.raises(SpecError) as missing:
        build_step({"columns": ["a"]}, "clean[0]")
    assert str(missing.value) == f"clean[0]: missing 'op'; valid ops are {', '.join(sorted(OPS))}"
    with pytest.raises(SpecError) as unknown:
        build_step({"op": "scrub"}, "clean[1]")
    assert str(unknown.value) == (
        f"clean[1].op: unknown op 'scrub'; valid ops are {', '.join(sorted(OPS))}"
    )
    with pytest.raises(SpecError) as not_mapping:
        build_step(["cast"], "clean[2]")
    assert str(not_mapping.value) == ("clean[2]: got ['cast']; expected a mapping with an 'op' key")
    step = build_step({"op": "required", "columns": ["a"]}, "clean[3]")
    assert step == checks.Required(columns=["a"], name="required:a")


def test_ops_import_no_beam_and_no_cloud_client() -> None:
    code = (
        "import sys\n"
        "import transforms.ops.registry, transforms.ops.stats\n"
        "print(sorted(m for m in sys.modules if m.startswith(('apache_beam', 'google.cloud.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
