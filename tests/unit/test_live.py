"""The live view (aichaos.cli.live) on runs of the fake runtime: plain timestamped lines for logs, the
mode chosen from the terminal and CI, the figures of a second, and the Rich display."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from aichaos import clock
from aichaos.cli.live import LiveView, choose_mode, figures_text, live_display, second_figures
from aichaos.experiment.loader import load_experiment
from aichaos.metrics.samples import Bucket
from aichaos.run import RunOptions, run_experiment
from aichaos.runtime.fake import FakeClock, FakeKind, FakeWorld, steady
from tests.conftest import STACK
from tests.unit.test_run_loop import EXPERIMENT

GATED = EXPERIMENT + "gates:\n  recovery_time: {max: 3s}\n"


def run_with_view(tmp_path: Path, mode: str, width: int = 200, terminal: bool = False) -> tuple[str, LiveView]:
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(GATED)
    loaded = load_experiment(tmp_path / "experiment.yaml")
    out = io.StringIO()
    console = Console(file=out, width=width, no_color=True, highlight=False, soft_wrap=True,
                      force_terminal=terminal)
    view = LiveView(loaded.experiment, mode, console=console)  # type: ignore[arg-type]
    world = FakeWorld(scenario=steady(count=40, latency_ms=5.0))
    with clock.using(FakeClock()):
        run_experiment(loaded, RunOptions(runs_dir=tmp_path / "runs", runtime_kind=FakeKind(world)),
                       report=view.message, load_factory=world.load, progress=view.progress)
    view.stop()
    return out.getvalue(), view


def test_plain_mode_prints_timestamped_lines_of_phase_figures_slo_faults_and_messages(tmp_path):
    text, view = run_with_view(tmp_path, "plain")
    lines = text.splitlines()
    assert lines and all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), text
    figures = [line for line in lines if " req/s · p50 " in line]
    # one line per steady-state window (2 s) over a 20 s run, give or take the edges
    assert 8 <= len(figures) <= 12, text
    assert any(re.search(r"\[baseline \d/6s, phase 1/3\] \| 40 req/s · p50 5\.\d .* · errors 0\.00% \| SLO holds", line)
               for line in figures), text
    during = [line for line in figures if "[fault " in line]
    assert any("SLO violated: p95_ms=10" in line and "faults: latency on frontend->backend" in line
               for line in during), text
    assert any("[recovery " in line and "SLO holds" in line for line in figures), text
    assert any(line.endswith("[fault] applied latency on frontend->backend downstream: +100 ms (±0)") for line in lines)
    assert not view.failed


def test_off_mode_draws_nothing_but_still_prints_messages(tmp_path):
    text, _ = run_with_view(tmp_path, "off")
    assert " req/s " not in text and "[fault] applied" in text


def test_live_mode_draws_the_display_on_a_terminal_and_clears_it(tmp_path):
    text, view = run_with_view(tmp_path, "live", terminal=True)
    assert not view.failed
    assert "[fault] applied" in text  # messages print above the display
    assert "\x1b[" in text  # it redrew in place


def test_the_display_shows_phase_countdown_faults_slo_and_the_verdict_forming(tmp_path):
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(GATED)
    loaded = load_experiment(tmp_path / "experiment.yaml")
    seen: list[str] = []
    view = LiveView(loaded.experiment, "off")

    def capture(journal, store, now):
        if journal.t0 is not None and now >= journal.t0 + 10.5 and not seen:  # 4.5 s into the fault
            buckets = store.snapshot(int(journal.t0) - 1, int(now))
            progress = view.tracker.progress(journal.t0, list(journal.events), journal.stop, buckets, now)
            out = io.StringIO()
            Console(file=out, width=160, no_color=True).print(live_display(progress))
            seen.append(out.getvalue())

    world = FakeWorld(scenario=steady(count=40, latency_ms=5.0))
    with clock.using(FakeClock()):
        run_experiment(loaded, RunOptions(runs_dir=tmp_path / "runs", runtime_kind=FakeKind(world)),
                       report=lambda text: None, load_factory=world.load, progress=capture)
    (shown,) = seen
    assert "fault (2/3)" in shown and "4/6s, 2s left" in shown and "run 10/20s" in shown
    assert "latency on frontend->backend" in shown
    assert "violated: p95_ms=10" in shown and "(the last 2s window)" in shown
    assert re.search(r"baseline: \d of \d windows steady", shown) and "fault: detected after" in shown, shown


def test_a_failing_view_is_switched_off_and_the_run_goes_on(tmp_path):
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(GATED)
    loaded = load_experiment(tmp_path / "experiment.yaml")
    view = LiveView(loaded.experiment, "plain", console=Console(file=io.StringIO()))

    def broken(progress):
        raise RuntimeError("drawing failed")

    view.draw = broken  # type: ignore[method-assign]
    world = FakeWorld(scenario=steady(count=40))
    with clock.using(FakeClock()):
        journal = run_experiment(loaded, RunOptions(runs_dir=tmp_path / "runs", runtime_kind=FakeKind(world)),
                                 report=view.message, load_factory=world.load, progress=view.progress)
    assert view.failed and journal.status == "completed"


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("requested", "tty", "environ", "mode"), [
    ("auto", False, {}, "plain"),  # stdout not a terminal: logs
    ("auto", True, {"CI": "true"}, "plain"),  # nothing interactive in CI
    ("auto", True, {"TERM": "dumb"}, "plain"),
    ("plain", True, {}, "plain"),
    ("off", True, {}, "off"),
    ("live", False, {}, "live"),
])
def test_the_mode_follows_the_terminal_and_ci(requested, tty, environ, mode):
    assert choose_mode(requested, _Stream(tty), environ) == mode


def test_a_second_with_too_few_successful_requests_has_no_percentile():
    bucket = Bucket(second=1, count=12, errors={"timeout": 2, "5xx": 1}, hist={1000: 9})
    figures = second_figures(bucket, 1, min_samples=20)
    assert figures.p95_ms is None and figures.error_rate == pytest.approx(0.25)
    assert figures_text(figures) == "12 req/s · p50 n/a · p95 n/a · p99 n/a ms · errors 25.00% (timeout 2, 5xx 1)"
    assert second_figures(None, 2).requests == 0
