"""`aichaos report` on the journal of a real run reproduces, byte for byte, what the run printed and wrote."""

from __future__ import annotations

import json

from aichaos.report.journal import JOURNAL_VERSION
from tests.conftest import ROOT
from tests.integration.test_run import assert_nothing_left, journal, run

REPORT = ROOT / "tests" / "experiments" / "plain-report.yaml"  # every section, one failing gate
SHORT = ROOT / "tests" / "experiments" / "plain-short.yaml"


def test_report_re_renders_the_summary_junit_and_markdown_of_a_run(tmp_path):
    run_dir = tmp_path / "run"
    ran = run(["run", str(REPORT), "--run-dir", str(run_dir), "--junit", str(tmp_path / "junit.xml"),
               "--markdown", str(tmp_path / "report.md")])
    assert ran.returncode == 1, ran.stderr + ran.stdout  # degradation.p50_ms cannot hold under +50 ms
    j = journal(run_dir)
    assert j["journal_version"] == JOURNAL_VERSION and j["verdict"] == "fail"
    assert_nothing_left(j)

    shown = run(["report", str(run_dir / "journal.json")])
    assert shown.returncode == 0, shown.stderr
    for table in ("Phases", "Service metrics", "Faults", "Gates"):
        assert f"\n{table}\n" in f"\n{shown.stdout}"
    assert shown.stdout == ran.stdout
    assert "verdict: FAIL (exit 1) - failed: degradation.p50_ms[fault]" in shown.stderr
    assert ran.stderr.endswith(shown.stderr)  # the run's progress lines, then exactly the summary's

    for name, written in (("junit", ["junit.xml"]), ("md", ["report.md"])):
        again = tmp_path / f"again.{name}"
        shown = run(["report", str(run_dir), "--format", name, "-o", str(again)])
        assert shown.returncode == 0, shown.stderr
        for file in written:
            assert again.read_text() == (run_dir / file).read_text() == (tmp_path / file).read_text()


def test_report_json_is_what_run_json_printed(tmp_path):
    run_dir = tmp_path / "run"
    ran = run(["run", str(SHORT), "--run-dir", str(run_dir), "--json"])
    assert ran.returncode in (0, 1), ran.stderr + ran.stdout
    shown = run(["report", str(run_dir), "--format", "json"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == ran.stdout == (run_dir / "journal.json").read_text() + "\n"
    assert json.loads(shown.stdout)["run_id"] == journal(run_dir)["run_id"]
