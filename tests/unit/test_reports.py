"""Reports of a run on the fake runtime: JUnit with one case per gate and per bound of the SLO, the
HTML report's content (its rendering in a browser is tested in tests/integration/test_html_report.py),
and the journal round trip of the SLO results."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from aichaos.report.formats import FORMATS
from aichaos.report.html import chart_data, html_report
from aichaos.report.journal import Journal, read_journal
from aichaos.runtime.fake import FakeWorld, steady
from tests.unit.test_run_loop import EXPERIMENT, run

GATED = EXPERIMENT + "gates:\n  recovery_time: {max: 3s}\n  degradation: {p95_ms: {max_ratio: 2}}\n"


def fault_run(tmp_path: Path, experiment: str = GATED) -> Journal:
    journal, _ = run(tmp_path, FakeWorld(scenario=steady(count=40, latency_ms=5.0)), experiment=experiment)
    return read_journal(journal.path)  # as the reports read it


def test_junit_has_a_case_per_gate_and_per_slo_bound_with_the_measured_values(tmp_path):
    journal = fault_run(tmp_path)
    suite = ET.fromstring(FORMATS["junit"](journal))
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert {"baseline_steady[baseline]", "recovery_time[fault]", "degradation.p95_ms[fault]",
            "slo.p95_ms", "slo.error_rate"} <= set(cases)
    assert suite.get("tests") == str(len(cases))
    # the fault broke p95 (5 ms + 100 ms against a 50 ms bound) and recovery restored it: the SLO held
    p95 = cases["slo.p95_ms"]
    assert p95.find("failure") is None
    out = p95.findtext("system-out") or ""
    assert re.search(r"baseline 5\.\d ms, fault 10\d\.\d ms, recovery 5\.\d ms \(limit <= 50\.0 ms\)", out), out
    assert re.search(r"broken in [1-9]\d* of \d+ judged windows", out), out
    # the degradation gate failed: its case carries the measured ratio in the failure message
    failure = cases["degradation.p95_ms[fault]"].find("failure")
    assert failure is not None and failure.get("message", "").startswith("x2")
    assert suite.get("failures") == str(sum(1 for c in cases.values() if c.find("failure") is not None))


def test_an_slo_still_broken_at_the_end_of_the_run_fails_its_case_with_the_values(tmp_path):
    # the fault phase is the last one: nothing restores the SLO before the run ends
    experiment = EXPERIMENT.replace("  - {name: recovery, duration: 8s}\n", "")
    journal = fault_run(tmp_path, experiment)
    suite = ET.fromstring(FORMATS["junit"](journal))
    case = next(c for c in suite.iter("testcase") if c.get("name") == "slo.p95_ms")
    failure = case.find("failure")
    assert failure is not None
    assert "fault 10" in failure.get("message", "") and "(limit <= 50.0 ms)" in failure.get("message", "")
    assert "still broken in the run's last judged window" in (failure.text or "")


def test_slo_results_round_trip_through_the_journal(tmp_path):
    journal = fault_run(tmp_path)
    assert [s.metric for s in journal.slos] == ["p95_ms", "error_rate"]
    data = json.loads(journal.dumps())
    assert data["journal_version"] == 4 and data["slos"][1]["limit"] == "<= 5.00%"
    assert Journal.from_json(data).dumps() == journal.dumps()


def test_the_html_report_is_one_file_with_its_data_and_no_external_reference(tmp_path):
    journal = fault_run(tmp_path)
    page = html_report(journal)
    assert page == FORMATS["html"](journal)
    # nothing outside the file: no src/href to anything, a policy that allows no fetch
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "default-src 'none'" in page and "uPlot" in page
    data = chart_data(journal)
    ids = [c["id"] for c in data["charts"]]
    assert ids[:3] == ["latency", "errors", "rate"]
    assert [p["name"] for p in data["phases"]] == ["baseline", "fault", "recovery"]
    (fault,) = data["faults"]
    assert fault["start"] == 6.0 and abs(fault["end"] - 12.0) < 0.01  # (the fake revert takes a moment)
    p95 = next(s for s in data["charts"][0]["series"] if s["label"] == "p95")["values"]
    at = {x: v for x, v in zip(data["x"], p95, strict=True)}
    assert at[2] is not None and at[2] < 10 and at[8] > 100  # the fault's +100 ms, by the second
    assert data["charts"][0]["limits"] == [{"label": "SLO p95_ms max", "value": 50}]
    for section in ("Gates", "SLO", "Steady-state windows", "Environment", "Phases"):
        assert f">{section}<" in page
    assert page.count('<rect class="violated"') >= 1 and page.count('<rect class="steady"') >= 1


def test_a_report_of_a_journal_without_llm_or_scrapes_has_only_the_request_charts(tmp_path):
    journal = fault_run(tmp_path)
    assert [c["id"] for c in chart_data(journal)["charts"]] == ["latency", "errors", "rate"]


def test_the_script_data_cannot_end_its_script_element(tmp_path):
    journal = fault_run(tmp_path)
    journal.faults[0]["description"] = "</script><script>alert(1)</script>"
    page = html_report(journal)
    assert "</script><script>alert(1)" not in page
    assert "&lt;/script&gt;" in page  # in the tables, escaped


def test_llm_figures_get_charts_of_their_own_when_the_buckets_carry_them(tmp_path):
    from aichaos.metrics.histogram import bucket_of
    from aichaos.metrics.llm import LlmStats

    journal = fault_run(tmp_path)
    for bucket in journal.samples.values():
        stats = LlmStats(requests=30, streams=30, good=28, output_tokens=900)
        stats.ttft = {bucket_of(120.0): 30}
        stats.tpot = {bucket_of(8.0): 30}
        stats.itl = {bucket_of(8.0): 600}
        bucket.llm = stats
    charts = {c["id"]: c for c in chart_data(journal)["charts"]}
    assert list(charts) == ["latency", "errors", "rate", "llm-latency", "llm-throughput"]
    series = {s["label"]: s["values"] for s in charts["llm-latency"]["series"]}
    assert {round(v) for v in series["TTFT p95"] if v is not None} == {120}
    assert set(series["TPOT p50"]) - {None} and set(series["ITL p95"]) - {None}
    tokens = {s["label"]: s["values"] for s in charts["llm-throughput"]["series"]}["output tokens/s"]
    assert set(tokens) - {None} == {900}
