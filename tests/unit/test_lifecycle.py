"""The edges of a run's life on the fake runtime: a full disk, a run directory two runs are given, the
per-user index of live runs, and the run id every child carries (issue 15)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aichaos import clock
from aichaos.errors import ProxyError, UsageError
from aichaos.experiment.loader import load_experiment
from aichaos.report.journal import read_journal
from aichaos.run import JournalNotWritten, RunOptions, run_experiment
from aichaos.runtime import index
from aichaos.runtime.cleanup import clean_run, stale_runs
from aichaos.runtime.fake import FakeClock, FakeKind, FakeWorld
from aichaos.runtime.labels import labelled_children, labelled_processes
from aichaos.runtime.state import RunDirLock, RunState
from tests.conftest import STACK
from tests.unit.test_run_loop import EXPERIMENT


def run(tmp_path: Path, world: FakeWorld, **options):
    (tmp_path / "stack.yaml").write_text(STACK)
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT)
    loaded = load_experiment(tmp_path / "experiment.yaml")
    options.setdefault("run_dir", tmp_path / "run")
    lines: list[str] = []
    with clock.using(FakeClock()):
        journal = run_experiment(loaded, RunOptions(runtime_kind=FakeKind(world), **options),
                                 report=lines.append, load_factory=world.load)
    return journal, lines


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def full_disk(monkeypatch):
    """A fault-injecting writer: once ``disk.full`` is set, writing a file under ``disk.under`` fails
    with ENOSPC, as on a full disk."""

    class Disk:
        full = False
        under: Path | None = None

    disk = Disk()
    original = Path.write_text

    def write_text(self: Path, data: str, *args, **kwargs) -> int:
        if disk.full and disk.under is not None and self.resolve().is_relative_to(disk.under.resolve()):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    return disk


def test_a_full_disk_at_the_journal_ends_the_run_with_exit_3_and_keeps_what_was_measured(tmp_path, full_disk):
    world = FakeWorld()
    full_disk.under = tmp_path / "run"

    def fill(second: int) -> None:
        if "remove_toxic frontend__backend aichaos_fault_0" in world.events:  # the fault is reverted
            full_disk.full = True

    world.on_second = fill
    with pytest.raises(JournalNotWritten) as raised:
        run(tmp_path, world)
    error = raised.value
    assert error.exit_code == 3
    assert "cannot write the journal" in error.message and "No space left on device" in error.message
    # everything was stopped and reverted, and the run completed: only its record could not be kept
    assert not world.running and not any(world.toxics.values())
    assert error.journal.status == "completed" and error.journal.verdict == "pass"
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["logs"]  # no journal.tmp, no state file
    assert index.indexed_state_files() == [] and stale_runs(tmp_path) == []
    # a copy went beside the index of live runs, and reads back as the journal
    assert error.saved_to is not None and str(error.saved_to) in str(error)
    copy = read_journal(error.saved_to)
    assert copy.run_id == error.journal.run_id and copy.fault_results and copy.samples


def test_a_full_disk_mid_run_stops_it_with_exit_3_and_leaves_nothing(tmp_path, full_disk, state_home):
    world = FakeWorld()
    full_disk.under = Path(os.path.commonpath([tmp_path, state_home]))  # no copy beside the index either

    def fill(second: int) -> None:
        if world.running == {"backend", "frontend"}:  # the state file must record the fault next
            full_disk.full = True

    world.on_second = fill
    with pytest.raises(JournalNotWritten) as raised:
        run(tmp_path, world, run_dir=tmp_path / "run")
    journal = raised.value.journal
    assert journal.status == "error" and journal.exit_code == 3
    assert any("cannot save the run state file" in e and "No space left on device" in e for e in journal.errors)
    assert raised.value.saved_to is None and "summary below" in str(raised.value)
    assert not world.running and not any(world.toxics.values())  # the fault was reverted all the same
    assert all(f["reverted_at"] is not None for f in journal.faults)
    assert not list((tmp_path / "run").glob("*.tmp")) and not (tmp_path / "run" / "state.json").exists()


def test_leftovers_keep_the_state_file_for_cleanup(tmp_path):
    world = FakeWorld()
    op = world.op

    def refuse_reverts(name: str, detail: str = "") -> None:
        if name == "remove_toxic":
            raise ProxyError("the proxy refused")  # every time: the fault cannot be reverted
        op(name, detail)

    world.op = refuse_reverts  # type: ignore[method-assign]
    journal, lines = run(tmp_path, world)
    assert journal.leftovers
    state = RunState.read(tmp_path / "run" / "state.json")
    assert state.faults  # the undo record of the fault left in, for `aichaos cleanup` to retry
    assert any("aichaos cleanup --run" in line for line in lines)
    assert index.indexed_state_files() == [state.path.resolve()]


def test_a_run_directory_in_use_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "run").mkdir()
    world = FakeWorld()
    with RunDirLock.for_new_run(tmp_path / "run"), \
            pytest.raises(UsageError, match="is in use by another aichaos run") as raised:  # another run holds it
        run(tmp_path, world)
    assert raised.value.exit_code == 2 and "--run-dir" in str(raised.value)
    assert world.events == []
    journal, _ = run(tmp_path, world)  # free again
    assert journal.status == "completed"


def test_the_run_directory_stays_locked_while_held(tmp_path):
    from contextlib import ExitStack

    world = FakeWorld()
    with ExitStack() as held:
        (tmp_path / "stack.yaml").write_text(STACK)
        (tmp_path / "experiment.yaml").write_text(EXPERIMENT)
        with clock.using(FakeClock()):
            run_experiment(load_experiment(tmp_path / "experiment.yaml"),
                           RunOptions(run_dir=tmp_path / "run", runtime_kind=FakeKind(world)),
                           report=lambda line: None, load_factory=world.load, held=held)
        assert RunDirLock.try_acquire(tmp_path / "run") is None  # the CLI still writes its reports there
    lock = RunDirLock.try_acquire(tmp_path / "run")
    assert lock is not None
    lock.release()


def test_a_killed_runs_directory_is_refused_until_cleanup(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunState(run_dir / "state.json", "killed-1", owner_pid=dead_pid()).save()
    with pytest.raises(UsageError, match="holds the state of run killed-1") as raised:
        run(tmp_path, FakeWorld())
    assert "aichaos cleanup --run killed-1" in str(raised.value)
    assert RunState.read(run_dir / "state.json").run_id == "killed-1"  # untouched
    [stale] = stale_runs()
    clean_run(stale)
    journal, _ = run(tmp_path, FakeWorld())
    assert journal.status == "completed"


def test_the_index_finds_runs_from_anywhere_and_runs_dir_narrows_it(tmp_path, monkeypatch, state_home):
    states = {}
    for name in ("a", "b"):
        run_dir = tmp_path / name / "runs" / f"r-{name}"
        run_dir.mkdir(parents=True)
        states[name] = RunState(run_dir / "state.json", f"r-{name}", owner_pid=dead_pid())
        states[name].save()
    live = RunState(tmp_path / "live" / "state.json", "r-live")  # this process: still running
    live.path.parent.mkdir()
    live.save()
    entry = json.loads((state_home / "aichaos" / "runs" / "r-a").read_text())
    assert entry == {"state": str(states["a"].path.resolve()), "host": socket.gethostname()}
    monkeypatch.chdir(tmp_path / "live")  # anywhere: no ./runs here
    assert [s.run_id for s in stale_runs()] == ["r-a", "r-b"]
    assert [s.run_id for s in stale_runs(tmp_path / "b" / "runs")] == ["r-b"]
    clean_run(stale_runs(tmp_path / "b" / "runs")[0])
    assert [s.run_id for s in stale_runs()] == ["r-a"]
    assert not states["b"].path.exists() and not (state_home / "aichaos" / "runs" / "r-b").exists()
    states["a"].path.unlink()  # a run directory deleted by hand: its entry is dropped
    assert stale_runs() == [] and sorted(p.name for p in (state_home / "aichaos" / "runs").iterdir()) == ["r-live"]


def test_a_run_in_a_runs_dir_outside_the_index_is_still_found_there(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    RunState(run_dir / "state.json", "old", owner_pid=dead_pid()).save()
    index.unregister("old")  # written by an aichaos without the index
    assert [s.run_id for s in stale_runs(tmp_path / "runs")] == ["old"]
    monkeypatch.chdir(tmp_path)
    assert [s.run_id for s in stale_runs()] == ["old"]  # ./runs, as before


def test_an_unwritable_index_does_not_fail_the_run(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    state = RunState(tmp_path / "state.json", "r1")
    state.save()
    assert state.path.exists()
    assert "aichaos cleanup` finds it only with --runs-dir" in caplog.text


def test_cleanup_kills_a_child_the_run_had_not_recorded(tmp_path):
    """A process started a moment before the run was killed: found by the run id it carries."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = RunState(run_dir / "state.json", "r-unrecorded", owner_pid=dead_pid())
    state.save()
    with labelled_children("r-unrecorded"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # not the run's
    try:
        deadline = time.monotonic() + 5
        while child.pid not in labelled_processes("r-unrecorded") and time.monotonic() < deadline:
            time.sleep(0.01)  # until it has exec'd with the label
        assert labelled_processes("r-unrecorded") == [child.pid]
        [line] = clean_run(state)
        assert f"pid {child.pid}" in line and "labelled with the run's id" in line
        assert child.wait(5) == -9
        assert other.poll() is None
    finally:
        for process in (child, other):
            process.kill()
            process.wait()


def test_the_label_is_removed_after_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("AICHAOS_RUN_ID", raising=False)
    journal, _ = run(tmp_path, FakeWorld())
    assert "AICHAOS_RUN_ID" not in os.environ and journal.status == "completed"


def test_the_index_leaves_other_hosts_runs_alone(tmp_path, state_home):
    """A home shared between machines: another host's run is not this host's to judge or clean."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunState(run_dir / "state.json", "elsewhere", owner_pid=dead_pid()).save()
    entry = state_home / "aichaos" / "runs" / "elsewhere"
    entry.write_text(json.dumps({"state": str((run_dir / "state.json").resolve()), "host": "another-host"}))
    assert stale_runs() == []
    assert entry.exists()


def test_aichaos_run_on_a_full_disk_exits_3_and_prints_what_was_measured(tmp_path, monkeypatch):
    """The CLI's side: the error, then the summary of the journal it could not write."""
    from typer.testing import CliRunner

    import aichaos.run
    from aichaos.cli.app import app

    journal, _ = run(tmp_path, FakeWorld())
    error = JournalNotWritten(f"cannot write the journal {journal.path}: No space left on device", journal, None,
                              hint="nothing could save it: the summary below is what was measured")

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(aichaos.run, "run_experiment", full)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "experiment.yaml")])
    assert result.exit_code == 3, result.output
    assert "No space left on device" in result.stderr and "summary below" in result.stderr
    assert "verdict: PASS" in result.stderr and "baseline" in result.stdout  # the summary, tables and verdict
    json_result = CliRunner().invoke(app, ["run", str(tmp_path / "experiment.yaml"), "--json"])
    assert json_result.exit_code == 3 and json.loads(json_result.stdout)["run_id"] == journal.run_id
