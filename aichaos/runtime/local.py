"""The local runtime: each stack service is a child process on a loopback port.

Every service runs in its own session (process group), so teardown can reach the processes it
spawns too, and a Ctrl-C in the terminal reaches aichaos, which then stops them in order. Each
service's output goes to ``<run dir>/logs/<service>.log``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aichaos.errors import StackStartError, UsageError
from aichaos.experiment.stack import Service, Stack
from aichaos.interrupts import deferred
from aichaos.logtail import tail
from aichaos.ports import free_port
from aichaos.proxy.backend import ProxyBackend, start_proxy_backend
from aichaos.runtime.base import RunningService, service_environment, substitute
from aichaos.runtime.readiness import wait_ready
from aichaos.runtime.registry import RuntimeKind, RuntimeSetup

log = logging.getLogger(__name__)


def stop_process(process: subprocess.Popen[bytes], grace: float) -> bool:
    """SIGTERM the process's group, wait up to ``grace`` seconds for the leader, then SIGKILL the group.

    Returns True when the leader is gone. (Polling the group with signal 0 would see the leader's
    zombie until it is reaped, so the leader is waited for directly.)
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the leader if it ignored SIGTERM, and anything it left
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        return False
    return True


class LocalKind(RuntimeKind):
    """Services as child processes on this machine: the embedded default, no Docker needed."""

    name = "local"
    summary = "local processes"

    def unsuitable(self, stack: Stack) -> str | None:
        commandless = [n for n, s in stack.services.items() if s.command is None and s.local is None]
        return f"{', '.join(commandless)} has no command" if commandless else None

    def check(self, setup: RuntimeSetup) -> None:
        why = self.unsuitable(setup.stack)
        if why is not None:
            raise UsageError(f"the local runtime runs each service's command, and {why}",
                             hint="give the service a command, or use runtime: docker")

    def open(self, setup: RuntimeSetup) -> LocalRuntime:
        return LocalRuntime(setup.run_dir, setup.stack_dir)


class LocalRuntime:
    name = "local"
    proxy_host = "127.0.0.1"  # everything on loopback

    def __init__(self, run_dir: Path, stack_dir: Path) -> None:
        self.run_dir = run_dir
        self.stack_dir = stack_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.services: dict[str, Service] = {}
        self.logs: dict[str, Path] = {}
        self.launch: dict[str, tuple[Service, int, dict[str, str], dict[str, int] | None]] = {}  # for restarts

    def peer_address(self, name: str, port: int) -> str:
        return f"127.0.0.1:{port}"

    def proxy_listen_address(self) -> str:
        return f"127.0.0.1:{free_port()}"  # not port 0: see aichaos.ports

    def prepare(self, report: Callable[[str], None]) -> dict[str, Any]:
        return {}  # processes share the host's network: nothing to make

    def start_fault_proxy(self, url: str | None) -> ProxyBackend:
        return start_proxy_backend(self.run_dir, url)

    def stack_facts(self) -> tuple[dict[str, Any], str]:
        return {}, ""

    def close_network(self) -> list[str]:
        return []  # processes share the host's network: nothing was made

    def _argv(self, service: Service, port: int, ports: dict[str, int] | None) -> list[str]:
        argv = list(service.local.command if service.local else service.command or [])
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the interpreter aichaos runs in, with the project installed
        return [substitute(a, port, ports=ports) for a in argv]

    def start_service(self, name: str, service: Service, port: int, env: dict[str, str],
                      ports: dict[str, int] | None = None) -> RunningService:
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self._argv(service, port, ports)
        if not argv:
            raise StackStartError(f"service {name!r} has no command to run as a local process",
                                  hint=f"give services.{name}.command, or use runtime: docker")
        pythonpath = os.pathsep.join(p for p in (str(self.stack_dir.parent), os.environ.get("PYTHONPATH")) if p)
        child_env = {**os.environ, "PYTHONPATH": pythonpath,
                     **service_environment(service, port, env, ports=ports, stack_dir=self.stack_dir)}
        cwd = (self.stack_dir / service.workdir) if service.workdir else self.stack_dir
        with open(log_path, "ab") as out, deferred():
            out.write(f"# aichaos: starting {name}: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                process = subprocess.Popen(argv, cwd=cwd, env=child_env, stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
            except OSError as exc:
                raise StackStartError(f"service {name!r} could not start: {argv[0]}: {exc.strerror or exc}",
                                      hint=f"check services.{name}.command in the stack file") from exc
            # recorded before a SIGINT can interrupt us, so teardown always knows about it
            self.processes[name] = process
            self.services[name] = service
            self.logs[name] = log_path
            self.launch[name] = (service, port, env, ports)
        return RunningService(name=name, host="127.0.0.1", port=port, pid=process.pid, log_path=log_path,
                              ports=dict(ports or {}))

    def exit_reason(self, name: str) -> str | None:
        """None while ``name`` runs, else why it is gone ("exited with code 1", …)."""
        if name not in self.processes:
            return "was never started"
        code = self.processes[name].poll()
        if code is None:
            return None
        if code < 0:
            return f"was killed by signal {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def wait_ready(self, running: RunningService, service: Service) -> None:
        name = running.name
        running.ready_after_s = wait_ready(name, running.host, running.port_of(service.ready.port), service.ready,
                                           alive=lambda: self.exit_reason(name),
                                           logs=lambda: tail(self.logs.get(name)))

    def is_alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def kill_service(self, name: str) -> None:
        process = self.processes[name]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)

    def restart_service(self, name: str) -> RunningService:
        """Kill the service (SIGKILL, a crash) and start it again on the same port with the same
        environment; the caller waits for readiness (``wait_ready``)."""
        self.kill_service(name)
        service, port, env, ports = self.launch[name]
        return self.start_service(name, service, port, env, ports)

    def signal_service(self, name: str, signal_name: str) -> None:
        """Send ``signal_name`` (e.g. SIGKILL) to the service's process group and wait for it to go."""
        process = self.processes[name]
        os.killpg(process.pid, getattr(signal, signal_name))
        process.wait(10)

    def stop_service(self, name: str) -> None:
        """SIGTERM, then SIGKILL after 5 s, like ``docker stop``."""
        stop_process(self.processes[name], 5.0)

    def container_of(self, name: str) -> None:
        return None

    def pause_service(self, name: str) -> None:
        """Freeze every process of the service (SIGSTOP to its group), like ``docker pause``."""
        os.killpg(self.processes[name].pid, signal.SIGSTOP)

    def resume_service(self, name: str) -> None:
        try:
            os.killpg(self.processes[name].pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def teardown(self, hurry: bool = False) -> list[str]:
        """Stop every service, dependents first; ``hurry`` (a second Ctrl-C) gives each 0.5 s, not
        its stop_timeout, before SIGKILL."""
        leftovers: list[str] = []
        for name in reversed(list(self.processes)):  # the reverse of start order
            process = self.processes[name]
            grace = min(0.5, self.services[name].stop_timeout) if hurry else self.services[name].stop_timeout
            if not stop_process(process, grace):
                leftovers.append(f"service {name} (pid {process.pid})")
        return leftovers
