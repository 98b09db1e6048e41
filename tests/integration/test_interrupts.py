"""aichaos never leaves a system broken: SIGINT/SIGTERM at random moments, a vanishing proxy."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import (
    AICHAOS,
    _state,
    _state_pids,
    _wait_for,
    journal,
    process_alive,
    processes_holding,
)

SHORT = ROOT / "tests" / "experiments" / "plain-short.yaml"
RNG = random.Random(20261123)
# 20 moments across setup (stack starting), baseline, fault and recovery: the run's state file
# appears as setup begins, and the phases end 9.5 s later or more (setup, then 8 s of phases), so
# every moment falls inside the run
MOMENTS = [(RNG.choice([signal.SIGINT, signal.SIGTERM]), round(RNG.uniform(0.0, 7.5), 2)) for _ in range(20)]


@pytest.mark.parametrize(("sig", "delay"), MOMENTS, ids=[f"{s.name}-{d}s" for s, d in MOMENTS])
def test_interrupt_at_a_random_moment_leaves_nothing(tmp_path, sig, delay):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*AICHAOS, "run", str(SHORT), "--run-dir", str(run_dir)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: (run_dir / "state.json").exists(), 30)
    time.sleep(delay)
    seen: set[int] = set()
    seen.update(_state_pids(_state(run_dir)))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    j = journal(run_dir)
    assert j["status"] == "interrupted" and j["exit_code"] == 130
    assert j["leftovers"] == []
    assert all(f["reverted_at"] is not None for f in j["faults"])  # every applied fault was reverted
    seen.update(s["pid"] for s in j["services"].values())
    time.sleep(0.2)
    assert [p for p in seen if process_alive(p)] == []  # services, load and proxy processes all gone
    assert processes_holding(run_dir) == []  # nor any the run had not yet recorded
    assert not (run_dir / "state.json").exists()


def test_a_vanishing_proxy_ends_the_run_with_exit_3(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*AICHAOS, "run", str(ROOT / "tests" / "experiments" / "plain-latency.yaml"),
                             "--run-dir", str(run_dir)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: _state(run_dir).get("faults"))
    state = _state(run_dir)
    os.kill(state["proxy_pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "fault proxy" in err and "died" in err
    j = journal(run_dir)
    assert j["status"] == "error"
    assert any("could not revert" in e for e in j["errors"])  # says what it could not undo
    time.sleep(0.2)
    assert [p for p in _state_pids(state) if process_alive(p)] == []
    assert json.loads((run_dir / "journal.json").read_text())["verdict"] == "error"


def test_interrupt_with_an_external_proxy_leaves_no_proxies_or_toxics(tmp_path):
    """With a Toxiproxy the user runs (here the builtin one, started outside aichaos), an
    interrupted run removes its toxics and its proxies from that server."""
    import requests

    from aichaos.proxy.server import BackgroundProxyServer

    with BackgroundProxyServer() as external:
        run_dir = tmp_path / "run"
        proc = subprocess.Popen([*AICHAOS, "run", str(SHORT), "--run-dir", str(run_dir),
                                 "--toxiproxy-url", external.url], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda: _state(run_dir).get("faults"))
        assert requests.get(external.url + "/proxies", timeout=5).json()  # the run's proxies are there
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert requests.get(external.url + "/proxies", timeout=5).json() == {}
        assert journal(run_dir)["environment"]["proxy"]["kind"] == "url"


def test_second_ctrl_c_hurries_but_still_reverts(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*AICHAOS, "run", str(SHORT), "--run-dir", str(run_dir)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: _state(run_dir).get("faults"))
    pids = _state_pids(_state(run_dir))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    j = journal(run_dir)
    assert j["status"] == "interrupted"
    assert j["faults"] and all(f["reverted_at"] is not None for f in j["faults"])
    time.sleep(0.2)
    assert [p for p in pids if process_alive(p)] == []
