"""The journal as a record: its reader, the journals of the previous format, and `aichaos report`.

The fixtures under tests/fixtures/journal-v2/ were written by real runs of
tests/experiments/plain-report.yaml with the journal format of version 2 (commit 9244012), next to
what those runs printed (stdout.txt, stderr.txt) and wrote (junit.xml, report.md); the second run
had a `down` fault and a stop condition set on the command line.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from aichaos.cli.app import app
from aichaos.cli.render import render_summary
from aichaos.cli.terminal import Terminal
from aichaos.errors import ExitCode, UsageError
from aichaos.experiment.model import Experiment
from aichaos.report.formats import FORMATS, TEXT_WIDTH, Table, summary, summary_text
from aichaos.report.journal import JOURNAL_VERSION, Journal, analyse, read_journal
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "journal-v2"
RUNS = ["completed", "aborted"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # the fixtures were printed to a pipe: no colour, the terminal's default width
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("run", RUNS)
def test_a_version_2_journal_renders_as_its_run_printed_and_wrote_it(run, capsys):
    folder = FIXTURES / run
    journal = read_journal(folder / "journal.json")
    assert FORMATS["junit"](journal) == (folder / "junit.xml").read_text()
    assert FORMATS["md"](journal) == (folder / "report.md").read_text()
    render_summary(Terminal(), journal)
    printed = capsys.readouterr()
    assert printed.out == (folder / "stdout.txt").read_text()
    assert printed.err.startswith(("fault: ", "error: ")) and (folder / "stderr.txt").read_text().endswith(printed.err)


@pytest.mark.parametrize("run", RUNS)
def test_the_text_format_is_what_the_terminal_prints_stdout_and_stderr_in_order(run):
    journal = read_journal(FIXTURES / run)  # a run directory reads its journal.json
    term = Terminal()
    both = io.StringIO()
    term.out = term.err = Console(file=both, width=TEXT_WIDTH, no_color=True, highlight=False, soft_wrap=True)
    render_summary(term, journal)
    assert summary_text(journal) == both.getvalue()
    assert [type(b) for b in summary(journal)].count(Table) == 4
    failed = "degradation.p50_ms[fault]" if run == "completed" else "recovery_time[fault], stop_when"
    verdict = f"error: verdict: FAIL (exit 1) - failed: {failed} - journal /tmp/fx/{run}/journal.json\n"
    assert both.getvalue().endswith(verdict)


@pytest.mark.parametrize("run", RUNS)
def test_a_version_2_journal_reads_into_the_current_version_and_round_trips(run, tmp_path):
    old = json.loads((FIXTURES / run / "journal.json").read_text())
    journal = Journal.from_json(old)
    current = journal.to_json()
    assert current["journal_version"] == JOURNAL_VERSION == 4
    # nothing the old journal said is lost or changed; the phases gain their service-metric summary
    for key, value in old.items():
        if key not in ("journal_version", "phases"):
            assert current[key] == value, key
    for before, after in zip(old["phases"], current["phases"], strict=True):
        assert {k: v for k, v in after.items() if k != "service_metrics"} == before
        assert set(after["service_metrics"]) == {"frontend/echo_backend_failures_total", "frontend/echo_in_flight"}
    # the current version reads back to exactly what was written
    path = tmp_path / "journal.json"
    path.write_text(journal.dumps())
    again = read_journal(path)
    assert again.dumps() == path.read_text()
    for render in FORMATS.values():
        assert render(again) == render(journal)


@pytest.mark.parametrize("run", RUNS)
def test_analysing_a_recorded_run_again_measures_what_was_recorded(run):
    # the verdict's pure functions reproduce, from the samples and timeline, what the run measured;
    # the rules that changed since these version 2 runs (a percentile needs min_requests successful
    # requests, errors are always judged, recovery counts from the fault phase's end) change verdicts
    # and times, not measurements
    recorded = read_journal(FIXTURES / run)
    experiment = Experiment.model_validate(recorded.experiment)
    fresh = Journal.from_json(recorded.to_json())
    fresh.fault_results, fresh.gates, fresh.windows, fresh.baseline = [], [], [], None
    for phase in fresh.phases:
        phase.metrics, phase.load_ratio, phase.service_metrics = None, None, {}
    analyse(fresh, experiment)
    for new, old in zip(fresh.phases, recorded.phases, strict=True):
        assert new.metrics is not None and old.metrics is not None
        assert (new.metrics.count, new.metrics.errors) == (old.metrics.count, old.metrics.errors)
        assert new.metrics.rps == pytest.approx(old.metrics.rps, abs=0.001)  # recorded to 3 and 6 places
        assert new.metrics.error_rate == pytest.approx(old.metrics.error_rate, abs=1e-6)
        if new.metrics.p95_ms is not None:  # enough successful requests for a percentile
            assert new.metrics.p95_ms == pytest.approx(old.metrics.p95_ms, abs=0.001)
        assert new.load_ratio == pytest.approx(old.load_ratio, abs=0.001) if old.load_ratio else True
        assert new.service_metrics == old.service_metrics
    assert [w.start for w in fresh.windows] == [w.start for w in recorded.windows]
    assert [w.metrics.count for w in fresh.windows] == [w.metrics.count for w in recorded.windows]
    for new_fault, old_fault in zip(fresh.fault_results, recorded.fault_results, strict=True):
        phase = next(p for p in fresh.phases if p.name == new_fault.phase)
        assert new_fault.start == old_fault.start and new_fault.revert == phase.end


def test_finish_sets_the_verdict_from_status_stop_and_gates():
    journal = read_journal(FIXTURES / "aborted")
    journal.finish()
    assert (journal.verdict, journal.exit_code) == ("fail", ExitCode.GATE_FAILED)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def fixture_with(tmp_path: Path, **changes: object) -> Path:
    data = json.loads((FIXTURES / "completed" / "journal.json").read_text())
    data.update(changes)
    return write_json(tmp_path / "journal.json", data)


@pytest.mark.parametrize(("make", "says"), [
    (lambda tmp: tmp / "missing.json", "missing.json: no such file"),
    (lambda tmp: tmp, "Is a directory"),  # a directory without a journal.json
    (lambda tmp: (tmp / "j.json").write_text("{not json") and tmp / "j.json", "not an aichaos journal (not JSON"),
    (lambda tmp: write_json(tmp / "j.json", [1, 2]), "not an aichaos journal (no journal_version)"),
    (lambda tmp: write_json(tmp / "j.json", {"run_id": "x"}), "not an aichaos journal (no journal_version)"),
    (lambda tmp: fixture_with(tmp, journal_version=1), "journal version 1 cannot be read by aichaos"),
    (lambda tmp: fixture_with(tmp, journal_version=99), "(it was written by a newer aichaos)"),
    (lambda tmp: fixture_with(tmp, journal_version="3"), "journal version '3' cannot be read"),
    (lambda tmp: fixture_with(tmp, phases=[{"name": "a"}]), "journal version 2 is malformed: missing key"),
])
def test_the_reader_refuses_what_it_cannot_read_naming_the_file(tmp_path, make, says):
    path = make(tmp_path)
    with pytest.raises(UsageError) as caught:
        read_journal(path)
    assert caught.value.exit_code == ExitCode.INVALID
    assert str(path) in str(caught.value) and says in str(caught.value)


def test_report_cli_refuses_an_unreadable_version_with_exit_2(tmp_path):
    path = fixture_with(tmp_path, journal_version=1)
    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code == ExitCode.INVALID
    assert f"{path}: journal version 1 cannot be read" in result.stderr
    assert f"reads versions 2 to {JOURNAL_VERSION}" in result.stderr
    assert result.stdout == ""


def test_report_cli_missing_file_and_unknown_format_exit_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nope.json")])
    assert result.exit_code == ExitCode.INVALID and "nope.json: no such file" in result.stderr
    result = runner.invoke(app, ["report", str(FIXTURES / "completed"), "--format", "pdf"])
    assert result.exit_code == ExitCode.INVALID
    assert "--format must be one of text, json, junit, md, html, not 'pdf'" in result.stderr


def test_report_cli_prints_or_writes_each_format(tmp_path):
    journal = read_journal(FIXTURES / "completed")
    for name, render in FORMATS.items():
        if name != "text":  # printed, the text format is the terminal's summary (tested above)
            result = runner.invoke(app, ["report", str(FIXTURES / "completed"), "--format", name])
            assert result.exit_code == 0, result.output
            assert result.stdout == render(journal).rstrip("\n") + "\n"
        target = tmp_path / f"report.{name}"
        result = runner.invoke(app, ["report", str(FIXTURES / "completed"), "-f", name, "-o", str(target)])
        assert result.exit_code == 0 and result.stdout == ""
        assert target.read_text() == render(journal)
    result = runner.invoke(app, ["report", str(FIXTURES / "completed"), "-o", str(tmp_path / "no" / "dir.txt")])
    assert result.exit_code == ExitCode.INVALID and "cannot write" in result.stderr


def test_report_is_a_listed_command():
    assert "report" in runner.invoke(app, ["--help"]).output
