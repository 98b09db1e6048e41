"""The edges of a run's life with real processes (issue 15): a kill -9 while the run is starting its
children, a full disk, two runs given one run directory, and cleanup from another directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aichaos.runtime.labels import labelled_processes
from tests.conftest import ROOT
from tests.integration.test_run import AICHAOS, _state, _wait_for, process_alive, processes_holding

SHORT = ROOT / "tests" / "experiments" / "plain-short.yaml"


def start(run_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*AICHAOS, "run", str(SHORT), "--run-dir", str(run_dir), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def cleanup(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*AICHAOS, "cleanup", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


def reap(run_id: str) -> None:
    """Whatever a failed test left of the run: never left running for the next test."""
    for pid in labelled_processes(run_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def assert_gone(run_dir: Path, run_id: str) -> None:
    deadline = time.monotonic() + 3
    while (processes_holding(run_dir) or labelled_processes(run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILLed processes take a moment to go
    assert processes_holding(run_dir) == []
    assert labelled_processes(run_id) == []


# the run's state file is saved before it starts anything; on this machine, measured from then, the
# builtin proxy is started at once and answers (and is recorded) after about 0.2 s, the services are
# started by 0.35 s, the load process at 0.45 s and recorded when ready, at 0.7 s: each delay kills
# the run at another step, most of them while a child exists that the state file does not name yet
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.55, 0.65, 1.5])
def test_kill_9_while_starting_then_cleanup_from_anywhere_leaves_nothing(tmp_path, delay):
    run_dir = tmp_path / "run"
    proc = start(run_dir)
    _wait_for(lambda: _state(run_dir).get("run_id"), 30)
    time.sleep(delay)
    kill_9(proc)
    run_id = _state(run_dir)["run_id"]
    try:
        result = cleanup(tmp_path / "elsewhere")  # no --runs-dir: found through the index of live runs
        assert result.returncode == 0, result.stderr
        assert f"run {run_id}" in result.stderr
        assert_gone(run_dir, run_id)
        assert not (run_dir / "state.json").exists()
        assert "nothing to clean up" in cleanup(tmp_path / "elsewhere").stderr
    finally:
        reap(run_id)


def test_cleanup_from_another_directory_and_runs_dir_narrowing_it(tmp_path):
    runs = {name: tmp_path / name / "runs" for name in ("a", "b")}
    procs = {name: start(runs[name] / "killed") for name in runs}
    for name in runs:
        _wait_for(lambda n=name: len(_state(runs[n] / "killed").get("services", {})) == 2, 60)
    ids = {name: _state(runs[name] / "killed")["run_id"] for name in runs}
    for proc in procs.values():
        kill_9(proc)
    try:
        pids_b = list(_state(runs["b"] / "killed")["services"].values())
        result = cleanup(tmp_path / "elsewhere", "--runs-dir", str(runs["a"]))
        assert result.returncode == 0, result.stderr
        assert f"run {ids['a']}" in result.stderr and ids["b"] not in result.stderr + result.stdout
        assert_gone(runs["a"] / "killed", ids["a"])
        assert all(process_alive(p) for p in pids_b)  # not under --runs-dir: left alone
        result = cleanup(tmp_path / "elsewhere")
        assert f"run {ids['b']}" in result.stderr and "killed service backend" in result.stdout
        assert_gone(runs["b"] / "killed", ids["b"])
    finally:
        for run_id in ids.values():
            reap(run_id)


def test_a_second_run_in_the_same_run_dir_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = start(run_dir)
    run_id = ""
    try:
        _wait_for(lambda: _state(run_dir).get("services"), 60)
        run_id = _state(run_dir)["run_id"]
        second = start(run_dir)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert f"the run directory {run_dir} is in use by run {run_id}" in err and "Traceback" not in err
        assert _state(run_dir)["run_id"] == run_id  # the first run's state file is untouched
        kill_9(first)
        # the killed run's state is still needed by cleanup: the directory stays refused until then
        third = start(run_dir)
        _, err = third.communicate(timeout=60)
        assert third.returncode == 2, err
        assert f"aichaos cleanup --run {run_id}" in err
        assert cleanup(tmp_path / "elsewhere", "--run", run_id).returncode == 0
        assert_gone(run_dir, run_id)
    finally:
        if first.poll() is None:
            kill_9(first)
        if run_id:
            reap(run_id)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only: skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass


def test_a_full_disk_at_the_journal_exits_3_and_keeps_what_was_measured(tmp_path, small_disk, state_home):
    run_dir = small_disk / "run"
    proc = start(run_dir)
    _wait_for(lambda: _state(run_dir).get("faults"), 60)
    _wait_for(lambda: _state(run_dir).get("faults") == [], 60)  # the fault is reverted: the disk fills up now
    run_id = _state(run_dir)["run_id"]
    fill(small_disk)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert f"cannot write the journal {run_dir / 'journal.json'}: No space left on device" in err
    assert "Traceback" not in err
    assert "verdict:" in err and "baseline" in out  # the summary of what was measured
    saved = state_home / "aichaos" / "journals" / f"{run_id}.json"
    assert f"the journal was saved to {saved} instead" in err
    report = subprocess.run([*AICHAOS, "report", str(saved)], capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and "verdict:" in report.stderr
    assert not (run_dir / "journal.tmp").exists() and not (run_dir / "journal.json").exists()
    assert not (run_dir / "state.json").exists()  # nothing left for cleanup: every process stopped
    assert_gone(run_dir, run_id)
    assert "nothing to clean up" in cleanup(tmp_path / "elsewhere").stderr
