"""Tests for the expression language: parsing, vectorised evaluation, expression and filter."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.batch_steps import apply_steps
from transforms.core.config import SpecError
from transforms.ops.expression_eval import evaluate, evaluate_checked
from transforms.ops.expression_parser import parse
from transforms.ops.registry import build_step

BATCH = pa.record_batch(
    {
        "tips": pa.array([1.0, 0.5, None, 0.0], pa.float32()),
        "fare": pa.array([4.0, 3.0, 1.0, 10.0], pa.float32()),
        "n": pa.array([7, -7, 5, 0], pa.int64()),
        "d": pa.array([2, 2, 0, 3], pa.int64()),
        "s": ["Ab", "c", None, ""],
    }
)


def ev(text):
    return evaluate(parse(text), BATCH).to_pylist()


def test_parse_reports_columns():
    assert parse("where(tips > fare * 0.2, 1, 0) + len(s)").columns == ("fare", "s", "tips")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n + d", [9, -5, 5, 3]),
        ("n - 1", [6, -8, 4, -1]),
        ("n * d", [14, -14, 0, 0]),
        ("n / 2", [3.5, -3.5, 2.5, 0.0]),
        ("n // 2", [3, -4, 2, 0]),
        ("n % 3", [1, 2, 2, 0]),
        ("d ** 2", [4.0, 4.0, 0.0, 9.0]),
        ("-n", [-7, 7, -5, 0]),
        ("abs(n)", [7, 7, 5, 0]),
        ("1 < n < 6", [False, False, True, False]),
        ("n == 7 or d == 0", [True, False, True, False]),
        ("not n > 0", [False, True, False, True]),
        ("is_null(tips)", [False, False, True, False]),
        ("fill_null(tips, 9)", [1.0, 0.5, 9.0, 0.0]),
        ("where(n > 0, n, 0)", [7, 0, 5, 0]),
        ("lower(s) + '!'", ["ab!", "c!", None, "!"]),
        ("upper(s)", ["AB", "C", None, ""]),
        ("len(s)", [2, 1, None, 0]),
        ("cast(n, 'string')", ["7", "-7", "5", "0"]),
        ("round(n / 4, 1)", [1.8, -1.8, 1.2, 0.0]),
        ("sqrt(d)", [2**0.5, 2**0.5, 0.0, 3**0.5]),
        ("2 * 3", [6, 6, 6, 6]),
        ("True", [True, True, True, True]),
    ],
)
def test_evaluate(text, expected):
    got = ev(text)
    if isinstance(expected[0], float):
        assert got == pytest.approx(expected)
    else:
        assert got == expected


def test_three_valued_logic_and_null_propagation():
    assert ev("tips > 0.6") == [True, False, None, False]
    assert ev("tips > 0.6 or n > 0") == [True, False, True, False]
    assert ev("tips > 0.6 and n > 0") == [True, False, None, False]
    assert ev("tips > 0.6 and n > 100") == [False, False, False, False]
    assert ev("where(tips > 0.6, 1, 0)") == [1, 0, 0, 0]


def test_float32_literals_follow_the_column():
    # In float64 0.2 * 5.0 > 1.0 is False but float32(0.2) * 5 is exactly 1.0000000149.
    batch = pa.record_batch(
        {"tips": pa.array([1.0], pa.float32()), "fare": pa.array([5.0], pa.float32())}
    )
    result = evaluate(parse("fare * 0.2"), batch)
    assert result.type == pa.float32()
    assert result.to_pylist() == [float(np.float32(5.0) * np.float32(0.2))]
    assert evaluate(parse("tips > fare * 0.2"), batch).to_pylist() == [
        bool(np.float32(1.0) > np.float32(5.0) * np.float32(0.2))
    ]


def test_integer_division_by_zero_is_reported_per_row():
    result = evaluate_checked(parse("n // d"), BATCH)
    assert result.values.to_pylist() == [3, -4, None, 0]
    assert result.failed.tolist() == [False, False, True, False]
    assert result.messages[2] == "integer // by zero"
    with pytest.raises(ValueError, match=r"'n % d' failed on row 2: integer % by zero"):
        evaluate(parse("n % d"), BATCH)


def test_failed_cast_is_reported_per_row():
    result = evaluate_checked(parse("cast(s, 'int64')"), BATCH)
    assert result.failed.tolist() == [True, True, False, True]
    assert result.messages[0] == "cannot cast 'Ab' to int64"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", r"unknown function '__import__'.*functions are abs, cast"),
        ("tips.real", r"Attribute is not allowed"),
        ("[1, 2]", r"List is not allowed"),
        ("lambda: 1", r"Lambda is not allowed"),
        ("tips if n else d", r"IfExp is not allowed"),
        ("n in (1, 2)", r"comparison In is not allowed"),
        ("n & 1", r"operator BitAnd is not allowed"),
        ("where(n, 1)", r"where\(\) takes 3 arguments, got 2"),
        ("cast(n, 'decimal')", r"unknown type 'decimal'"),
        ("cast(n, d)", r"cast\(\) needs a type name string literal"),
        ("n +", r"invalid expression 'n \+'"),
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_unknown_names_list_columns_and_functions():
    with pytest.raises(ValueError, match=r"unknown name 'tip' in 'tip > 1'; columns are a, b;"):
        parse("tip > 1", columns=["a", "b", "__file"])
    with pytest.raises(ValueError, match=r"unknown name 'x' in 'x \+ 1'; columns are tips, fare"):
        evaluate(parse("x + 1"), BATCH)


def test_type_errors_are_value_errors():
    with pytest.raises(ValueError, match="cannot evaluate 's \\+ 1'"):
        evaluate(parse("s + 1"), BATCH)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=20),
    st.integers(-50, 50).filter(lambda v: v != 0),
)
def test_integer_floor_division_and_modulo_match_python(values, divisor):
    batch = pa.record_batch({"a": pa.array(values, pa.int64())})
    assert evaluate(parse(f"a // {divisor}"), batch).to_pylist() == [v // divisor for v in values]
    assert evaluate(parse(f"a % ({divisor})"), batch).to_pylist() == [v % divisor for v in values]


# --- steps ---------------------------------------------------------------------------------


def test_expression_step_computes_label():
    s = build_step(
        {"op": "expression", "output": "label", "expr": "tips > fare * 0.2", "type": "int64"},
        "steps[0]",
    )
    assert s.name == "expression:label"
    assert s.input_columns() == ["fare", "tips"] and s.output_columns() == ["label"]
    out = s.apply(BATCH, None)
    assert out.batch.schema.names == [*BATCH.schema.names, "label"]
    assert out.batch.column(5).to_pylist() == [1, 0, None, 0]
    assert out.rejections == ()


def test_expression_step_rejects_rows_it_cannot_compute():
    s = build_step({"op": "expression", "output": "q", "expr": "n // d"}, "steps[0]")
    applied = apply_steps(BATCH, [s], {}, pipeline="p")
    assert applied.batch.column(5).to_pylist() == [3, -4, 0]
    assert [(e.reason, e.message) for e in applied.errors] == [
        ("expression_failed", "'n // d': integer // by zero")
    ]


def test_expression_spec_errors_at_load():
    with pytest.raises(SpecError, match=r"steps\[3\]: unknown function 'exp'"):
        build_step({"op": "expression", "output": "y", "expr": "exp(x)"}, "steps[3]")
    with pytest.raises(SpecError, match="unknown type 'float16'"):
        build_step({"op": "expression", "output": "y", "expr": "x", "type": "float16"}, "s")


def test_filter_drop_counts_and_null_is_false():
    s = build_step({"op": "filter", "expr": "tips > 0.1", "reason": "no_tip"}, "steps[0]")
    applied = apply_steps(BATCH, [s], {}, pipeline="p")
    assert applied.batch.column(0).to_pylist() == [1.0, 0.5]
    assert applied.errors == []
    assert applied.counts == {("dropped", "filter:no_tip", "no_tip"): 2}


def test_filter_reject_sends_rows_to_errors():
    s = build_step(
        {"op": "filter", "expr": "fare < 5", "reason": "fare_too_high", "action": "reject"},
        "steps[0]",
    )
    applied = apply_steps(BATCH, [s], {}, pipeline="p")
    assert applied.batch.num_rows == 3
    assert [(e.reason, e.message) for e in applied.errors] == [
        ("fare_too_high", "'fare < 5' is not true")
    ]
    assert applied.counts == {("rejected", "filter:fare_too_high", "fare_too_high"): 1}


def test_filter_must_be_boolean():
    s = build_step({"op": "filter", "expr": "n + 1", "reason": "x"}, "s")
    with pytest.raises(ValueError, match="filter 'n \\+ 1' gives int64, not a boolean"):
        s.apply(BATCH, None)


# --- non-finite results ----------------------------------------------------------------------

NUMBERS = pa.record_batch(
    {
        "x": pa.array([1.0, 0.0, -1.0, 4.0, None], pa.float64()),
        "y": pa.array([0.0, 0.0, 2.0, 2.0, 1.0], pa.float64()),
        "big": pa.array([1e300, 1.0, 1.0, 1.0, 1.0], pa.float64()),
        "f": pa.array([1.0, float("nan"), 2.0, float("inf"), 3.0], pa.float32()),
        "n": pa.array([1, 0, 2, 3, None], pa.int64()),
        "row": pa.array([0, 1, 2, 3, 4], pa.int64()),
    }
)


def _expression(expr: str, **extra: str):
    return build_step({"op": "expression", "output": "out", "expr": expr, **extra}, "features[0]")


@pytest.mark.parametrize(
    ("expr", "rejected"),
    [
        ("x / y", [0, 1]),  # 1/0 = inf, 0/0 = nan
        ("x // y", [0, 1]),  # float floor division by zero
        ("x % y", [0, 1]),
        ("log(x)", [1, 2]),  # log(0) = -inf, log(-1) = nan
        ("sqrt(x)", [2]),
        ("big * big", [0]),  # overflow
        ("big ** 2", [0]),
        ("x ** 0.5", [2]),  # negative base, fractional exponent
        ("f + 1", [1, 3]),  # non-finite input passed through
        ("abs(f)", [1, 3]),
        ("round(-f)", [1, 3]),
    ],
)
def test_non_finite_results_are_rejected_naming_column_and_expression(expr, rejected):
    applied = apply_steps(NUMBERS, [_expression(expr)], {}, pipeline="p")
    kept_rows = applied.batch.column("row").to_pylist()
    assert sorted(set(range(NUMBERS.num_rows)) - set(kept_rows)) == rejected
    assert [e.reason for e in applied.errors] == ["non_finite"] * len(rejected)
    for error in applied.errors:
        assert error.message.startswith(f"out: expression {expr!r} gives ")
        assert error.message.endswith("not a finite number")
    kept = applied.batch.column("out").to_pylist()
    assert len(kept) == NUMBERS.num_rows - len(rejected)
    assert all(v is None or np.isfinite(v) for v in kept)


def test_non_finite_in_an_untaken_branch_or_a_comparison_is_intended():
    applied = apply_steps(NUMBERS, [_expression("where(y != 0, x / y, 0.0)")], {}, pipeline="p")
    assert applied.errors == []
    assert applied.batch.column("out").to_pylist() == [0.0, 0.0, -0.5, 2.0, None]
    # Comparisons follow IEEE 754: NaN compares false, inf > 1 is true; booleans are finite.
    flags = apply_steps(NUMBERS, [_expression("x / y > 0.5")], {}, pipeline="p")
    assert flags.errors == []
    assert flags.batch.column("out").to_pylist() == [True, False, False, True, None]
    kept = apply_steps(
        NUMBERS,
        [build_step({"op": "filter", "expr": "f > 1.5", "reason": "small"}, "s")],
        {},
        pipeline="p",
    )
    assert kept.errors == [] and kept.batch.column("f").to_pylist() == [2.0, float("inf"), 3.0]


def test_non_finite_from_a_narrowing_cast_and_integer_casts():
    # 1e300 fits float64 but not float32: the cast overflows to inf.
    applied = apply_steps(NUMBERS, [_expression("big * 2", type="float32")], {}, pipeline="p")
    assert [e.reason for e in applied.errors] == ["non_finite"]
    assert applied.errors[0].message == "out: expression 'big * 2' gives inf, not a finite number"
    # A non-finite value reaching an integer cast is a failed expression.
    failed = apply_steps(NUMBERS, [_expression("cast(x / y * 2, 'int64')")], {}, pipeline="p")
    assert [e.reason for e in failed.errors] == ["expression_failed"] * 2
    # Integer arithmetic never gives a non-finite value.
    ints = apply_steps(NUMBERS, [_expression("n * 2 + 1")], {}, pipeline="p")
    assert ints.errors == []


# --- size limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        " + ".join(["fare"] * 20_000),  # too deep for Python's parser
        "-" * 20_000 + "fare",  # too deep for Python's parser (MemoryError there)
        " and ".join(["fare > 0"] * 600),  # flat, but 1,800 nodes
        " + ".join(["fare"] * 101),  # 101 levels of nesting
        "abs(" * 120 + "fare" + ")" * 120,
    ],
)
def test_oversized_expressions_fail_at_spec_load_in_one_line(expr):
    from transforms.ops.expression_parser import MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_NODES

    assert (MAX_EXPRESSION_NODES, MAX_EXPRESSION_DEPTH) == (1_000, 100)
    with pytest.raises(SpecError) as caught:
        build_step({"op": "expression", "output": "y", "expr": expr}, "features[2]")
    message = str(caught.value)
    assert message.startswith("features[2]: expression ")
    assert "1,000 nodes" in message or "100 levels" in message
    assert "\n" not in message and len(message) < 400
    with pytest.raises(SpecError, match=r"^clean\[0\]: expression "):
        build_step({"op": "filter", "expr": expr, "reason": "r"}, "clean[0]")


def test_expressions_at_the_limits_parse_and_evaluate():
    deep = " + ".join(["fare"] * 100)  # 100 levels
    assert evaluate(parse(deep), BATCH).to_pylist() == [400.0, 300.0, 100.0, 1000.0]
    wide = " + ".join(f"({' + '.join(['fare'] * 9)})" for _ in range(40))  # 40 x 17 + 39 nodes
    assert evaluate(parse(wide), BATCH).to_pylist()[0] == 1440.0


def test_oversized_label_expression_fails_at_spec_load_through_the_cli(tmp_path):
    import yaml

    from launchers.cli import main

    spec = yaml.safe_load(
        (
            __import__("pathlib").Path(__file__).resolve().parent.parent
            / "examples/chicago_taxi/pipeline.yaml"
        ).read_text()
    )
    spec["label"]["expr"] = " + ".join(["fare"] * 20_000)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["validate", str(path)])
    assert code != 0
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}: label: expression ")
    assert "Traceback" not in err.getvalue()
