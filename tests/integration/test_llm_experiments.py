"""The LLM experiments under experiments/ run end to end on the sample LLM stack (local runtime), their
verdicts checked against their descriptions: steady load passes with its golden answers unchanged;
a 429 that arrives in the middle of a stream is passed on to clients by the router (fail); the
router's --resume-streams absorbs it without duplicating or changing a word (pass). Each run is
shortened with --set to about 30 s."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import assert_nothing_left, journal, run

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SHORT = ["--set", "phases.0.duration=8s", "--set", "phases.1.duration=8s", "--set", "phases.2.duration=10s"]


def run_experiment(tmp_path, name: str) -> tuple[int, dict, str]:
    run_dir = tmp_path / name
    result = run(["run", str(ROOT / "experiments" / f"{name}.yaml"), "--runtime", "local", "--progress", "plain",
                  "--run-dir", str(run_dir), *SHORT], timeout=240)
    assert (run_dir / "journal.json").exists(), result.stderr + result.stdout
    return result.returncode, journal(run_dir), result.stderr + result.stdout


def golden(j: dict, series: str) -> list[float]:
    """Every recorded value of the router's golden-answer series ``aichaos_golden_<series>``."""
    name = "aichaos_golden_" + series
    return [s["services"]["router"][name] for s in j["scrapes"]["series"] if name in s["services"].get("router", {})]


def phase(j: dict, name: str) -> dict:
    return next(p["metrics"] for p in j["phases"] if p["name"] == name)


def test_steady_llm_load_passes_and_its_golden_answers_never_change(tmp_path):
    code, j, out = run_experiment(tmp_path, "llm-steady")
    assert code == 0 and j["verdict"] == "pass", out
    assert "golden answers: 8 of 8 probes of router recorded" in out
    mismatch = golden(j, "mismatch")
    assert len(mismatch) >= 20 and set(mismatch) == {0.0}  # about one round a second, every one golden
    assert all(phase(j, p["name"])["errors"] == {} for p in j["phases"])
    assert_nothing_left(j)


def test_a_429_in_the_middle_of_a_stream_reaches_clients_and_resume_streams_absorbs_it(tmp_path):
    code, j, out = run_experiment(tmp_path, "llm-midstream-429")
    assert code == 1 and j["verdict"] == "fail", out
    assert phase(j, "fault")["errors"].get("stream_error", 0) > 10  # the router relayed the error event
    assert phase(j, "baseline")["errors"] == {}
    assert max(golden(j, "failed")) > 0  # the probes met it too
    assert_nothing_left(j)

    code, j, out = run_experiment(tmp_path, "llm-midstream-429-resumed")
    assert code == 0 and j["verdict"] == "pass", out
    assert all(phase(j, p["name"])["errors"] == {} for p in j["phases"])
    resumed = [s["services"]["router"].get("router_resumed_streams_total", 0) for s in j["scrapes"]["series"]
               if "router" in s["services"]]
    assert max(resumed) > 10
    # the resumed answers are the golden ones: nothing duplicated, truncated or changed
    assert set(golden(j, "mismatch")) == {0.0} and set(golden(j, "duplicated")) == {0.0}
    assert_nothing_left(j)
