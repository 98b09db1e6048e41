import os
import subprocess
import sys

from aichaos.runtime.state import RunState, process_start


def test_state_recognises_its_own_processes_and_not_recycled_pids(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = RunState(tmp_path / "state.json", "r1", load_pid=child.pid)
        state.save()
        assert RunState.read(state.path).is_ours(child.pid)
        assert state.is_ours(os.getpid())  # the owner is recorded too
        state.starts[str(child.pid)] = (process_start(child.pid) or 0) + 1  # as if the pid were reused
        assert not state.is_ours(child.pid)
    finally:
        child.kill()
        child.wait()
    assert process_start(child.pid) is None
    assert not RunState(tmp_path / "s.json", "r2").is_ours(child.pid)
