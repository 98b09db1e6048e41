"""aichaos compare: the change from run A to run B, and its exit code under --max-regression."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aichaos.cli.app import app
from aichaos.errors import ExitCode
from aichaos.report.compare import check_limits, compare, parse_limit
from aichaos.report.journal import read_journal
from tests.conftest import ROOT

A = ROOT / "tests" / "fixtures" / "journal-v2" / "completed"
runner = CliRunner()


def slower(tmp_path: Path, factor: float, phase: str = "baseline", error_rate: float | None = None) -> Path:
    """Run A's journal with one phase's latencies times ``factor`` (and its error rate set)."""
    data = json.loads((A / "journal.json").read_text())
    for record in data["phases"]:
        if record["name"] == phase:
            for key in ("p50_ms", "p95_ms", "p99_ms"):
                record["metrics"][key] *= factor
            if error_rate is not None:
                record["metrics"]["error_rate"] = error_rate
    path = tmp_path / f"b-{factor}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("factor", "limit", "code"), [
    (1.05, "p95_ms=10%", ExitCode.OK),  # 5% slower: within 10%
    (1.20, "p95_ms=10%", ExitCode.GATE_FAILED),  # 20% slower: beyond it
    (1.20, "fault.p95_ms=10%", ExitCode.OK),  # the fault phase did not change
    (1.20, "baseline.p95_ms=1", ExitCode.OK),  # 2.0 ms -> 2.3 ms: within +1 ms
    (3.00, "baseline.p95_ms=1", ExitCode.GATE_FAILED),  # 2.0 ms -> 5.9 ms
    (0.50, "p95_ms=0%", ExitCode.OK),  # faster is never a regression
])
def test_compare_exits_1_only_when_b_is_worse_beyond_a_limit(tmp_path, factor, limit, code):
    result = runner.invoke(app, ["compare", str(A), str(slower(tmp_path, factor)), "--max-regression", limit])
    assert result.exit_code == code, result.output
    assert "Changes from A to B" in result.stdout
    if code == ExitCode.GATE_FAILED:
        assert "regression: baseline p95_ms: 2.0 ms -> " in result.stderr and f"beyond {limit}" in result.stderr
    else:
        assert "regression:" not in result.stderr


def test_every_limit_is_checked_and_each_regression_named(tmp_path):
    b = slower(tmp_path, 1.5, error_rate=0.02)
    result = runner.invoke(app, ["compare", str(A), str(b), "--max-regression", "p99_ms=10%",
                                 "--max-regression", "error_rate=0.01"])
    assert result.exit_code == ExitCode.GATE_FAILED
    assert "regression: baseline p99_ms" in result.stderr
    assert "regression: baseline error_rate: 0.00% -> 2.00% (+2.00 pp), beyond error_rate=0.01" in result.stderr


def test_without_limits_compare_prints_and_exits_0(tmp_path):
    result = runner.invoke(app, ["compare", str(A), str(slower(tmp_path, 3))])
    assert result.exit_code == ExitCode.OK
    assert "degradation.p50_ms[fault]" in result.stdout  # the gates of each run


@pytest.mark.parametrize(("limit", "message"), [
    ("p95_ms", "expected [PHASE.]METRIC=N% or [PHASE.]METRIC=N"),
    ("p95_ms=abc", "expected [PHASE.]METRIC=N%"),
    ("p42_ms=10%", "no metric 'p42_ms' in both runs"),
    ("nophase.p95_ms=10%", "no phase 'nophase' with p95_ms in both runs"),
])
def test_a_bad_limit_exits_2_saying_why(tmp_path, limit, message):
    result = runner.invoke(app, ["compare", str(A), str(A), "--max-regression", limit])
    assert result.exit_code == ExitCode.INVALID and message in result.stderr


def test_an_unreadable_journal_exits_2(tmp_path):
    result = runner.invoke(app, ["compare", str(A), str(tmp_path / "missing.json")])
    assert result.exit_code == ExitCode.INVALID and "no such file" in result.stderr


def test_not_recovered_in_b_is_a_regression_beyond_any_recovery_limit():
    a, b = read_journal(A), read_journal(ROOT / "tests" / "fixtures" / "journal-v2" / "aborted")
    (regression,) = check_limits(compare(a, b), [parse_limit("recovery_time=100")])
    assert regression.startswith("fault time_to_recover_s: 0.0 s in A, no value in B")
