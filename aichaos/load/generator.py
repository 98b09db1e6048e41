"""aichaos's side of the load process: start it, feed the samples it streams into a SampleStore, stop it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from aichaos.errors import LoadError
from aichaos.experiment.llm import MAX_PROMPTS_BYTES
from aichaos.experiment.model import Load, RequestSpec
from aichaos.interrupts import deferred
from aichaos.load.schedule import Plan
from aichaos.logtail import tail
from aichaos.metrics.samples import Bucket, SampleStore
from aichaos.ports import free_port

log = logging.getLogger(__name__)
SATURATED = 0.9  # a load process busy this share of a core or more may be what limits the load


def _request_json(r: RequestSpec, base_dir: Path) -> dict[str, Any]:
    out = {"name": r.name, "method": r.method, "path": r.path, "weight": r.weight, "headers": r.headers,
           "json": r.json_body}
    if r.llm is not None:
        llm = r.llm.model_dump(mode="json")
        if r.llm.prompts is not None:  # read here: a remote worker has only the spec, not the file
            llm["prompts"] = read_prompts_file(base_dir / r.llm.prompts)
        check_api_key(r)
        out["llm"] = llm
    return out


def check_api_key(request: RequestSpec) -> None:
    """Refuse an llm request whose API key variable is not set (the load process reads the key
    itself; it never travels in the spec)."""
    env = request.llm.api_key_env if request.llm is not None else None
    if env is not None and env not in os.environ:
        raise LoadError(f"request {request.name!r}: the environment variable {env} (its API key) is not set",
                        hint=f"export {env}=... before aichaos run")


def check_load_environment(load: Load, phase_requests: list[RequestSpec] | None = None) -> None:
    """Before anything starts: what the load needs from this machine's environment is there."""
    for request in [*load.requests, *(phase_requests or [])]:
        check_api_key(request)


def read_prompts_file(path: Path) -> list[Any]:
    """The prompts of an ``llm.prompts`` file (see ``aichaos.load.openai.read_prompts``)."""
    from aichaos.load.openai import read_prompts

    try:
        if path.stat().st_size > MAX_PROMPTS_BYTES:
            raise LoadError(f"{path}: a prompts file is at most {MAX_PROMPTS_BYTES // (1024 * 1024)} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"cannot read the prompts file {path}: {exc}") from exc
    try:
        return read_prompts(text, str(path))
    except ValueError as exc:
        raise LoadError(str(exc)) from exc


def load_spec(load: Load, host: str, plan: Plan, seed: int | None = None, base_dir: Path | None = None
              ) -> dict[str, Any]:
    """The JSON spec the load process reads (a plain dict: it crosses a process boundary)."""
    locustfile = None
    if load.locustfile is not None:
        locustfile = str(((base_dir or Path.cwd()) / load.locustfile).resolve())
    return {
        "host": host,
        "users": load.users,
        "rate": load.rate,
        # a changing plan moves between levels within a second unless the file slows it down
        "spawn_rate": load.spawn_rate or float(max(plan.peak_users, 1)),
        "wait_min": load.wait.min,
        "wait_max": load.wait.max,
        "timeout": load.timeout,
        "seed": seed,
        "levels": [level.to_json() for level in plan.levels],
        "mixes": [[_request_json(r, base_dir or Path.cwd()) for r in mix] for mix in plan.mixes],
        "arrival": load.arrival,
        "goodput": load.goodput.model_dump() if load.goodput is not None else None,
        "locustfile": locustfile,
        "workers": load.workers,
        "remote_workers": load.remote_workers,
        "master_bind": load.master_bind,
        "master_port": load.master_port or (free_port(load.master_bind) if load.distributed else None),
    }


class LoadGenerator:
    def __init__(self, spec: dict[str, Any], log_path: Path, store: SampleStore) -> None:
        self.spec = spec
        self.log_path = log_path
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.locust_total: int | None = None
        self.collected_total: int | None = None
        self.llm_total: dict[str, int] | None = None  # LLM requests, streams, output tokens, ITL samples
        # the busiest load process's share of a core, at most, and the seconds it spent at SATURATED or over:
        # a load process that is the bottleneck sends less than asked and reads token gaps short
        self.cpu_max = 0.0
        self.saturated_s = 0
        self._saturated_run = 0
        self.error: str | None = None
        self.users = 0
        self._reader: threading.Thread | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 90.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        with deferred():  # an interrupt waits until the process is recorded, so stop() can reach it
            try:
                self.process = subprocess.Popen([sys.executable, "-m", "aichaos.load.locust_process"],
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                                start_new_session=True)
            except OSError as exc:
                raise LoadError(f"cannot start the load process: {exc}") from exc
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.spec).encode() + b"\n")
        self.process.stdin.flush()
        self._reader = threading.Thread(target=self._read, name="aichaos-load-reader", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise LoadError(f"the load process did not start ({self.error or 'no ready signal'})\n"
                                f"{tail(self.log_path)}", hint=f"see {self.log_path}")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                log.warning("load process said: %s", raw[:200])
                continue
            kind = msg.get("type")
            if kind == "samples":
                self._note_cpu(msg.get("cpu"))
                self.users = int(msg.get("users", 0))
                if not msg.get("final"):  # sent just after a second ends: that second's users
                    self.store.set_users(int(time.time() - 0.5), self.users)
                for b in msg.get("buckets", []):
                    self.store.add(Bucket.from_json(b))
            elif kind == "ready":
                self.ready.set()
            elif kind == "done":
                self.locust_total = int(msg["locust_total"])
                self.collected_total = int(msg["collected_total"])
                if msg.get("llm_total", {}).get("requests"):
                    self.llm_total = {k: int(v) for k, v in msg["llm_total"].items()}
                self.done.set()
            elif kind == "error":
                self.error = str(msg.get("message"))
        self.done.set()

    def _note_cpu(self, cpu: float | None) -> None:
        if cpu is None:
            return
        self.cpu_max = max(self.cpu_max, float(cpu))
        if cpu < SATURATED:
            self._saturated_run = 0
            return
        self.saturated_s += 1
        self._saturated_run += 1
        if self._saturated_run == 3:
            log.warning("a load process has used %.0f%% of a core for 3 seconds: the load may be the bottleneck "
                        "(achieved below offered, token gaps read short); add load workers (load.workers)",
                        cpu * 100)

    def set_t0(self, t0: float) -> None:
        """Tell the load process where second 0 of the plan is."""
        if self.process is not None and self.process.stdin is not None and self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"t0": t0}).encode() + b"\n")
                self.process.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise LoadError(f"cannot reach the load process: {exc}", hint=f"see {self.log_path}") from exc

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the load process to stop and flush; kill it if it does not within ``timeout``."""
        process = self.process
        if process is None:
            return
        if process.poll() is None and process.stdin is not None:
            try:
                process.stdin.write(b"stop\n")
                process.stdin.flush()
                process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        self.done.wait(timeout)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        if self._reader is not None:
            self._reader.join(5)
        if self._log is not None:
            self._log.close()

    def kill(self) -> None:
        """Kill the load process and its workers (its own process group)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(5)
